package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Progress is how far a rebuild has come.
type Progress struct {
	Projection string `json:"projection"`
	// Applied counts the events applied so far; Seq is the stream
	// sequence reached, Last the one the rebuild ends at.
	Applied uint64        `json:"applied"`
	Seq     uint64        `json:"seq"`
	Last    uint64        `json:"last"`
	Elapsed time.Duration `json:"elapsed"`
	Done    bool          `json:"done,omitempty"`
}

// Rate returns the events applied per second so far.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Applied) / p.Elapsed.Seconds()
}

// rebuildTarget is a projection being rebuilt: its position, and how one
// decoded event is applied to a batch. Events of the types in undecoded
// are applied without being decoded (ev is nil).
type rebuildTarget struct {
	name      string
	pos       *position
	posKy     []byte
	db        *DB
	apply     func(b *pebble.Batch, m Msg, ev events.Event) error
	undecoded map[string]bool
	// first, when set, writes what a projection's first batch holds
	// besides its events (a home projection's key layout).
	first func(b *pebble.Batch) error
	// commit, when set, commits a batch (without sync) in the
	// projection's own way, before the position moves.
	commit func(b *pebble.Batch) error
}

// historyOnly are the facts a home projection keeps nothing of: their
// record is the stream. The rebuild skips decoding them, which are most
// of a busy home server's facts and the largest (message bodies).
// TestHistoryOnlyFacts checks that applying them writes nothing.
var historyOnly = map[string]bool{events.TypeMessageAccepted: true, events.TypeMessageDelivered: true, events.TypeRequestForwarded: true, events.TypeHomeFenced: true}

func homeTarget(h *Home) rebuildTarget {
	// One store per batch: it keeps the next id, and the cached parts of
	// users' state the batch changes, forgotten once it is committed.
	var st *pebbleHome
	return rebuildTarget{name: "home " + h.home, pos: h.pos, posKy: h.key("pos"), db: h.db, undecoded: historyOnly,
		first: func(b *pebble.Batch) error { return b.Set(h.key("format"), []byte(homeFormat), nil) },
		commit: func(b *pebble.Batch) error {
			if st == nil || st.b != b {
				st = &pebbleHome{h: h, r: b, b: b, changed: map[events.User]uint8{}}
			}
			err := h.commit(b, st)
			st = nil
			return err
		},
		apply: func(b *pebble.Batch, m Msg, ev events.Event) error {
			// As Home.ApplyFacts does.
			if ev == nil {
				if home, _, err := events.ParseFactSubject(m.Subject); err != nil || home != h.home {
					return fmt.Errorf("home %s seq %d: %s on subject %s", h.home, m.Seq, m.Type, m.Subject)
				}
				return nil
			}
			f, ok := ev.(events.Fact)
			if !ok {
				return fmt.Errorf("home %s seq %d: %s is not a fact", h.home, m.Seq, m.Type)
			}
			if st == nil || st.b != b {
				st = &pebbleHome{h: h, r: b, b: b, changed: map[events.User]uint8{}}
			}
			if err := applyFact(st, f); err != nil {
				return fmt.Errorf("home %s seq %d (%s): %w", h.home, m.Seq, m.Type, err)
			}
			return nil
		}}
}

// CatchUp applies the home server's facts after the projection's
// position up to last, read and applied as a rebuild does (a home node
// catches up so at start, and after another writer's facts). Nothing
// else may apply to the projection meanwhile. It returns the gap, if the
// stream's retention removed facts after the projection's position
// before it applied them (zero when none): it catches up with what is
// left, and what they made is missing from it; its caller says so.
func (h *Home) CatchUp(ctx context.Context, js jetstream.JetStream, last uint64) (Gap, error) {
	stream := events.FactStream(h.home)
	var gap Gap
	if from := h.pos.get(); last > from {
		var err error
		if gap, err = gapAfter(ctx, js, stream, from); err != nil {
			return Gap{}, err
		}
	}
	return gap, rebuild(ctx, js, stream, events.FactFilter(h.home), last, homeTarget(h), nil, time.Hour)
}

// Gap is a run of a stream's messages that its retention (MaxAge:
// -audit.retention for facts) removed before a projection at From applied
// them: the stream's first message is First, past From+1.
//
// A gap carried over from the single fact stream of older versions has
// LegacyFirst set instead of First, and From 0: the stream begins with
// facts copied from that one (MigrateFacts) after its retention had
// removed facts before its sequence LegacyFirst, which were not copied.
type Gap struct {
	Stream      string
	From, First uint64
	MaxAge      time.Duration
	LegacyFirst uint64
}

