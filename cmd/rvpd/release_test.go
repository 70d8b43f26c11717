package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleReleaseStep: memory is given back once after quiet looks in a
// row, only with enough to give, and again only after work resumed or
// every few looks early in a quiet spell.
func TestIdleReleaseStep(t *testing.T) {
	type look struct {
		allocated, spare uint64
		want             bool
	}
	check := func(name string, r *idleRelease, looks []look) {
		t.Helper()
		st := releaseState{armed: true}
		for i, l := range looks {
			if got := r.step(l.allocated, l.spare, &st); got != l.want {
				t.Errorf("%s, look %d (allocated %d, spare %d): release %v, want %v", name, i+1, l.allocated, l.spare, got, l.want)
			}
		}
	}
	check("once a spell", &idleRelease{quiet: 3, calm: 100, least: 1000}, []look{
		{50, 5000, false}, {50, 5000, false}, {50, 5000, true}, // the third quiet look
		{50, 5000, false}, {0, 5000, false}, // once per quiet spell
		{500, 5000, false},                                   // work again
		{50, 500, false}, {50, 500, false}, {50, 500, false}, // quiet, too little to give
		{50, 5000, true},
		{50, 5000, false},
	})
	check("again early in the quiet", &idleRelease{quiet: 2, calm: 100, least: 1000, again: 3, until: 8}, []look{
		{50, 5000, false}, {50, 5000, true}, // look 2: the first
		{50, 0, false}, {50, 0, false}, {50, 5000, true}, // look 5: 3 after
		{50, 0, false}, {50, 0, false}, {50, 5000, true}, // look 8: the last within until
		{50, 5000, false}, {50, 5000, false}, {50, 5000, false}, {50, 5000, false},
		{500, 0, false}, {50, 500, false}, {50, 500, false}, // work, then too little spare for the first
		{50, 500, false}, {50, 500, false}, {50, 5000, true}, // yet again 3 after it, with enough
		{50, 500, false}, {50, 500, false}, {50, 500, false}, // 3 after that, too little
	})
}

// TestIdleReleaseRun: a quiet process gives its memory back within a few
// looks, and run ends with its context.
func TestIdleReleaseRun(t *testing.T) {
	var released atomic.Int32
	r := &idleRelease{log: slog.New(slog.DiscardHandler), every: 5 * time.Millisecond, quiet: 2, calm: 1 << 40, least: 0,
		release: func() { released.Add(1) }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); released.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no release after 10 s of quiet looks")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := released.Load(); n != 1 {
		t.Errorf("released %d times in one quiet spell, want once", n)
	}
}
