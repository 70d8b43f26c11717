package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readStream calls fn with every message of stream from sequence from
// up to last, in order, and its stream sequence, until fn returns false,
// last is reached, or ctx ends. fn runs on one goroutine (the
// subscription's); it may block, which holds the reading back.
//
// It reads through an ephemeral pull consumer without acknowledgements
// (in memory, one replica, gone a minute after it is left) with pull
// requests of its own on a core subscription, two outstanding: the
// ordered consumer of nats.go, which the rebuild used before, cost about
// 25% more CPU a message (BenchmarkReadStore and BenchmarkReadPull on the
// load benchmark's facts: 5.6-6.0 µs against 4.4 µs, server and client
// together) and read half as fast. A message lost on the way (the
// consumer's delivery sequence skips) is an error.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, from, last uint64, fn func(m *nats.Msg, seq uint64) bool) error {
	if from > last {
		return nil
	}
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Description:       "rebuild",
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("create a consumer of %s: %w", stream, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		js.DeleteConsumer(dctx, stream, name)
	}()
	const batch = 4096
	pullReq := []byte(fmt.Sprintf(`{"batch":%d,"expires":%d}`, batch, int64(5*time.Second)))
	pullSubject := "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + name
	nc := js.Conn()
	inbox := nats.NewInbox()
	r := &streamReader{
		stream: stream,
		last:   last,
		batch:  batch,
		pull:   func() error { return nc.PublishRequest(pullSubject, inbox, pullReq) },
		fn:     fn,
		now:    time.Now,
		after:  func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		result: make(chan error, 1),
	}
	sub, err := nc.Subscribe(inbox, r.onMsg)
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	sub.SetPendingLimits(-1, -1)
	defer func() {
		sub.Unsubscribe()
		r.stop()
	}()
	if err := r.start(); err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	select {
	case err := <-r.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// streamReader is readStream's state: the pull requests it keeps
// outstanding and what has come of them. onMsg runs on the
// subscription's goroutine; mu keeps the rest (a re-pull after a 503,
// the stop) out while it does.
type streamReader struct {
	stream string
	last   uint64
	batch  int
	pull   func() error // sends a pull request for batch messages
	fn     func(m *nats.Msg, seq uint64) bool
	now    func() time.Time
	after  func(d time.Duration, f func())
	result chan error // one error, or nil at the end

	mu        sync.Mutex
	stopped   bool
	requested int
	got       int
	dseq      uint64
	// noResponders is when a pull request was first answered 503 since
	// the last message came.
	noResponders time.Time
}

// start sends the first two pull requests.
func (r *streamReader) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.pullOne(), r.pullOne())
}

func (r *streamReader) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

func (r *streamReader) finish(err error) {
	r.stopped = true
	r.result <- err
}

func (r *streamReader) pullOne() error {
	r.requested += r.batch
	return r.pull()
}

// repull keeps a batch requested beyond what has come.
func (r *streamReader) repull() {
	for r.requested-r.got < r.batch {
		if err := r.pullOne(); err != nil {
			r.finish(fmt.Errorf("read %s: %w", r.stream, err))
			return
		}
	}
}

func (r *streamReader) onMsg(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if m.Reply == "" {
		// A status: a pull request expired (408: pull again for what it
		// did not deliver), or the consumer is gone.
		switch status := m.Header.Get("Status"); status {
		case "408":
			n, _ := strconv.Atoi(m.Header.Get("Nats-Pending-Messages"))
			r.requested -= n
		case "100":
			return
		case "503":
			// No responders: a consumer just made on another server of a
			// cluster, whose interest in its pull requests has not
			// reached this connection's server yet (a rebuild for verify
			// failed so right after a NATS server came back). Pull again
			// shortly, for a while.
			r.requested -= r.batch
			if r.noResponders.IsZero() {
				r.noResponders = r.now()
			} else if r.now().Sub(r.noResponders) > 5*time.Second {
				r.finish(fmt.Errorf("read %s: no responders to its pull requests for 5s", r.stream))
				return
			}
			r.after(20*time.Millisecond, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				if !r.stopped {
					r.repull()
				}
			})
			return
		default:
			r.finish(fmt.Errorf("read %s: %s %s", r.stream, status, m.Header.Get("Description")))
			return
		}
	} else {
		sseq, d, ok := ackSequences(m.Reply)
		if !ok || d != r.dseq+1 {
			r.finish(fmt.Errorf("read %s: message lost after stream sequence %d (delivery %d, then %d)", r.stream, sseq, r.dseq, d))
			return
		}
		r.dseq = d
		r.got++
		r.noResponders = time.Time{} // answered: the 5 s count again from the next 503
		if sseq > r.last || !r.fn(m, sseq) || sseq == r.last {
			r.finish(nil)
			return
		}
	}
	r.repull()
}

