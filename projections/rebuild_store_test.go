package projections

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// The benchmarks of this file read a real store: RVP_BENCH_STORE names
// the nats/ folder of an rvpd data directory (bin/rvpload -work DIR
// leaves them in DIR/rvpd-default/nats), served from a copy by an
// embedded server over TCP, as a home node reads it. They report the
// facts of home1 per second and the CPU time of the process (server and
// client together) per fact, the figure a loaded machine moves least.
//
//	RVP_BENCH_STORE=/tmp/load/rvpd-default/nats go test -run '^$' -bench Store -benchtime 3x ./projections

func storeJetStream(b *testing.B) (jetstream.JetStream, uint64) {
	b.Helper()
	dir := os.Getenv("RVP_BENCH_STORE")
	if dir == "" {
		b.Skip("RVP_BENCH_STORE names no NATS store")
	}
	tmp := b.TempDir()
	if out, err := exec.Command("cp", "-a", dir, filepath.Join(tmp, "nats")).CombinedOutput(); err != nil {
		b.Fatalf("copy %s: %v %s", dir, err, out)
	}
	ns := natstest.Start(b, natstest.Listen(), natstest.StoreDir(filepath.Join(tmp, "nats")), natstest.ReadyWithin(30*time.Second))
	_, js := natstest.Connect(b, ns)
	st, err := js.Stream(context.Background(), events.FactStream("home1"))
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return js, info.State.LastSeq
}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureFacts runs f b.N times, each over facts facts, and reports the
// rate and the CPU time per fact.
func measureFacts(b *testing.B, facts uint64, f func()) {
	cpu0 := cpuTime()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(facts)*float64(b.N)/b.Elapsed().Seconds(), "facts/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(facts)/float64(b.N), "cpu-ns/fact")
}

// BenchmarkRebuildStore rebuilds home1's projection from the store's
// facts into a scratch store, as rvpctl verify does.
func BenchmarkRebuildStore(b *testing.B) {
	js, last := storeJetStream(b)
	measureFacts(b, last, func() { rebuildHome1(b, js, last, "", Options{InMemory: true, Scratch: true}) })
}

// rebuildHome1 rebuilds home1's projection up to last into a new store
// in dir opened with o.
func rebuildHome1(b *testing.B, js jetstream.JetStream, last uint64, dir string, o Options) {
	db, err := Open(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	h, err := OpenHome(db, "home1")
	if err != nil {
		b.Fatal(err)
	}
	if err := rebuild(b.Context(), js, events.FactStream("home1"), events.FactFilter("home1"), last, homeTarget(h), nil, time.Second); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReadStore reads home1's facts and nothing more: through
// nats.go's ordered consumer (what the rebuild read through before) and
// through readStream.
func BenchmarkReadStore(b *testing.B) {
	js, last := storeJetStream(b)
	stream := events.FactStream("home1")
	b.Run("ordered", func(b *testing.B) {
		measureFacts(b, last, func() {
			cons, err := js.OrderedConsumer(b.Context(), stream, jetstream.OrderedConsumerConfig{})
			if err != nil {
				b.Fatal(err)
			}
			it, err := cons.Messages(jetstream.PullMaxMessages(4096))
			if err != nil {
				b.Fatal(err)
			}
			defer it.Stop()
			for {
				m, err := it.Next()
				if err != nil {
					b.Fatal(err)
				}
				md, err := m.Metadata()
				if err != nil {
					b.Fatal(err)
				}
				_ = m.Headers().Get(events.HeaderType)
				if md.Sequence.Stream == last {
					return
				}
			}
		})
	})
	b.Run("pull", func(b *testing.B) {
		measureFacts(b, last, func() {
			n := 0
			err := readStream(b.Context(), js, stream, 1, last, func(m *nats.Msg, _ uint64) bool {
				_ = m.Header.Get(events.HeaderType)
				n++
				return true
			})
			if err != nil || uint64(n) != last {
				b.Fatalf("read %d of %d: %v", n, last, err)
			}
		})
	})
}

// BenchmarkRebuildLiveStore rebuilds home1's projection from the store's
// facts into a projection on disk with the live settings (write-ahead
// log), as a node does whose projection is outdated or deleted, with
// memtables of the default size and of the size before it (8 MiB).
func BenchmarkRebuildLiveStore(b *testing.B) {
	js, last := storeJetStream(b)
	for _, mt := range []int64{4 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("memtable=%dMiB", mt>>20), func(b *testing.B) {
			measureFacts(b, last, func() { rebuildHome1(b, js, last, b.TempDir(), Options{MemTableSize: mt}) })
		})
	}
}