// IsZero reports whether there is no gap.
func (g Gap) IsZero() bool { return g.First == 0 && g.LegacyFirst == 0 }

// gapAfter returns the gap between a projection at pos and stream.
func gapAfter(ctx context.Context, js jetstream.JetStream, stream string, pos uint64) (Gap, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return Gap{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Gap{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 { // all removed: the next one will be first
		first = info.State.LastSeq + 1
	}
	if first > pos+1 {
		return Gap{Stream: stream, From: pos, First: first, MaxAge: info.Config.MaxAge}, nil
	}
	if pos == 0 && info.State.Msgs > 0 {
		cut, err := legacyCut(ctx, st)
		if err != nil || cut == 0 {
			return Gap{}, err
		}
		return Gap{Stream: stream, LegacyFirst: cut}, nil
	}
	return Gap{}, nil
}

// legacyCut returns, when the first message of st (a home server's fact
// stream whose sequence 1 is still held) is a fact copied from the
// single fact stream of older versions after that one's retention had
// removed facts before it (HeaderLegacyCut), the sequence there that
// followed them; 0 otherwise.
func legacyCut(ctx context.Context, st jetstream.Stream) (uint64, error) {
	m, err := st.GetMsg(ctx, 1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: read its first message: %w", st.CachedInfo().Config.Name, err)
	}
	v := m.Header.Get(events.HeaderLegacyCut)
	if v == "" {
		return 0, nil
	}
	cut, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stream %s: its first message's %s is %q, not a sequence", st.CachedInfo().Config.Name, events.HeaderLegacyCut, v)
	}
	return cut, nil
}

func directoryTarget(d *Directory) rebuildTarget {
	return rebuildTarget{name: "directory", pos: d.pos, posKy: d.key("pos"), db: d.db,
		first: func(b *pebble.Batch) error { return b.Set(d.key("format"), []byte(directoryFormat), nil) },
		apply: func(b *pebble.Batch, m Msg, ev events.Event) error {
			// As Directory.ApplyBatch does (the rebuilt copy's memory is
			// not kept: only its keys are compared).
			if err := d.apply(b, ev, m.Seq); err != nil {
				return fmt.Errorf("directory seq %d (%s): %w", m.Seq, m.Type, err)
			}
			return nil
		}}
}

// rebuild tuning: messages per decoded chunk, and events per Pebble batch.
const (
	rebuildChunk = 512
	rebuildBatch = 8192
)

// chunk is a run of stream messages, decoded by a worker while the
// applier works on the ones before.
type chunk struct {
	msgs    []Msg
	evs     []events.Event
	err     error
	decoded chan struct{}
}

// rebuild applies to t every message of stream matching filter, from
// t's position+1 up to last. It is Replay made for speed: the stream is
// read from start to end without a server-side filter (a filtered
// consumer makes the server match each message against the stream's
// subjects) and filtered here, the events are decoded by as many
// goroutines as there are CPUs, and applied in order in large batches.
// progress, when set, is called every interval and at the end.
func rebuild(ctx context.Context, js jetstream.JetStream, stream, filter string, last uint64, t rebuildTarget, progress func(Progress), interval time.Duration) error {
	start := time.Now()
	from := t.pos.get()
	if last == 0 || from >= last {
		if progress != nil {
			progress(Progress{Projection: t.name, Seq: from, Last: last, Done: true})
		}
		return nil
	}
	match := subjectMatcher(filter)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	workers := runtime.GOMAXPROCS(0)
	toDecode := make(chan *chunk, workers*8)
	inOrder := make(chan *chunk, workers*16)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range toDecode {
				c.evs = make([]events.Event, len(c.msgs))
				for i, m := range c.msgs {
					if t.undecoded[m.Type] {
						continue
					}
					if c.evs[i], c.err = events.Decode(m.Type, m.Data); c.err != nil {
						c.err = fmt.Errorf("%s seq %d: %w", t.name, m.Seq, c.err)
						break
					}
				}
				close(c.decoded)
			}
		}()
	}
	// The reader: chunks of matching messages, in stream order.
	readErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(inOrder)
		defer close(toDecode)
		c := &chunk{decoded: make(chan struct{})}
		send := func() bool {
			select {
			case toDecode <- c:
			case <-ctx.Done():
				return false
			}
			select {
			case inOrder <- c:
			case <-ctx.Done():
				return false
			}
			c = &chunk{decoded: make(chan struct{})}
			return true
		}
		err := readStream(ctx, js, stream, from+1, last, func(m *nats.Msg, seq uint64) bool {
			if match(m.Subject) {
				c.msgs = append(c.msgs, Msg{Seq: seq, Subject: m.Subject, Type: m.Header.Get(events.HeaderType), Data: m.Data})
			}
			return len(c.msgs) < rebuildChunk || send()
		})
		if err != nil {
			readErr <- err
			return
		}
		if len(c.msgs) > 0 {
			send()
		}
	}()
	// The reader and the decoders are ended and waited for, however the
	// applier returns: one that stops early (a fact it cannot apply)
	// leaves the reader blocked on a full channel until ctx ends.
	defer func() {
		cancel()
		wg.Wait()
	}()

	// The applier.
	p := Progress{Projection: t.name, Seq: from, Last: last}
	report := func(done bool) {
		if progress != nil {
			p.Elapsed, p.Done = time.Since(start), done
			progress(p)
		}
	}
	nextReport := time.Now().Add(interval)
	b := t.db.pdb.NewIndexedBatch()
	inBatch := 0
	if t.first != nil && t.pos.get() == 0 {
		if err := t.first(b); err != nil {
			return err
		}
	}
	commit := func() error {
		if inBatch == 0 {
			return nil
		}
		b.Set(t.posKy, []byte(be64(p.Seq)), nil)
		commitBatch := func(b *pebble.Batch) error { return b.Commit(pebble.NoSync) }
		if t.commit != nil {
			commitBatch = t.commit
		}
		// The next batch is made as large as this one: grown from Pebble's
		// 1 KiB by doubling, each batch of a rebuild (megabytes) was copied
		// a dozen times on its way. Its size is read before the commit,
		// which takes the data of a batch larger than half a memtable.
		size := len(b.Repr())
		if err := commitBatch(b); err != nil {
			return fmt.Errorf("rebuild %s: commit: %w", t.name, err)
		}
		b.Close()
		t.pos.set(p.Seq)
		b, inBatch = t.db.pdb.NewIndexedBatchWithSize(size+size/8), 0
		return nil
	}
	defer func() { b.Close() }()
	for c := range inOrder {
		select {
		case <-c.decoded:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.err != nil {
			return fmt.Errorf("rebuild %s: %w", t.name, c.err)
		}
		for i, m := range c.msgs {
			if m.Seq <= p.Seq {
				continue
			}
			if err := t.apply(b, m, c.evs[i]); err != nil {
				return fmt.Errorf("rebuild: %w", err)
			}
			p.Seq = m.Seq
			p.Applied++
			inBatch++
		}
		if inBatch >= rebuildBatch {
			if err := commit(); err != nil {
				return err
			}
		}
		if progress != nil && time.Now().After(nextReport) {
			report(false)
			nextReport = time.Now().Add(interval)
		}
	}
	select {
	case err := <-readErr:
		return fmt.Errorf("rebuild %s: read %s: %w", t.name, stream, err)
	default:
	}
	// A reader stopped by the context ends without an error, its last
	// chunks unsent: the position must not then jump to last over them.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rebuild %s: stopped at sequence %d of %d: %w", t.name, p.Seq, last, err)
	}
	if p.Seq < last {
		p.Seq = last // the rest did not match the filter
	}
	inBatch++ // the position, at least
	if err := commit(); err != nil {
		return err
	}
	report(true)
	return nil
}

// subjectMatcher returns a function reporting whether a subject matches
// a NATS subject filter ('*' one token, '>' the rest).
func subjectMatcher(filter string) func(string) bool {
	ft := strings.Split(filter, ".")
	if prefix, ok := strings.CutSuffix(filter, ">"); ok && !strings.Contains(filter, "*") {
		return func(s string) bool { return strings.HasPrefix(s, prefix) && len(s) > len(prefix) }
	}
	return func(s string) bool {
		st := strings.Split(s, ".")
		for i, f := range ft {
			switch {
			case f == ">":
				return len(st) > i
			case i >= len(st):
				return false
			case f != "*" && f != st[i]:
				return false
			}
		}
		return len(st) == len(ft)
	}
}
