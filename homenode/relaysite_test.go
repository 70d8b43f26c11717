package homenode

import (
	"log/slog"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestRelayOneDomainIgnoresSiteLabel: in a deployment of one JetStream
// domain (a node without -site) every home server is of this deployment,
// whatever site its directory entry names (rvpd dev creates home1 at
// "dev"; rvpctl home create -site takes any name). A relay to it goes to
// the relaying goroutine, which appends it until it is stored (through a
// stream leader's election), not published once as to another site,
// where a failure is left to the site watch that such a node does not
// run: the watchers of the README's node2 example, on home1, lost
// presence whenever that one publish failed.
func TestRelayOneDomainIgnoresSiteLabel(t *testing.T) {
	nc, js := natstest.Connect(t, natstest.Start(t))
	ctx := t.Context()
	if err := projections.EnsureStreams(ctx, js, projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	db, dir := followDirectory(t, js)
	key, _ := directory.NewKeyring(make([]byte, directory.KeySize))
	admin := &directory.Admin{JetStream: js, Directory: dir, Actor: "test", Keyring: key}
	for _, h := range []struct{ name, site string }{{"home1", ""}, {"home2", "dev"}} {
		if err := admin.CreateHomeServer(ctx, h.name, h.name+".example.test", h.site, true); err != nil {
			t.Fatal(err)
		}
	}
	until(t, 10*time.Second, "home2 never reached the directory projection", func() bool {
		hs, _ := dir.HomeServer("home2")
		return hs != nil
	})
	n, err := New(Config{Home: "home1", JetStream: js, Conn: nc, DB: db, Directory: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	ann := events.NewUser("example.test", "ann")
	n.relay(relayOut{home: "home2", ev: &events.Relay{Req: events.Req{ID: "relay-1", At: now, Deadline: now.Add(time.Minute), Node: ann}}})
	if len(n.relays) != 1 {
		t.Errorf("a relay to home2 (its entry labelled site dev, this node of no site) was not queued for the relaying goroutine: %d queued", len(n.relays))
	}
}
