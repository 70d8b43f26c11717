package directory_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// BenchmarkDeleteHomeServerCheck measures one attempt of DeleteHomeServer
// (what retryFenced makes up to 100 times while an import appends) over
// a directory projection of 100,000 users in 10 IM domains: the home
// server busy hosts one user, the last of the last domain, so the
// attempt is refused after its check, appending nothing.
func BenchmarkDeleteHomeServerCheck(b *testing.B) {
	const domains, perDomain = 10, 10_000
	f := newAdminFixture(b)
	dir := f.directory()
	var evs []events.Event
	evs = append(evs, &events.HomeServerCreated{Name: "home1", Host: "imhome1.example.test", HostsUsers: true},
		&events.HomeServerCreated{Name: "busy", Host: "imbusy.example.test", HostsUsers: true})
	for d := range domains {
		dom := fmt.Sprintf("d%d.test", d)
		evs = append(evs, &events.DomainCreated{Domain: dom, IMHost: "im." + dom})
		for u := range perDomain {
			home := "home1"
			if d == domains-1 && u == perDomain-1 {
				home = "busy"
			}
			evs = append(evs, &events.UserEnabled{User: events.NewUser(dom, fmt.Sprintf("user%05d", u)), Home: home, DisplayName: "A User"})
		}
	}
	for len(evs) > 0 {
		n := min(len(evs), 10_000)
		var msgs []projections.Msg
		for _, ev := range evs[:n] {
			data, err := events.Encode(ev)
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, projections.Msg{Seq: dir.Position() + uint64(len(msgs)) + 1, Type: ev.Type(), Data: data})
		}
		if err := dir.ApplyBatch(msgs); err != nil {
			b.Fatal(err)
		}
		evs = evs[n:]
	}
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "bench"}
	ctx := b.Context()
	for b.Loop() {
		err := a.DeleteHomeServer(ctx, "busy")
		if err == nil || !strings.Contains(err.Error(), "still hosts") {
			b.Fatalf("deleting busy: %v, want a refusal", err)
		}
	}
}
