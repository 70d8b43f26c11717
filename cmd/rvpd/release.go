package main

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The Go runtime keeps the heap's free pages for reuse up to about 1.1
// times its heap goal (twice the live heap with GOGC 100) and gives the
// rest back slowly, so after a burst of work (users signing in again
// after an outage) a process holds far more than its live heap for as
// long as it stays quiet: measured with 10,000 users online after the
// load benchmark, 25 MiB of free heap pages still resident at rest, about
// a third of the growth (docs/performance.md, "Memory per online user,
// fourth pass"). idleRelease gives them back once the process has been
// quiet for a while after work; under steady work it does nothing, as
// the pages are reused.
type idleRelease struct {
	log *slog.Logger
	// every is how often the allocations are looked at; quiet is how
	// many looks in a row must each see under calm bytes allocated;
	// least is the spare heap memory (beyond the live heap) below which
	// nothing is done after work; and up to the until-th look of quiet,
	// the memory is given back again every again looks after the first
	// (0: never).
	every        time.Duration
	quiet        int
	calm, least  uint64
	again, until int
	// release gives the memory back.
	release func()
}

// releaseState is what idleRelease.step has seen: looks in a row under
// calm since the last work, and whether a release is due for the last
// spell of work.
type releaseState struct {
	calmLooks int
	armed     bool
}

// newIdleRelease looks every 2 s, and gives memory back after 12 s with
// under 4 MiB allocated in each 2 s: past the 10 s for which JetStream
// keeps a message block's buffer (8 MB) after its last use. It collects
// twice before: what JetStream lets go of goes to a sync.Pool, whose
// contents are freed at the second collection.
//
// JetStream lets go of the ids of a stream's messages only when its
// window of duplicates has passed them (45 s for requests, 2 min for
// facts), long after the work, and in a quiet process nothing collects
// what that frees for up to two minutes more, nor gives back the pages
// it leaves: so the memory is given back again each minute of quiet
// after the first release, up to three minutes. Not beyond, and not
// whenever free pages gather: a server that is quiet but not idle (lease
// renewals) collects its garbage every few tens of seconds, and the
// runtime keeps the pages that frees for the next cycle; given back each
// time (tried: every 16-20 s in a quiet minute, 40-55 ms each), they
// would be taken back at once.
func newIdleRelease(log *slog.Logger) *idleRelease {
	return &idleRelease{log: log, every: 2 * time.Second, quiet: 6, calm: 4 << 20, least: 16 << 20, again: 30, until: 90,
		release: func() { runtime.GC(); debug.FreeOSMemory() }}
}

// run looks at the allocations every r.every until ctx ends.
func (r *idleRelease) run(ctx context.Context) error {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(samples)
	t := time.NewTicker(r.every)
	defer t.Stop()
	last, st := samples[0].Value.Uint64(), releaseState{armed: true}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		metrics.Read(samples)
		allocs := samples[0].Value.Uint64()
		// What the heap holds beyond its live objects at the last
		// collection: garbage since, room in spans, free pages.
		held := samples[2].Value.Uint64() + samples[3].Value.Uint64() + samples[4].Value.Uint64()
		spare, free := held-min(held, samples[1].Value.Uint64()), samples[4].Value.Uint64()
		if r.step(allocs-last, spare, &st) {
			start := time.Now()
			r.release()
			r.log.Debug("idle: the heap's spare memory given back to the system", "spare", spare, "free", free, "quiet", time.Duration(st.calmLooks)*r.every, "took", time.Since(start))
		}
		last = allocs
	}
}

// step takes one look (allocated since the last, the heap's memory
// beyond its live objects) and says whether to release now. Only after
// r.quiet calm looks in a row: once per spell of work (armed again by a
// look that is not calm) when there is enough to give back, and again
// every r.again looks after the first r.quiet, up to r.until, when there
// still is.
func (r *idleRelease) step(allocated, spare uint64, st *releaseState) bool {
	if allocated >= r.calm {
		*st = releaseState{armed: true}
		return false
	}
	st.calmLooks++
	if st.calmLooks < r.quiet || spare < r.least {
		return false
	}
	// Again: what JetStream has let go of since.
	again := r.again > 0 && st.calmLooks > r.quiet && st.calmLooks <= r.until && (st.calmLooks-r.quiet)%r.again == 0
	if !st.armed && !again {
		return false
	}
	st.armed = false
	return true
}
