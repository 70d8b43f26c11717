package homenode

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// startOtherNode starts a node for home server home beside h's, on h's
// JetStream, with a store of its own; configure (nil: h's directory)
// sets its directory. The test's cleanup stops it.
func startOtherNode(t *testing.T, h *harness, home string, configure func(*Config), logs *logBuffer) *Node {
	t.Helper()
	db, err := projections.Open(filepath.Join(t.TempDir(), "pebble-"+home), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Home: home, JetStream: h.js, Conn: h.nc, DB: db, Directory: h.dir,
		Policy:     Policy{MinLease: time.Second, MinLifetime: time.Second, DeliveryTimeout: 2 * time.Second, MaxCallbackFailures: 2},
		Client:     &rvp.Client{DialTimeout: time.Second, Timeout: 2 * time.Second},
		SweepEvery: 50 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if configure != nil {
		configure(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	// Stopped before its store closes (cleanups run last first).
	t.Cleanup(func() { db.Close() })
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node of %s stopped with %v", home, err)
		}
		if t.Failed() {
			t.Logf("%s's node log (last lines):\n%s", home, logs.tail(200))
		}
	})
	for deadline := time.Now().Add(20 * time.Second); n.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the node of %s did not start: %v", home, n.Ready())
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	return n
}

// count returns how many lines of the log hold all of parts.
func (b *logBuffer) count(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		n += btoi(all)
	}
	return n
}

// until polls cond until it holds, failing the test with what after
// within.
func until(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
}

// chain is ann, of homeA, watched by ben, with nodes for home1 (h, its
// directory given by configure) and homeC (its directory lagC); homeA
// has no node (it is slow).
type chain struct {
	t        *testing.T
	h        *harness
	admin    *directory.Admin
	ann, ben events.User
	c        *Node
	cLogs    *logBuffer
	lagC     *laggingDir
}

