package projections

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testReader is a streamReader fed by hand: its pulls are counted, its
// clock and timers are the test's.
type testReader struct {
	*streamReader
	pulls  int
	clock  time.Time
	timers []func()
	seen   []uint64
}

func newTestReader(last uint64) *testReader {
	tr := &testReader{clock: time.Unix(1000, 0)}
	tr.streamReader = &streamReader{
		stream: "FACTS", last: last, batch: 4,
		pull: func() error { tr.pulls++; return nil },
		fn:   func(_ *nats.Msg, seq uint64) bool { tr.seen = append(tr.seen, seq); return true },
		now:  func() time.Time { return tr.clock },
		after: func(d time.Duration, f func()) {
			if d <= 0 || d > time.Second {
				panic(fmt.Sprintf("re-pull after %v", d))
			}
			tr.timers = append(tr.timers, f)
		},
		result: make(chan error, 1),
	}
	return tr
}

// deliver feeds a message of stream sequence sseq, delivery dseq.
func (tr *testReader) deliver(sseq, dseq uint64) {
	tr.onMsg(&nats.Msg{Reply: fmt.Sprintf("$JS.ACK.FACTS.rebuild.1.%d.%d.1700000000000000000.0", sseq, dseq)})
}

func (tr *testReader) status(code string, h ...string) {
	m := &nats.Msg{Header: nats.Header{}}
	m.Header.Set("Status", code)
	for i := 0; i+1 < len(h); i += 2 {
		m.Header.Set(h[i], h[i+1])
	}
	tr.onMsg(m)
}

// fire runs the re-pulls the reader asked for.
func (tr *testReader) fire() {
	timers := tr.timers
	tr.timers = nil
	for _, f := range timers {
		f()
	}
}

func (tr *testReader) result() (error, bool) {
	select {
	case err := <-tr.streamReader.result:
		return err, true
	default:
		return nil, false
	}
}

func TestStreamReaderReadsToLast(t *testing.T) {
	tr := newTestReader(9)
	if err := tr.start(); err != nil {
		t.Fatal(err)
	}
	if tr.pulls != 2 {
		t.Fatalf("pull requests at start: %d, want 2", tr.pulls)
	}
	// Sequences 2 and 5 did not match the consumer: the stream
	// sequences skip, the deliveries do not.
	for i, seq := range []uint64{1, 3, 4, 6} {
		tr.deliver(seq, uint64(i+1))
	}
	if tr.pulls != 2 {
		t.Fatalf("pull requests with 4 of 8 outstanding: %d, want 2", tr.pulls)
	}
	tr.deliver(7, 5) // 3 outstanding: less than a batch, one more asked
	if tr.pulls != 3 {
		t.Fatalf("pull requests with 3 of 8 outstanding: %d, want 3", tr.pulls)
	}
	if _, done := tr.result(); done {
		t.Fatal("ended before the last sequence")
	}
	tr.deliver(9, 6)
	err, done := tr.result()
	if !done || err != nil {
		t.Fatalf("after the last sequence: done %v, err %v", done, err)
	}
	if fmt.Sprint(tr.seen) != "[1 3 4 6 7 9]" {
		t.Fatalf("seen %v", tr.seen)
	}
}

func TestStreamReaderLostMessage(t *testing.T) {
	tr := newTestReader(10)
	tr.start()
	tr.deliver(1, 1)
	tr.deliver(3, 3) // delivery 2 never came
	err, done := tr.result()
	if !done || err == nil || !strings.Contains(err.Error(), "message lost after stream sequence 3 (delivery 1, then 3)") {
		t.Fatalf("done %v, err %v", done, err)
	}
	tr.deliver(4, 4) // after the end: ignored
	if len(tr.seen) != 1 {
		t.Fatalf("seen %v after the error", tr.seen)
	}
}

