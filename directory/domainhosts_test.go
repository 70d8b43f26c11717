package directory_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestSetDomainHosts: an existing IM domain (one with users too) is
// given more host names and e-mail domains and loses some: the new ones
// reach it, the removed ones reach nothing, and its name and IM host
// reach it whatever the lists say. A name another domain has, the
// domain's name or IM host removed, a name no request can carry, a name
// it does not have removed, and a domain that does not exist are
// refused, changing nothing.
func TestSetDomainHosts(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	dir := a.Directory
	if err := a.EnableUser(ctx, directory.UserSpec{User: events.NewUser("example.test", "alice"), Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "other.test", IMHost: "im.other.test", Hosts: []string{"gw.other.test"}}); err != nil {
		t.Fatal(err)
	}
	reaches := func(host, want string) {
		t.Helper()
		dom, err := dir.DomainByHost(host)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if dom != nil {
			got = dom.Domain
		}
		if got != want {
			t.Errorf("host %s reaches %q, want %q", host, got, want)
		}
	}

	dom, err := a.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "Example.Test.", AddHosts: []string{"GW7.Example.Test.", "im2.example.test"},
		AddEmailDomains: []string{"corp.example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dom.Hosts, []string{"gw7.example.test", "im2.example.test"}) || !slices.Equal(dom.EmailDomains, []string{"example.test", "corp.example.test"}) {
		t.Errorf("after adding: hosts %v, e-mail domains %v", dom.Hosts, dom.EmailDomains)
	}
	if ev, ok := f.lastEvent(events.DomainSubject("example.test")).(*events.DomainHostsSet); !ok || ev.Actor != "a" {
		t.Errorf("the domain's last event: %#v, want a domain.hosts by a", ev)
	}
	reaches("gw7.example.test", "example.test")
	reaches("im2.example.test:80", "example.test")
	reaches("corp.example.test", "example.test")

	if _, err := a.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "example.test", RemoveHosts: []string{"im2.example.test"},
		RemoveEmailDomains: []string{"example.test"}}); err != nil {
		t.Fatal(err)
	}
	reaches("im2.example.test", "")
	reaches("gw7.example.test", "example.test")
	reaches("example.test", "example.test") // its name, though no longer an e-mail domain
	reaches("im.example.test", "example.test")

	if err := a.SetDomainHosts(ctx, "example.test", []string{"im3.example.test"}, nil); err != nil {
		t.Fatal(err)
	}
	reaches("gw7.example.test", "")
	reaches("corp.example.test", "")
	reaches("im3.example.test", "example.test")
	reaches("example.test", "example.test")

	// Its IM host needs no listing: added, nothing changes.
	if dom, err := a.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"im.example.test"}}); err != nil ||
		!slices.Equal(dom.Hosts, []string{"im3.example.test"}) {
		t.Errorf("adding the IM host: %+v, %v; want the hosts left as they were", dom, err)
	}

	before := f.lastEvent(events.DomainSubject("example.test"))
	for _, bad := range []struct {
		what string
		spec directory.DomainHostsSpec
		want string
	}{
		{"another domain's host", directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"gw.other.test"}}, "already reaches IM domain other.test"},
		{"another domain's IM host as an e-mail domain", directory.DomainHostsSpec{Domain: "example.test", AddEmailDomains: []string{"IM.other.test."}}, "already reaches IM domain other.test"},
		{"another domain's name", directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"other.test"}}, "already reaches IM domain other.test"},
		{"the IM host removed", directory.DomainHostsSpec{Domain: "example.test", RemoveHosts: []string{"im.example.test"}}, "cannot be removed"},
		{"the domain's name removed", directory.DomainHostsSpec{Domain: "example.test", RemoveHosts: []string{"Example.Test"}}, "cannot be removed"},
		{"a host it does not have removed", directory.DomainHostsSpec{Domain: "example.test", RemoveHosts: []string{"gw7.example.test"}}, "not a host name of IM domain example.test"},
		{"a space", directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"gw8 .example.test"}}, "a host name has letters"},
		{"a user's address", directory.DomainHostsSpec{Domain: "example.test", AddEmailDomains: []string{"alice@example.test"}}, "a host name has letters"},
		{"not ASCII", directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"bücher.example.test"}}, "ASCII"},
	} {
		_, err := a.ChangeDomainHosts(ctx, bad.spec)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want refused (%q)", bad.what, err, bad.want)
		}
	}
	if err := a.SetDomainHosts(ctx, "nosuch.test", []string{"gw.nosuch.test"}, nil); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("the hosts of a domain that does not exist: %v, want ErrNotFound", err)
	}
	if after := f.lastEvent(events.DomainSubject("example.test")); after.(events.DirectoryEvent).Metadata().At != before.(events.DirectoryEvent).Metadata().At {
		t.Errorf("a refused change was recorded: %s", events.Describe(after))
	}
	reaches("gw.other.test", "other.test")
	reaches("im.other.test", "other.test")
	reaches("im3.example.test", "example.test")
}

