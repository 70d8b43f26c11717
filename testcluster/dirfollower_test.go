package testcluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// TestDirectoryFollowerConsumerServerPaused pauses (SIGSTOP) the NATS
// server that holds a directory projection's consumer (the R1 ordered
// consumer projections.Follow reads through), its connection on
// another server, and appends a directory change: the projection should
// apply it within 8 s (the missing heartbeats noticed after 2 s, a new
// consumer made on a server that answers). It applied it 12 to 20 s
// later or more: nats.go's ordered consumer makes its new consumer with
// a 10 s wait for the answer, then again after 1, 2, 4, 8 s; a request
// made while the meta leader still counts the paused server as a peer
// goes unanswered. Seen as TestClusterChaos's seed 6 move failing "the
// change was made (... recorded at directory sequence 24), but this
// node's directory has not applied it yet", and in
// TestAdminChangeThroughPausedServer once in two runs.
func TestDirectoryFollowerConsumerServerPaused(t *testing.T) {
	LongTest(t)
	t.Skip("defect: a directory projection whose R1 ordered consumer's server is paused (SIGSTOP) or killed applies nothing for 12-20 s or more: nats.go's ordered consumer re-creates it with a 10 s wait per attempt and a backoff of 1, 2, 4, 8 s (projections/follow.go); found by TestClusterChaos (seed 6) and helper-84")
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home2"}, NATS: &NATSClusterOptions{Processes: true}})
	// Both home servers serve before anything is paused (a home node
	// still making its request consumer would fail on the pause).
	for _, a := range []string{"alice", "bob"} {
		must(t, a+" signs in", c.Client(t, a).Login(3600), 200)
	}
	ctx := context.Background()
	st, err := c.JS.Stream(ctx, events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() map[string]string {
		out := map[string]string{}
		for ci := range st.ListConsumers(ctx).Info() {
			if ci.Cluster != nil {
				out[ci.Name] = ci.Cluster.Leader
			}
		}
		return out
	}
	before := consumers()
	_, dir := c.directory("probe")
	var held string
	Eventually(t, 10*time.Second, func() error {
		for name, on := range consumers() {
			if _, ok := before[name]; !ok {
				held = on
				return nil
			}
		}
		return errNoNewConsumer
	})
	s := c.NATS.Server(held)
	if on := c.NATS.ServerOf("probe-directory"); on == s {
		t.Skipf("the probe's connection is on %s, which holds its consumer too", s.Name)
	}
	if slices.Contains([]*NATSServer{c.NATS.ServerOf("admin"), c.NATS.StreamLeader(c.JS, events.StreamDirectory)}, s) {
		t.Skipf("%s holds the probe's consumer and the admin's connection or the stream's leadership", s.Name)
	}
	s.Pause()
	defer s.Resume()
	paused := time.Now()
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.Admin.MoveUser(mctx, events.NewUser(c.Domain, "alice"), "home2"); err != nil {
		t.Fatalf("alice moved to home2: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	err = dir.WaitFor(wctx, last)
	took := time.Since(paused)
	if err != nil || took > 8*time.Second {
		t.Errorf("the probe's directory, its consumer's server %s paused, applied sequence %d %v after the pause (want at most 8 s): %v", s.Name, last, took.Round(10*time.Millisecond), err)
	}
	t.Logf("the probe's directory applied sequence %d %v after %s, its consumer's server, was paused", last, took.Round(10*time.Millisecond), s.Name)
}

var errNoNewConsumer = errorString("the probe's consumer not listed yet")

type errorString string

func (e errorString) Error() string { return string(e) }
