package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleReleaseStep: memory is given back once after quiet looks in a
// row, only with enough to give, and again only after work resumed.
func TestIdleReleaseStep(t *testing.T) {
	r := &idleRelease{quiet: 3, calm: 100, least: 1000}
	calmLooks, armed := 0, true
	type look struct {
		allocated, spare uint64
		want             bool
	}
	for i, l := range []look{
		{50, 5000, false}, {50, 5000, false}, {50, 5000, true}, // the third quiet look
		{50, 5000, false}, {0, 5000, false}, // once per quiet spell
		{500, 5000, false},                                   // work again
		{50, 500, false}, {50, 500, false}, {50, 500, false}, // quiet, too little to give
		{50, 5000, true},
		{50, 5000, false},
	} {
		if got := r.step(l.allocated, l.spare, &calmLooks, &armed); got != l.want {
			t.Errorf("look %d (allocated %d, spare %d): release %v, want %v", i+1, l.allocated, l.spare, got, l.want)
		}
	}
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
