package testcluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestAdminChangeThroughPausedServer pauses (SIGSTOP) the NATS server an
// administrator's connection is on (neither the directory stream's
// leader nor the server of the directory projection's follower), as a
// frozen virtual machine would, and moves a user (Admin.MoveUser: what
// the directory service does for rvpctl user move). The connection
// notices the silence by its pings (natsclient.PingInterval) and moves
// to another server; the request lost in the frozen one is asked again,
// and the move is recorded within 15 s. Before, nats.go waited for the lost
// request's answer as long as the change's context let it: the move
// failed with "context deadline exceeded" at its deadline (20 s here,
// the directory service's 25 s; TestClusterChaos's 15 s moves failed
// once or twice a run so).
func TestAdminChangeThroughPausedServer(t *testing.T) {
	LongTest(t)
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home2"}, NATS: &NATSClusterOptions{Processes: true}})
	// Both home servers serve before anything is paused (a home node
	// still making its request consumer would fail on the pause).
	for _, a := range []string{"alice", "bob"} {
		must(t, a+" signs in", c.Client(t, a).Login(3600), 200)
	}
	var target *NATSServer
	Eventually(t, 30*time.Second, func() error {
		busy := []*NATSServer{c.NATS.ServerOf("admin-directory"), c.NATS.StreamLeader(c.JS, events.StreamDirectory)}
		if slices.Contains(busy, nil) {
			return fmt.Errorf("the directory follower's server and the directory stream's leader: %v", busy)
		}
		for _, s := range c.NATS.Servers {
			if !slices.Contains(busy, s) {
				target = s
				return nil
			}
		}
		return fmt.Errorf("no server but %v", busy)
	})
	urls := []string{target.URL()}
	for _, s := range c.NATS.Servers {
		if s != target {
			urls = append(urls, s.URL())
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append(natsclient.Liveness(), nats.Name("paused-admin"), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.NATS.ServerOf("paused-admin"); s != target {
		t.Fatalf("the administrator's connection is on %v, not %s", s, target.Name)
	}
	adm := &directory.Admin{JetStream: js, Directory: c.Admin.Directory, Keyring: c.Keyring, Actor: "paused-admin"}
	u := events.NewUser(c.Domain, "alice")

	target.Pause()
	defer target.Resume()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = adm.MoveUser(ctx, u, "home2")
	took := time.Since(start)
	// The test's own connection (c.JS) may be on the paused server too.
	target.Resume()
	// The change is recorded in time; the administrator's directory
	// projection may apply it late, when its follower's consumer was on
	// the server paused (TestDirectoryFollowerConsumerServerPaused): then
	// the error says the change was made.
	if err != nil && !strings.Contains(err.Error(), "the change was made") {
		t.Fatalf("alice's move to home2, %s (the administrator's server) paused: %v after %v", target.Name, err, took.Round(10*time.Millisecond))
	}
	st, serr := c.JS.Stream(context.Background(), events.StreamDirectory)
	if serr != nil {
		t.Fatal(serr)
	}
	// Read until the move is there: a direct get may be answered by any
	// replica, the server just resumed among them, behind until it has
	// caught up (CI read user.password.v1 so once, the move recorded).
	var m *jetstream.RawStreamMsg
	Eventually(t, 10*time.Second, func() error {
		var err error
		if m, err = st.GetLastMsgForSubject(context.Background(), events.UserSubject(u)); err != nil {
			return err
		}
		if typ := m.Header.Get(events.HeaderType); typ != (&events.UserMoved{}).Type() {
			return fmt.Errorf("alice's last directory event is %s, not her move", typ)
		}
		return nil
	})
	if d := m.Time.Sub(start); d > 15*time.Second {
		t.Errorf("alice's move to home2, %s (the administrator's server) paused, recorded %v after, want at most 15 s", target.Name, d.Round(10*time.Millisecond))
	}
	t.Logf("alice's move to home2 recorded %v after %s (the administrator's server) was paused; MoveUser returned after %v: %v",
		m.Time.Sub(start).Round(10*time.Millisecond), target.Name, took.Round(10*time.Millisecond), err)
}