// ackSequences returns the stream and delivery sequences in the reply
// subject of a message a consumer delivers: $JS.ACK.<stream>.<consumer>.
// <delivered>.<stream seq>.<delivery seq>.<time>.<pending> (with a domain
// and an account hash after $JS.ACK on newer servers: the sequences are
// counted from the end).
func ackSequences(reply string) (sseq, dseq uint64, ok bool) {
	var dots [4]int
	n := 0
	for i := len(reply) - 1; i >= 0 && n < 4; i-- {
		if reply[i] == '.' {
			dots[n] = i
			n++
		}
	}
	if n < 4 {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(reply[dots[3]+1:dots[2]], 10, 64)
	d, err2 := strconv.ParseUint(reply[dots[2]+1:dots[1]], 10, 64)
	return s, d, err1 == nil && err2 == nil
}

// Fetch returns the messages of the batch fetch gets (an ordered
// consumer's FetchNoWait or Fetch) and the batch's error; while a fetch
// finds no responder and brings nothing, it is made again, for up to
// wait. Each fetch of an ordered consumer makes the consumer afresh
// (nats.go v1.55), and one just made is not known yet on every server of
// a cluster: its interest crosses the routes after it is made, and a pull
// request sent at once is answered "no responders" now and then.
func Fetch(ctx context.Context, wait time.Duration, fetch func() (jetstream.MessageBatch, error)) ([]jetstream.Msg, error) {
	deadline := time.Now().Add(wait)
	for {
		var msgs []jetstream.Msg
		batch, err := fetch()
		if err == nil {
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			err = batch.Error()
		}
		if len(msgs) > 0 || !errors.Is(err, nats.ErrNoResponders) || !time.Now().Before(deadline) {
			return msgs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FromLeader makes st, a handle of the caller's alone (just fetched with
// Stream), read messages from the stream's leader rather than by direct
// get, which any replica may answer: a follower subscribes to direct
// gets once 90% synchronized (nats-server), and one behind (catching up
// after a partition or a restart) answers "not found" for what it has
// not applied yet, or an older last message of a subject. nats.go reads
// the flag from the handle's cached info at each get.
func FromLeader(st jetstream.Stream) jetstream.Stream {
	if info := st.CachedInfo(); info != nil {
		info.Config.AllowDirect = false
	}
	return st
}

// LastOf returns the sequence of the last message of stream on any of
// subjects (wildcards allowed; none: any) stored at or after since (zero:
// any time), as the stream's leader has it; 0 when there is none. A reader that must read to the end reads up to it: the
// count of a consumer's pending messages does not tell where the end is
// when the consumer is on a replica behind, which has none of the last
// ones (an audit so ended short, saying nothing).
func LastOf(ctx context.Context, js jetstream.JetStream, stream string, since time.Time, subjects ...string) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	if len(subjects) == 0 {
		s := st.CachedInfo().State // the leader's answer
		if s.LastTime.Before(since) {
			return 0, nil
		}
		return s.LastSeq, nil
	}
	st = FromLeader(st)
	var last uint64
	for _, s := range subjects {
		m, err := st.GetLastMsgForSubject(ctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("stream %s: the last message on %s: %w", stream, s, err)
		}
		if !m.Time.Before(since) { // an older one: every one before it is too
			last = max(last, m.Sequence)
		}
	}
	return last, nil
}