func TestStreamReaderExpiredPull(t *testing.T) {
	tr := newTestReader(10)
	tr.start() // 8 requested
	tr.deliver(1, 1)
	// A pull request expired with 3 of its 4 undelivered: 5 requested,
	// 1 come, 4 outstanding: a batch, so no pull yet.
	tr.status("408", "Nats-Pending-Messages", "3")
	if tr.pulls != 2 {
		t.Fatalf("pulls after the 408: %d, want 2", tr.pulls)
	}
	tr.status("408", "Nats-Pending-Messages", "4") // the other: nothing outstanding
	if tr.pulls != 3 {
		t.Fatalf("pulls after the second 408: %d, want 3", tr.pulls)
	}
	tr.status("100") // a heartbeat changes nothing
	if _, done := tr.result(); done || tr.pulls != 3 {
		t.Fatalf("after a heartbeat: done %v, pulls %d", done, tr.pulls)
	}
}

// TestStreamReaderNoResponders: a 503 (the consumer's interest not yet
// known to this connection's server) is pulled again 20 ms later, and
// given up after 5 s of them without a message between, with an error
// that says so.
func TestStreamReaderNoResponders(t *testing.T) {
	tr := newTestReader(10)
	tr.start()
	tr.status("503")
	tr.status("503")
	if _, done := tr.result(); done {
		t.Fatal("ended at the first 503s")
	}
	if len(tr.timers) != 2 {
		t.Fatalf("re-pulls scheduled: %d, want 2", len(tr.timers))
	}
	tr.fire()
	// Both answered 503, nothing is outstanding: the re-pulls ask for
	// one batch again (the first does; the second finds it asked).
	if tr.pulls != 3 {
		t.Fatalf("pulls after the re-pulls: %d, want 3", tr.pulls)
	}
	// A message came: the 503s after it count from the first of them.
	tr.deliver(1, 1)
	tr.clock = tr.clock.Add(time.Minute)
	tr.status("503")
	tr.clock = tr.clock.Add(4 * time.Second)
	tr.status("503")
	if _, done := tr.result(); done {
		t.Fatal("ended 4 s after the first 503 since the last message (a minute after the first ever)")
	}
	tr.clock = tr.clock.Add(2 * time.Second)
	tr.status("503")
	err, done := tr.result()
	if !done || err == nil || !strings.Contains(err.Error(), "no responders to its pull requests for 5s") {
		t.Fatalf("6 s of 503s: done %v, err %v", done, err)
	}
	// A re-pull due after the end does nothing.
	pulls := tr.pulls
	tr.fire()
	if tr.pulls != pulls {
		t.Fatalf("pulled after the end: %d, was %d", tr.pulls, pulls)
	}
}

func TestStreamReaderOtherStatus(t *testing.T) {
	tr := newTestReader(10)
	tr.start()
	tr.status("409", "Description", "Consumer Deleted")
	err, done := tr.result()
	if !done || err == nil || !strings.Contains(err.Error(), "409 Consumer Deleted") {
		t.Fatalf("done %v, err %v", done, err)
	}
}

// TestLastOf: the last message on any of the subjects, 0 for none, the
// stream's last for no subject.
func TestLastOf(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "L", Subjects: []string{"l.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"l.a.1", "l.b.1", "l.a.2", "l.c.1"} {
		if _, err := js.Publish(ctx, subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		subjects []string
		want     uint64
	}{{nil, 4}, {[]string{"l.a.*"}, 3}, {[]string{"l.b.>", "l.a.1"}, 2}, {[]string{"l.z.*"}, 0}, {[]string{"l.c.1", "l.z.1"}, 4}} {
		if got, err := LastOf(ctx, js, "L", time.Time{}, c.subjects...); err != nil || got != c.want {
			t.Errorf("LastOf(%v) = %d, %v; want %d", c.subjects, got, err, c.want)
		}
		if got, err := LastOf(ctx, js, "L", time.Now().Add(time.Hour), c.subjects...); err != nil || got != 0 {
			t.Errorf("LastOf(%v) since an hour ahead = %d, %v; want 0", c.subjects, got, err)
		}
	}
}
