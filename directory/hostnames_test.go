package directory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/rvp"
)

// TestCreateDomainHostNames: the host names of an IM domain are kept as
// requests name them: lower-case, without the trailing dot of a DNS name
// written in full (im.example.test.), which no Host header carries. Kept
// as given, a domain created with one was acknowledged and unreachable
// by that name, and another domain could claim the same host without
// the dot. A name no request can carry (a space, a '/', a letter outside
// ASCII, for which clients send the punycode form) is refused with what
// to give instead.
func TestCreateDomainHostNames(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := f.directory()
	f.follow(dir)
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a"}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "Example.Test.", IMHost: "IM.Example.Test.", EmailDomains: []string{"Mail.Example.Test."}, Hosts: []string{"GW.Example.Test."}}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"example.test", "im.example.test", "mail.example.test", "gw.example.test", "GW.example.test:443"} {
		if dom, err := dir.DomainByHost(h); err != nil || dom == nil || dom.Domain != "example.test" {
			t.Errorf("host %s reaches %+v (%v), want example.test", h, dom, err)
		}
	}
	if dom, _ := dir.Domain("example.test"); dom == nil || dom.IMHost != "im.example.test" {
		t.Errorf("example.test: %+v, want its IM host im.example.test", dom)
	}
	err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "other.test", IMHost: "im.other.test", Hosts: []string{"gw.example.test."}})
	if err == nil || !strings.Contains(err.Error(), "already reaches") {
		t.Errorf("another domain claiming gw.example.test.: %v, want it refused", err)
	}
	for _, bad := range []directory.DomainSpec{
		{Domain: "bücher.test", IMHost: "im.bücher.test"},
		{Domain: "bad.test", IMHost: "im bad.test"},
		{Domain: "bad.test", IMHost: "im.bad.test", Hosts: []string{"gw.bad.test/x"}},
		{Domain: "bad.test", IMHost: "im.bad.test", EmailDomains: []string{"alice@bad.test"}},
		{Domain: ".", IMHost: "im.bad.test"},
	} {
		err := a.CreateDomain(ctx, bad)
		if err == nil {
			t.Errorf("%+v: created", bad)
			continue
		}
		t.Logf("%+v: %v", bad, err)
	}
	if err := a.CreateHomeServer(ctx, "home2", "ImHome2.Example.Test.", "", true); err != nil {
		t.Fatal(err)
	}
	if hs, err := dir.HomeServerByHost("imhome2.example.test"); err != nil || hs == nil {
		t.Errorf("home2 is not found by its host imhome2.example.test: %+v %v", hs, err)
	}
	if err := a.CreateHomeServer(ctx, "home3", "imhome3 .example.test", "", true); err == nil {
		t.Errorf("a home server with a space in its host name was created")
	}
}

// TestHostNamesAsTheGatewayReadsThem: a host name is kept in the form the
// gateway gives a Host header (rvp.NormalizeHost) before it looks it up,
// or refused. Kept as given, im.example.test:80 was stored with its port
// and never found (the gateway drops port 80 from im.example.test:80),
// and a name NormalizeHost refuses (a '!', a port that is no number, an
// IPv6 address with no closing bracket) was created, every request to it
// answered 400.
func TestHostNamesAsTheGatewayReadsThem(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := f.directory()
	f.follow(dir)
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a"}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "IM.Example.Test:80",
		Hosts: []string{"GW.Example.Test.:8080", "[::1]:8443", "[FE80::1]"}}); err != nil {
		t.Fatal(err)
	}
	for _, sent := range []string{"im.example.test:80", "IM.example.test", "gw.example.test:8080", "[::1]:8443", "[fe80::1]:80"} {
		h, err := rvp.NormalizeHost(sent)
		if err != nil {
			t.Fatalf("Host %s: %v", sent, err)
		}
		if dom, err := dir.DomainByHost(h); err != nil || dom == nil || dom.Domain != "example.test" {
			t.Errorf("Host %s (looked up as %s) reaches %+v (%v), want example.test", sent, h, dom, err)
		}
	}
	if dom, _ := dir.Domain("example.test"); dom == nil || dom.IMHost != "im.example.test" {
		t.Errorf("example.test: %+v, want its IM host im.example.test (port 80 is no port)", dom)
	}
	for _, bad := range []string{"im!bad.test", "im.bad.test:http", "[::1", "[example.test]", "im.bad.test:123456", "a:b:c"} {
		err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "bad.test", IMHost: "im.bad.test", Hosts: []string{bad}})
		if err == nil {
			t.Errorf("host %q: created, though no Host header naming it is taken", bad)
			if err := a.DeleteDomain(ctx, "bad.test"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !strings.Contains(err.Error(), bad) {
			t.Errorf("host %q refused without naming it: %v", bad, err)
		}
	}
	if err := a.CreateHomeServer(ctx, "home2", "ImHome2.Example.Test:80", "", true); err != nil {
		t.Fatal(err)
	}
	if hs, err := dir.HomeServerByHost("imhome2.example.test"); err != nil || hs == nil {
		t.Errorf("home2 is not found by its host imhome2.example.test: %+v %v", hs, err)
	}
}
