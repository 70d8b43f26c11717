package projections

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// applyDirectory applies directory events to dir after its position.
func applyDirectory(tb testing.TB, dir *Directory, evs ...events.Event) {
	tb.Helper()
	var msgs []Msg
	for i, ev := range evs {
		data, err := events.Encode(ev)
		if err != nil {
			tb.Fatal(err)
		}
		msgs = append(msgs, Msg{Seq: dir.Position() + uint64(i) + 1, Type: ev.Type(), Data: data})
	}
	if err := dir.ApplyBatch(msgs); err != nil {
		tb.Fatal(err)
	}
}

// TestOurHost: a host is ours under an IM domain's name, IM host, e-mail
// domain or host, at a home server's or router's host (any port, case,
// trailing dot), or under Internal; a name under an IM domain's that the
// peer table names is a subsidiary's, our servers' hosts and Internal
// names never are. What the directory says is kept as it changes (hosts
// set anew, a home server, router or domain deleted), in memory and as
// reopened from Pebble.
func TestOurHost(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	applyDirectory(t, dir,
		&events.DomainCreated{Domain: "example.test", IMHost: "im.example.test", EmailDomains: []string{"Staff.Example.NET."}, Hosts: []string{"gw.example.org:8080", "10.0.0.5"}},
		&events.DomainCreated{Domain: "b.example.test", IMHost: "im.b.example.test"},
		&events.HomeServerCreated{Name: "home1", Host: "IMHOME1.servers.test:81", HostsUsers: true},
		&events.HomeServerCreated{Name: "home2", Host: "127.0.0.1:8081", HostsUsers: true},
		&events.RouterCreated{Name: "router1", Domain: "example.test", Host: "rvp.servers.test"},
	)
	own := OwnNames{Internal: []string{".Corp.Example."}, Peered: func(host string) bool {
		return strings.HasSuffix(strings.ToLower(events.Hostname(host)), "partner.example.test") || strings.HasSuffix(host, "lab.corp.example")
	}}
	check := func(when string, want map[string]string) {
		t.Helper()
		for _, d := range andReopened(t, db, dir) {
			for host, w := range want {
				got, err := d.dir.OurHost(host, own)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(got.What, w) || (w == "") != (got.What == "") || (got.What != "" && !strings.Contains(got.Fix, "-")) {
					t.Errorf("%s, %s: %s is ours as %q (fix %q), want %q", when, d.name, host, got.What, got.Fix, w)
				}
			}
		}
	}
	check("created", map[string]string{
		"wiki.example.test":               "under example.test, a name of our IM domain example.test",
		"WIKI.Example.Test.:8080":         "our IM domain example.test",
		"x.im.example.test":               "under im.example.test",
		"im.b.example.test":               "under im.b.example.test, a name of our IM domain b.example.test", // the nearer name
		"wiki.b.example.test":             "under b.example.test, a name of our IM domain b.example.test",
		"intranet.staff.example.net":      "under staff.example.net",
		"gw.example.org":                  "under gw.example.org",
		"x.gw.example.org:443":            "under gw.example.org",
		"imhome1.servers.test":            "home server home1",
		"imhome1.servers.test.:9":         "home server home1",
		"rvp.servers.test:8080":           "router router1",
		"wiki.corp.example":               "-federation.internal",
		"corp.example":                    "-federation.internal",
		"lab.corp.example":                "-federation.internal", // peered, but internal
		"partner.example.test":            "",                     // a subsidiary
		"im.partner.example.test":         "",
		"im.other.test":                   "",
		"notexample.test":                 "",
		"servers.test":                    "",
		"x.imhome1.servers.test":          "", // under a server's host: not its host
		"example.net":                     "",
		"notcorp.example":                 "",
		"10.0.0.5":                        "", // an address: the guards'
		"127.0.0.1:8081":                  "",
		"[::1]:80":                        "",
		"test":                            "",
		"":                                "",
		"wiki.example.test.partner.other": "",
	})
	applyDirectory(t, dir,
		&events.DomainHostsSet{Domain: "example.test", EmailDomains: []string{"mail.example.net"}},
		&events.HomeServerDeleted{Name: "home1"},
		&events.RouterDeleted{Name: "router1"},
		&events.DomainDeleted{Domain: "b.example.test"},
	)
	check("changed", map[string]string{
		"wiki.example.test":          "our IM domain example.test",
		"intranet.staff.example.net": "",
		"x.mail.example.net":         "under mail.example.net",
		"gw.example.org":             "",
		"imhome1.servers.test":       "",
		"rvp.servers.test":           "",
		"wiki.b.example.test":        "under example.test, a name of our IM domain example.test",
	})
}

// BenchmarkOurHost: what the gateway's check of another organisation's
// principal and the router's of a lookup cost with many IM domains, home
// servers and routers: a look in the names index for each label, not a
// read of every record.
func BenchmarkOurHost(b *testing.B) {
	db, err := Open("", Options{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	dir, err := OpenDirectory(db)
	if err != nil {
		b.Fatal(err)
	}
	var evs []events.Event
	for i := range 2000 {
		d := fmt.Sprintf("d%d.example", i)
		evs = append(evs, &events.DomainCreated{Domain: d, IMHost: "im." + d, EmailDomains: []string{"mail." + d}, Hosts: []string{"gw." + d + ":8080"}})
	}
	for i := range 500 {
		evs = append(evs, &events.HomeServerCreated{Name: fmt.Sprintf("home%d", i), Host: fmt.Sprintf("imhome%d.servers.example:81", i), HostsUsers: true})
		evs = append(evs, &events.RouterCreated{Name: fmt.Sprintf("router%d", i), Domain: "d1.example", Host: fmt.Sprintf("rvp%d.servers.example", i)})
	}
	applyDirectory(b, dir, evs...)
	own := OwnNames{Internal: []string{"corp.example", "intranet.example"}, Peered: func(string) bool { return false }}
	for _, host := range []string{"im.partner.other.test", "wiki.d1999.example", "imhome499.servers.example"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dir.OurHost(host, own); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
