package gateway

import (
	"fmt"
	"testing"
	"time"
)

// TestLockoutGrowingDelays: an account and address may fail Free times;
// then each failure makes them wait twice as long, up to MaxDelay, and a
// success clears them.
func TestLockoutGrowingDelays(t *testing.T) {
	l := newLockout(LockoutConfig{Free: 3, BaseDelay: time.Second, MaxDelay: 10 * time.Second})
	now := time.Unix(1_000_000, 0)
	for i := range 3 {
		if w := l.wait("alice", "10.0.0.1", now); w != 0 {
			t.Fatalf("failure %d: waiting %s within the free ones", i, w)
		}
		l.fail("alice", "10.0.0.1", now)
	}
	for _, want := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		if w := l.wait("alice", "10.0.0.1", now); w != want {
			t.Fatalf("wait %s, want %s", w, want)
		}
		now = now.Add(want) // the client waits as told, and fails again
		l.fail("alice", "10.0.0.1", now)
	}
	if w := l.wait("alice", "10.0.0.2", now); w != 0 {
		t.Errorf("another address of the account waits %s", w)
	}
	if w := l.wait("bob", "10.0.0.1", now); w != 0 {
		t.Errorf("another account at the address waits %s", w)
	}
	now = now.Add(10 * time.Second)
	l.succeed("alice", "10.0.0.1", now)
	l.fail("alice", "10.0.0.1", now)
	if w := l.wait("alice", "10.0.0.1", now); w != 0 {
		t.Errorf("after a success the count starts again, yet the account waits %s", w)
	}
}

// TestLockoutNotAgainstTheUser: failures from many addresses (one
// account guessed from a botnet) slow those addresses, never the user's
// known one; failures of many accounts from one address (a NAT shared
// with an attacker) slow new accounts there, never those known there.
func TestLockoutNotAgainstTheUser(t *testing.T) {
	l := newLockout(LockoutConfig{Free: 2, BaseDelay: time.Second, MaxDelay: time.Hour})
	now := time.Unix(1_000_000, 0)
	l.succeed("alice", "192.0.2.10", now) // alice's office
	l.succeed("carol", "198.51.100.1", now)

	for i := range 50 {
		l.fail("alice", fmt.Sprintf("203.0.113.%d", i), now)
	}
	if w := l.wait("alice", "192.0.2.10", now); w != 0 {
		t.Errorf("alice at her known address waits %s after guesses from 50 others", w)
	}
	if w := l.wait("alice", "203.0.113.200", now); w == 0 {
		t.Error("a 51st address guessing alice is not slowed: the account's count (4×Free) was passed long ago")
	}

	for i := range 40 {
		l.fail(fmt.Sprintf("user%d", i), "198.51.100.1", now) // from carol's NAT
	}
	if w := l.wait("carol", "198.51.100.1", now); w != 0 {
		t.Errorf("carol, known behind the NAT, waits %s after 40 accounts were tried from it", w)
	}
	if w := l.wait("dave", "198.51.100.1", now); w == 0 {
		t.Error("a 41st account tried from the address is not slowed (10×Free per address)")
	}
	if w := l.wait("dave", "198.51.100.2", now); w != 0 {
		t.Errorf("dave elsewhere waits %s", w)
	}
	// A known pair is the account and the address, not their letters
	// run together.
	l.succeed("car", "ol198.51.100.1", now)
	if !l.isKnown("car", "ol198.51.100.1", now) || l.isKnown("ca", "rol198.51.100.1", now) || l.isKnown("caro", "l198.51.100.1", now) {
		t.Error("a pair known is not told from pairs of the same letters")
	}
	// Known addresses are forgotten after KnownFor.
	later := now.Add(31 * 24 * time.Hour)
	l.fail("alice", "203.0.113.1", later)
	if w := l.wait("alice", "192.0.2.10", later); w != 0 {
		t.Errorf("a month later alice's old address is unknown, and the account's old count forgotten, yet it waits %s", w)
	}
}

// TestLockoutBounded: a flood of distinct names stays within bounds.
func TestLockoutBounded(t *testing.T) {
	l := newLockout(LockoutConfig{})
	now := time.Unix(1_000_000, 0)
	for i := range maxLockoutEntries + 10 {
		l.fail(fmt.Sprint("u", i), "203.0.113.9", now)
		now = now.Add(time.Millisecond)
	}
	if n := len(l.pairs); n > maxLockoutEntries {
		t.Errorf("%d pairs remembered, bound %d", n, maxLockoutEntries)
	}
	if w := l.wait("somebody", "203.0.113.9", now); w == 0 {
		t.Error("the flooding address is not slowed")
	}
}