func newChain(t *testing.T, configure func(*Config)) *chain {
	h := newHarnessWith(t, configure, "ben")
	ctx := t.Context()
	ch := &chain{t: t, h: h, admin: &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"},
		ann: events.NewUser("example.test", "ann"), ben: events.NewUser("example.test", "ben"), cLogs: &logBuffer{}, lagC: newLaggingDir(t)}
	for _, home := range []string{"homeA", "homeC"} {
		if err := ch.admin.CreateHomeServer(ctx, home, home+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.admin.EnableUser(ctx, directory.UserSpec{User: ch.ann, Home: "homeA"}); err != nil {
		t.Fatal(err)
	}
	ch.c = startOtherNode(t, h, "homeC", ch.lagC.configure, ch.cLogs)
	return ch
}

// moveTo moves ann to home and returns the move's directory sequence.
func (ch *chain) moveTo(home string) uint64 {
	ch.t.Helper()
	if err := ch.admin.MoveUser(ch.t.Context(), ch.ann, home); err != nil {
		ch.t.Fatal(err)
	}
	var seq uint64
	until(ch.t, 10*time.Second, "ann's move to "+home+" not in the directory", func() bool {
		rec, err := ch.h.dir.User(ch.ann)
		if err != nil || rec == nil || rec.Home != home {
			return false
		}
		seq = rec.Move
		return seq != 0
	})
	return seq
}

// sendLate sends homeA's handoff of move seq to home1, with ben's
// subscription to ann's presence in it.
func (ch *chain) sendLate(seq uint64) *events.Handoff {
	ch.t.Helper()
	now := time.Now().UTC()
	late := &events.Handoff{Req: events.Req{ID: handoffID("homeA", ch.ann, seq), At: now, Deadline: now.Add(time.Minute), Gateway: "home:homeA",
		Node: ch.ann, Auth: events.Identity{Scheme: "internal"}, DirPos: seq}, From: "homeA", Move: seq,
		Subs: []events.SubState{{ID: 7, Kind: events.NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/ben", Watcher: ch.ben,
			NodeURL: "http://im.example.test/instmsg/aliases/ann", Lifetime: 3600, Expires: now.Add(time.Hour)}}}
	data, err := events.Encode(late)
	if err != nil {
		ch.t.Fatal(err)
	}
	msg := nats.NewMsg(events.RequestSubject("home1", ch.ann))
	msg.Header.Set(events.HeaderType, late.Type())
	msg.Data = data
	if _, err := ch.h.js.PublishMsg(ch.t.Context(), msg, jetstream.WithMsgID(late.ID)); err != nil {
		ch.t.Fatal(err)
	}
	return late
}

// forwards returns how often home1 and homeC have forwarded late.
func (ch *chain) forwards(late *events.Handoff) (home1, homeC int) {
	const msg = "request for a moved user forwarded"
	return ch.h.logs.count(msg, late.ID), ch.cLogs.count(msg, late.ID)
}

// heldByC reports whether homeC has held late back for its directory.
func (ch *chain) heldByC(late *events.Handoff) bool {
	return ch.cLogs.count("directory behind the move of a handoff", late.ID) > 0
}

// taken waits until homeC has taken late, with ben's subscription.
func (ch *chain) taken(late *events.Handoff) {
	ch.t.Helper()
	until(ch.t, 20*time.Second, "homeA's handoff never taken on homeC", func() bool {
		took, err := ch.c.Projection().Took(ch.ann, "homeA", late.Move)
		return err == nil && took
	})
	if watchers, err := ch.c.Projection().Watchers(ch.ann); err != nil || len(watchers) != 1 {
		ch.t.Errorf("homeC holds %d of ann's watchers' subscriptions (%v), want ben's", len(watchers), err)
	}
}

// TestForwardedHandoffNotBouncedAway: ann, watched by ben, is moved from
// homeA to home1 (directory sequence s1) and on to homeC (s2) while
// homeA's node is slow; homeC's directory projection is behind, at s1.
// home1, which had nothing of hers, hands its empty state to homeC under
// s2. homeA's handoff (of s1) then reaches home1, which forwards it to
// homeC. It kept homeA's directory position (s1): homeC, whose directory
// has ann on home1 still, routed it back to home1 as a request for a user
// of home1's, and home1 forwarded it again under the same message id,
// which JetStream's duplicate window dropped: ben's subscription was lost
// (homeC never heard of it). A forward carries the position of the move
// it forwards under: homeC waits for its directory to reach the move.
func TestForwardedHandoffNotBouncedAway(t *testing.T) {
	ch := newChain(t, nil)
	s1 := ch.moveTo("home1")
	if err := ch.lagC.dir.WaitFor(t.Context(), s1); err != nil {
		t.Fatal(err)
	}
	ch.lagC.stop() // homeC's directory stays at ann's move to home1
	s2 := ch.moveTo("homeC")
	until(t, 10*time.Second, "home1 did not hand ann off", func() bool {
		done, err := ch.h.node.Projection().Departed(ch.ann)
		return err == nil && done == s2
	})

	late := ch.sendLate(s1)
	until(t, 20*time.Second, "homeA's handoff neither bounced nor held", func() bool {
		home1, _ := ch.forwards(late)
		return home1 >= 2 || ch.heldByC(late)
	})
	ch.lagC.follow() // homeC's directory catches up
	ch.taken(late)
}

// TestForwardedHandoffAfterMovesBackAndForth: ann, watched by ben, is
// moved from homeA to home1 (s1), to homeC (s2) and back to home1 (s3)
// while homeA's node is slow, and both home1's and homeC's directory
// projections are behind. homeA's handoff (of s1) comes to home1, its
// directory at s2: forwarded to homeC under s2. homeC, its directory at
// s3, forwards it back to home1 under s3; ann is moved to homeC again
// (s4), and home1, its directory caught up, forwards it to homeC under
// s4. A forward's message id named the request and the home server only:
// the second to homeC was dropped as a duplicate of the first, and ben's
// subscription with it. It names the move too.
func TestForwardedHandoffAfterMovesBackAndForth(t *testing.T) {
	lagB := newLaggingDir(t)
	ch := newChain(t, lagB.configure)
	ctx := t.Context()
	s1 := ch.moveTo("home1")
	s2 := ch.moveTo("homeC")
	if err := lagB.dir.WaitFor(ctx, s2); err != nil {
		t.Fatal(err)
	}
	lagB.stop() // home1's directory stays at ann's move to homeC
	s3 := ch.moveTo("home1")
	if err := ch.lagC.dir.WaitFor(ctx, s3); err != nil {
		t.Fatal(err)
	}
	ch.lagC.stop() // homeC's directory stays at ann's move back to home1

	late := ch.sendLate(s1)
	until(t, 20*time.Second, "homeC did not forward homeA's handoff back to home1", func() bool {
		_, homeC := ch.forwards(late)
		return homeC >= 1
	})
	s4 := ch.moveTo("homeC")
	until(t, 10*time.Second, "home1 did not hand ann off again", func() bool {
		done, err := ch.h.node.Projection().Departed(ch.ann)
		return err == nil && done == s4
	})
	lagB.follow() // home1's directory catches up: the move to homeC again
	until(t, 20*time.Second, "home1 did not forward homeA's handoff again", func() bool {
		home1, _ := ch.forwards(late)
		return home1 >= 2
	})
	ch.lagC.follow()
	ch.taken(late)
}

// TestHandoffAfterDepartureDirectoryBehind: ann is moved from homeA to
// home1 (s1) and on to homeC (s2) while homeA's node is slow and home1's
// directory projection is at s1. home1 hears of s2 from the stream and
// hands her (empty) state off under it. homeA's handoff of s1 then comes
// to home1, whose directory has her on home1 still: it was taken there,
// where she no longer lives, and her departure done, it stayed there: ben's
// subscription never reached homeC. A handoff for a user handed off from
// here under a move the directory has not applied waits for it, and is
// forwarded.
func TestHandoffAfterDepartureDirectoryBehind(t *testing.T) {
	lagB := newLaggingDir(t)
	ch := newChain(t, lagB.configure)
	s1 := ch.moveTo("home1")
	if err := lagB.dir.WaitFor(t.Context(), s1); err != nil {
		t.Fatal(err)
	}
	lagB.stop() // home1's directory stays at ann's move to home1
	s2 := ch.moveTo("homeC")
	until(t, 10*time.Second, "home1 did not hand ann off", func() bool {
		done, err := ch.h.node.Projection().Departed(ch.ann)
		return err == nil && done == s2
	})

	late := ch.sendLate(s1)
	until(t, 20*time.Second, "homeA's handoff neither taken on home1 nor held there", func() bool {
		took, err := ch.h.node.Projection().Took(ch.ann, "homeA", s1)
		return (err == nil && took) || ch.h.logs.count("directory behind the move the user was handed off", late.ID) > 0
	})
	lagB.follow()
	ch.taken(late)
	if took, err := ch.h.node.Projection().Took(ch.ann, "homeA", s1); err != nil || took {
		t.Errorf("homeA's handoff taken on home1 too (%v)", err)
	}
}

// TestHandoffOutlastsMaxDeliver: a handoff taken again later while the
// directory stays behind (TestHandoffAfterDepartureDirectoryBehind) for
// more deliveries than the consumer makes (MaxDeliver, 4 here) is not
// dropped with the state it carries: it is appended anew and, once the
// directory has the move, forwarded to homeC with ben's subscription.
// (Before, the consumer's last delivery dropped it: with the default 20,
// a directory some 25 s behind lost ben's subscription.)
func TestHandoffOutlastsMaxDeliver(t *testing.T) {
	lagB := newLaggingDir(t)
	ch := newChain(t, func(c *Config) { lagB.configure(c); c.MaxDeliver = 4 })
	s1 := ch.moveTo("home1")
	if err := lagB.dir.WaitFor(t.Context(), s1); err != nil {
		t.Fatal(err)
	}
	lagB.stop() // home1's directory stays at ann's move to home1
	s2 := ch.moveTo("homeC")
	until(t, 10*time.Second, "home1 did not hand ann off", func() bool {
		done, err := ch.h.node.Projection().Departed(ch.ann)
		return err == nil && done == s2
	})
	late := ch.sendLate(s1)
	const held = "directory behind the move the user was handed off"
	until(t, 30*time.Second, "homeA's handoff not delivered to home1 more often than MaxDeliver", func() bool {
		return ch.h.logs.count(held, late.ID) > 6
	})
	if n := ch.h.logs.count("appended anew", late.ID); n < 2 {
		t.Errorf("the handoff appended anew %d times in 7 deliveries, want 2 or more", n)
	}
	lagB.follow()
	ch.taken(late)
}