// TestSetDomainHostsFenced: an administrator creates an IM domain with a
// host name while another, on a node whose projection has not that yet,
// gives an existing domain the same name: the second is refused, as two
// creations are (TestCreateDomainsSharingAHost), so that no host reaches
// two domains.
func TestSetDomainHostsFenced(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b := f.twoAdmins()
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	errB := f.lagging(ctx, a, b,
		func() error {
			return a.CreateDomain(ctx, directory.DomainSpec{Domain: "one.test", IMHost: "im.one.test", Hosts: []string{"im.shared.test"}})
		},
		func() error { return b.SetDomainHosts(ctx, "example.test", []string{"im.shared.test"}, nil) })
	if errB == nil {
		t.Fatalf("example.test was given im.shared.test, which one.test already has")
	}
	if !strings.Contains(errB.Error(), "already reaches") && !strings.Contains(errB.Error(), "changed while") {
		t.Errorf("the second change failed otherwise than as a conflict: %v", errB)
	}
	if dom, _ := a.Directory.DomainByHost("im.shared.test"); dom == nil || dom.Domain != "one.test" {
		t.Errorf("im.shared.test reaches %+v, want one.test", dom)
	}
	if dom, _ := a.Directory.Domain("example.test"); dom == nil || len(dom.Hosts) != 0 {
		t.Errorf("example.test: %+v, want no hosts", dom)
	}
}