// TestLockoutShared: another gateway's notes count as this one's own
// sign-ins: its failures throttle the pair here, its success clears it,
// and a note that comes late never shortens a wait already set.
func TestLockoutShared(t *testing.T) {
	cfg := LockoutConfig{Free: 3, BaseDelay: time.Second, MaxDelay: time.Hour}
	gw1, gw2 := newLockout(cfg), newLockout(cfg)
	now := time.Unix(1_000_000, 0)
	tell := func(s signIn) { gw2.apply(s, now) }
	for range 4 {
		gw1.fail("alice", "10.0.0.1", now)
		tell(signIn{Account: "alice", Addr: "10.0.0.1", At: now.UnixMilli()})
	}
	if w := gw2.wait("alice", "10.0.0.1", now); w != time.Second {
		t.Fatalf("gw2 after gw1's 4 failures (3 free): wait %s, want 1s", w)
	}
	// A note from 3 s ago (another clock) counts from 2 s ago at most
	// (noteSkew), and does not undo the wait the later ones set: 2 s
	// from 2 s ago would be none.
	tell(signIn{Account: "alice", Addr: "10.0.0.1", At: now.Add(-3 * time.Second).UnixMilli()})
	if w := gw2.wait("alice", "10.0.0.1", now); w != time.Second {
		t.Fatalf("after a late fifth failure: wait %s, want 1s still", w)
	}
	// A note from a clock ahead counts from now.
	tell(signIn{Account: "alice", Addr: "10.0.0.1", At: now.Add(time.Hour).UnixMilli()})
	if w := gw2.wait("alice", "10.0.0.1", now); w != 4*time.Second {
		t.Fatalf("after a sixth failure dated an hour ahead: wait %s, want 4s", w)
	}
	// A note of a success from before the last failure (late) clears
	// nothing.
	tell(signIn{Account: "alice", Addr: "10.0.0.1", OK: true, At: now.Add(-time.Second).UnixMilli()})
	if w := gw2.wait("alice", "10.0.0.1", now); w != 4*time.Second {
		t.Fatalf("after a late note of an earlier success: wait %s, want 4s still", w)
	}
	// A note from a day ago (a clock a day behind) counts now, not as
	// a failure long forgotten.
	tell(signIn{Account: "alice", Addr: "10.0.0.1", At: now.Add(-25 * time.Hour).UnixMilli()})
	if w := gw2.wait("alice", "10.0.0.1", now); w != 6*time.Second {
		t.Fatalf("after a seventh failure dated a day back: wait %s, want 6s (8s from 2s ago)", w)
	}
	// alice signs in at gw1 later: her pair is cleared at gw2 too.
	now = now.Add(time.Minute)
	if !gw1.succeed("alice", "10.0.0.1", now) {
		t.Fatal("a sign-in that cleared failures is not told")
	}
	tell(signIn{Account: "alice", Addr: "10.0.0.1", OK: true, At: now.UnixMilli()})
	gw2.fail("alice", "10.0.0.1", now)
	if w := gw2.wait("alice", "10.0.0.1", now); w != 0 {
		t.Fatalf("gw2 after alice's sign-in at gw1 and one failure: wait %s, want none", w)
	}
}

// TestLockoutSucceedTells: a sign-in is told to the other gateways only
// when it changes what they know: the first from an address, one that
// clears failures, and one a day after the last told.
func TestLockoutSucceedTells(t *testing.T) {
	l := newLockout(LockoutConfig{})
	now := time.Unix(1_000_000, 0)
	for _, step := range []struct {
		name string
		do   func()
		want bool
	}{
		{"first sign-in from the address", func() {}, true},
		{"the next, a minute later", func() { now = now.Add(time.Minute) }, false},
		{"after a failure", func() { l.fail("alice", "10.0.0.1", now) }, true},
		{"from another address", func() {}, true},
		{"a day and a second after the last told", func() { now = now.Add(knownRefresh + time.Second) }, true},
		{"signing in every hour for a day", func() {
			for range 23 {
				now = now.Add(time.Hour)
				if l.succeed("alice", "10.0.0.1", now) {
					t.Fatal("an hourly sign-in told within a day of the last told")
				}
			}
			now = now.Add(time.Hour + time.Second)
		}, true},
	} {
		step.do()
		addr := "10.0.0.1"
		if step.name == "from another address" {
			addr = "10.0.0.2"
		}
		if got := l.succeed("alice", addr, now); got != step.want {
			t.Errorf("%s: told %v, want %v", step.name, got, step.want)
		}
	}
}

// TestLockoutFailTells: a failure is told to the other gateways unless
// the account already waits at that address, so that a client going on
// failing while throttled costs the others nothing.
func TestLockoutFailTells(t *testing.T) {
	l := newLockout(LockoutConfig{Free: 2, BaseDelay: time.Minute, MaxDelay: time.Hour})
	now := time.Unix(1_000_000, 0)
	var told []bool
	for range 5 {
		told = append(told, l.fail("alice", "10.0.0.1", now))
	}
	// The third failure makes the pair wait; the fourth and fifth come
	// while it waits.
	if fmt.Sprint(told) != "[true true true false false]" {
		t.Fatalf("told %v", told)
	}
	if !l.fail("alice", "10.0.0.1", now.Add(time.Hour)) {
		t.Error("a failure after the wait is not told")
	}
}

// TestLockoutKnownBounded: past the bound, the pairs told longest ago
// are forgotten first, not every pair at once.
func TestLockoutKnownBounded(t *testing.T) {
	l := newLockout(LockoutConfig{})
	l.maxKnown = 100
	now := time.Unix(1_000_000, 0)
	for i := range 100 {
		l.succeed(fmt.Sprint("u", i), "10.0.0.1", now)
		now = now.Add(time.Hour)
	}
	l.succeed("newcomer", "10.0.0.1", now)
	if n := len(l.known); n > 75 || n < 40 {
		t.Fatalf("%d pairs known after the bound was reached, want about 75 or fewer, not all forgotten", n)
	}
	if !l.isKnown("u99", "10.0.0.1", now) || !l.isKnown("newcomer", "10.0.0.1", now) {
		t.Error("the pairs told last were forgotten")
	}
	if l.isKnown("u0", "10.0.0.1", now) {
		t.Error("the pair told first (100 hours ago) is still known")
	}
}