// TestDomainHostsService: through the directory service, an
// organisation administrator and a domain administrator of the domain
// change its host names; a domain administrator of another domain is
// refused, as is one claiming another domain's host.
func TestDomainHostsService(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	f := newServiceFixture(t, ctx)
	if err := f.admin.CreateDomain(ctx, directory.DomainSpec{Domain: "other.test", IMHost: "im.other.test"}); err != nil {
		t.Fatal(err)
	}
	for name, dom := range map[string]string{"exops": "example.test", "otherops": "other.test"} {
		v, err := directory.NewAdminVerifier(name + "-pw")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.admin.CreateAdmin(ctx, name, events.RoleDomain, []string{dom}, v); err != nil {
			t.Fatal(err)
		}
	}
	client := func(name string) *directory.Client {
		return &directory.Client{Conn: f.conn, Name: name, Password: name + "-pw"}
	}
	root := f.client()
	dom, err := root.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"gw7.example.test"}})
	if err != nil || !slices.Equal(dom.Hosts, []string{"gw7.example.test"}) {
		t.Fatalf("root adding gw7.example.test: %+v, %v", dom, err)
	}
	dom, err = client("exops").ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "Example.Test", AddHosts: []string{"gw8.example.test"}, RemoveHosts: []string{"gw7.example.test"}})
	if err != nil || !slices.Equal(dom.Hosts, []string{"gw8.example.test"}) {
		t.Fatalf("example.test's domain administrator: %+v, %v", dom, err)
	}
	if _, err := client("otherops").ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "example.test", RemoveHosts: []string{"gw8.example.test"}}); err == nil ||
		!strings.Contains(err.Error(), "may not domain.hosts in IM domain example.test") {
		t.Errorf("other.test's domain administrator changing example.test: %v, want refused", err)
	}
	if _, err := root.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "example.test", AddHosts: []string{"im.other.test"}}); err == nil ||
		!strings.Contains(err.Error(), "already reaches IM domain other.test") {
		t.Errorf("claiming other.test's IM host for example.test: %v, want refused", err)
	}
	// A domain administrator adds names under its domain only: one no
	// domain holds yet (a partner organisation's domain, another
	// domain's host) would make its addresses ours.
	for _, spec := range []directory.DomainHostsSpec{
		{Domain: "example.test", AddHosts: []string{"im.other.test"}},
		{Domain: "example.test", AddHosts: []string{"partner.example"}},
		{Domain: "example.test", AddEmailDomains: []string{"partner.example"}},
		{Domain: "example.test", AddHosts: []string{"gw9.example.test", "notexample.test"}},
	} {
		var derr *directory.Error
		if _, err := client("exops").ChangeDomainHosts(ctx, spec); !errors.As(err, &derr) || derr.Code != directory.CodeForbidden ||
			!strings.Contains(err.Error(), "under IM domain example.test only") {
			t.Errorf("example.test's domain administrator adding %v: %v, want refused 403", slices.Concat(spec.AddHosts, spec.AddEmailDomains), err)
		}
	}

	if dom, err := root.Domain(ctx, "example.test"); err != nil || !slices.Equal(dom.Hosts, []string{"gw8.example.test"}) {
		t.Errorf("example.test: %+v, %v; want its hosts gw8.example.test", dom, err)
	}
}

// TestChangeDomainHostsOfAnOlderVersion: an IM domain created before host
// names were kept as requests name them (8281c91: a name written in
// full, with its trailing dot, or in capitals was kept as given) has its
// names removed by the form rvpctl gives them in: rvpctl domain hosts is
// how such a name, which no request carries, is put right.
func TestChangeDomainHostsOfAnOlderVersion(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	old := &events.DomainCreated{Meta: events.Meta{At: time.Now().UTC(), Actor: "a"}, Domain: "old.test", IMHost: "im.old.test",
		EmailDomains: []string{"old.test", "Corp.Old.Test"}, Hosts: []string{"gw.old.test.", "GW2.Old.Test"}}
	data, err := events.Encode(old)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(old.DirSubject())
	msg.Header.Set(events.HeaderType, old.Type())
	msg.Data = data
	ack, err := f.js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Directory.WaitFor(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	dom, err := a.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "old.test", RemoveHosts: []string{"gw.old.test", "gw2.old.test"},
		AddHosts: []string{"gw.old.test", "GW2.OLD.TEST."}, RemoveEmailDomains: []string{"corp.old.test"}})
	if err != nil {
		t.Fatalf("removing the names of a domain created by an older version as rvpctl gives them: %v", err)
	}
	if !slices.Equal(dom.Hosts, []string{"gw.old.test", "gw2.old.test"}) || !slices.Equal(dom.EmailDomains, []string{"old.test"}) {
		t.Errorf("hosts %q, e-mail domains %q; want [gw.old.test gw2.old.test] and [old.test]", dom.Hosts, dom.EmailDomains)
	}
	for host, want := range map[string]bool{"gw.old.test": true, "gw2.old.test": true, "corp.old.test": false} {
		if got, err := a.Directory.DomainByHost(host); err != nil || (got != nil) != want {
			t.Errorf("host %s reaches %+v (%v), want a domain: %v", host, got, err, want)
		}
	}
}
