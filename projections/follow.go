package projections

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Msg is a stream message handed to a projection.
type Msg struct {
	Seq     uint64
	Subject string
	Type    string // Rvp-Type header
	Data    []byte
	Time    time.Time
}

// Applier is a projection the follow loop feeds.
type Applier interface {
	// Position returns the stream sequence of the last message applied.
	Position() uint64
	// ApplyBatch applies msgs (in stream order) and the new position in one
	// batch; messages at or below the position are skipped.
	ApplyBatch(msgs []Msg) error
	// WaitFor blocks until the position reaches seq or ctx ends.
	WaitFor(ctx context.Context, seq uint64) error
}

// position tracks a projection's stream position and wakes those waiting
// for it.
type position struct {
	mu   sync.Mutex
	seq  uint64
	wake chan struct{} // closed and replaced whenever seq advances
}

func newPosition(seq uint64) *position { return &position{seq: seq, wake: make(chan struct{})} }

func (p *position) get() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

func (p *position) set(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq > p.seq {
		p.seq = seq
		close(p.wake)
		p.wake = make(chan struct{})
	}
}

// reset sets the position to seq, back as well as forward (a projection
// deleted to be rebuilt), and wakes those waiting, who look again.
func (p *position) reset(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq = seq
	close(p.wake)
	p.wake = make(chan struct{})
}

// changed returns a channel closed when the position next advances.
func (p *position) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.wake
}

// waitFor blocks until the position reaches seq or ctx ends.
func (p *position) waitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		cur, wake := p.seq, p.wake
		p.mu.Unlock()
		if cur >= seq {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("wait for projection position %d (at %d): %w", seq, cur, context.Cause(ctx))
		}
	}
}

// FollowConfig configures Follow.
type FollowConfig struct {
	Stream string
	Filter string
	// MaxBatch bounds the messages applied in one Pebble batch. Default 256.
	MaxBatch int
	// Last, when set, is the last sequence applied: messages after it are
	// not (a rebuild up to a position).
	Last   uint64
	Logger *slog.Logger
}

// Follow feeds a projection from a stream, from its position+1 on, until
// ctx ends; it returns nil then. It reads through an R1 consumer of its
// own that acknowledges nothing, so it keeps no acknowledgement state in
// JetStream: the projection's position is the only cursor. Messages that
// arrive together are applied in one batch.
//
// It outlives NATS trouble: when its consumer cannot be made or is lost
// (the stream's leader being elected, the server it lived on gone or
// hung, the connection moving to another server, no meta leader for a
// while), it makes another from the position on, again and again, until
// ctx ends. Only a message the projection cannot apply stops it, with an
// error.
func Follow(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, a Applier) error {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The consumers given up are deleted in the background (their server
	// may not answer); Follow waits for those deletions when it returns.
	var deleting sync.WaitGroup
	defer deleting.Wait()
	wait, createWait := firstRetryWait, firstCreateWait
	for failures := 0; ; failures++ {
		began := time.Now()
		made, err, readErr := followOnce(ctx, js, cfg, a, log, createWait, &deleting)
		if err != nil || ctx.Err() != nil {
			return err
		}
		if !made {
			// Perhaps it can be made given more time to answer.
			createWait = min(2*createWait, maxCreateWait)
		} else {
			createWait = firstCreateWait
			if time.Since(began) > steadyAfter {
				// The consumer worked a while: this is a new trouble.
				failures, wait = 0, firstRetryWait
			}
		}
		level := slog.LevelDebug
		if failures == 0 || failures%20 == 0 {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "following a stream failed; following it again from the projection's position", "stream", cfg.Stream, "filter", cfg.Filter,
			"position", a.Position(), "err", readErr, "failures", failures+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// Pull requests of the consumers that follow streams expire soon and ask
// for heartbeats often. On a cluster a pull request can be lost without
// an error (sent before the interest of a consumer just made has reached
// the server the client is connected to, or to a server that died or
// hangs), and nats.go notices only when two heartbeats are missing: with
// its defaults (30 s requests, 15 s heartbeats) a projection of a fresh
// three-server cluster once stood still for the 10 s a test waited.
//
// A consumer is made with a short wait for the answer: the server chosen
// to hold an R1 consumer may be one that hangs (SIGSTOP, a stalled disk)
// while the meta leader still counts it as a peer, and its answer never
// comes. Another is asked for soon after, on a server picked again (the
// hung one, which has missed the meta group's last entry, no longer
// preferred). The wait doubles while no consumer can be made, up to
// maxCreateWait, for a cluster merely slow to answer. nats.go's ordered
// consumer, which Follow read through before, waited 10 s for each
// answer and backed off 1, 2, 4, 8 s between: a projection stood still
// 12 to 20 s when its consumer's server hung.
const (
	pullExpiry      = 5 * time.Second
	pullHeartbeat   = time.Second
	firstCreateWait = 2 * time.Second
	maxCreateWait   = 10 * time.Second
	firstRetryWait  = 50 * time.Millisecond
	maxRetryWait    = 2 * time.Second
	deleteWait      = 5 * time.Second
	// steadyAfter is how long a consumer must have worked for its loss
	// to be a new trouble, followed again quickly and logged again.
	steadyAfter = 10 * time.Second
	// consumerIdle is how long a consumer given up lives on if it could
	// not be deleted (its server hung, or the create's answer lost).
	consumerIdle = time.Minute
)

// errGap is a message delivered out of the consumer's order: one before
// it was lost (sent while the connection moved, say).
var errGap = errors.New("a message was lost on the way: the consumer's delivery sequence jumped")

// followOnce follows through one consumer until ctx ends (nil, nil), the
// projection cannot apply a batch (err), or the consumer cannot be made
// or fails (readErr). made is whether the consumer was made.
//
// The consumer is checked as nats.go's ordered consumer checks its own:
// each message must be the one after the last (consumer sequences 1, 2,
// 3, ...), heartbeats must come, and the connection must not move (a
// message sent to it meanwhile is lost, and only the next would show
// the gap). Any of these failing, or any error reading, ends it; Follow
// makes another from the projection's position.
func followOnce(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, a Applier, log *slog.Logger, createWait time.Duration, deleting *sync.WaitGroup) (made bool, err, readErr error) {
	// Listened for before the consumer is made: a move from then on may
	// have lost a message.
	moved := js.Conn().StatusChanged(nats.CONNECTED)
	defer js.Conn().RemoveStatusListener(moved)

	cc := jetstream.ConsumerConfig{
		Name:              "follow_" + rand.Text(),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     cfg.Filter,
		InactiveThreshold: consumerIdle,
		Replicas:          1,
		MemoryStorage:     true,
	}
	if pos := a.Position(); pos > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = pos + 1
	}
	// The consumer is deleted when given up, made or not: a create whose
	// answer did not come may have made it all the same.
	defer func() {
		if ctx.Err() != nil {
			return // Follow ends: the consumer goes when idle
		}
		deleting.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, deleteWait)
			defer cancel()
			if err := js.DeleteConsumer(dctx, cfg.Stream, cc.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				log.Debug("delete a consumer given up; it goes when idle", "stream", cfg.Stream, "consumer", cc.Name, "idle", consumerIdle, "err", err)
			}
		})
	}()
	cctx, cancel := context.WithTimeout(ctx, createWait)
	cons, err := js.CreateConsumer(cctx, cfg.Stream, cc)
	cancel()
	if err != nil {
		return false, nil, fmt.Errorf("follow %s (%s): create consumer (waited %v): %w", cfg.Stream, cfg.Filter, createWait, err)
	}
	log.Debug("following through a new consumer", "stream", cfg.Stream, "filter", cfg.Filter, "consumer", cc.Name, "from", cc.OptStartSeq)
	it, err := cons.Messages(jetstream.PullMaxMessages(cfg.MaxBatch), jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return false, nil, fmt.Errorf("follow %s (%s): %w", cfg.Stream, cfg.Filter, err)
	}

	// The reader hands messages over a channel so that the applier can
	// batch whatever has arrived without blocking.
	msgs := make(chan Msg, cfg.MaxBatch*2)
	readErrs := make(chan error, 1)
	rctx, rcancel := context.WithCancel(ctx)
	untilStopped := jetstream.NextContext(rctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		var delivered uint64
		for {
			m, err := it.Next(untilStopped)
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) && rctx.Err() == nil {
					readErrs <- err
				}
				return
			}
			md, err := m.Metadata()
			if err != nil {
				readErrs <- fmt.Errorf("message metadata: %w", err)
				return
			}
			if md.Sequence.Consumer != delivered+1 {
				readErrs <- fmt.Errorf("%w (from %d to %d, at stream sequence %d)", errGap, delivered, md.Sequence.Consumer, md.Sequence.Stream)
				return
			}
			delivered = md.Sequence.Consumer
			msg := Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Type: m.Headers().Get(events.HeaderType), Data: m.Data(), Time: md.Timestamp}
			select {
			case msgs <- msg:
			case <-rctx.Done():
				return
			}
		}
	})
	stop := func() { rcancel(); it.Stop(); wg.Wait() }

	batch := make([]Msg, 0, cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			stop()
			return true, nil, nil
		case <-moved:
			stop()
			return true, nil, fmt.Errorf("follow %s (%s): the NATS connection reconnected; a message may have been lost meanwhile", cfg.Stream, cfg.Filter)
		case m, ok := <-msgs:
			if !ok {
				stop()
				select {
				case err := <-readErrs:
					return true, nil, fmt.Errorf("follow %s (%s): %w", cfg.Stream, cfg.Filter, err)
				default:
					return true, nil, fmt.Errorf("follow %s (%s): the consumer stopped", cfg.Stream, cfg.Filter)
				}
			}
			batch = append(batch, m)
		}
	drain:
		for len(batch) < cfg.MaxBatch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if cfg.Last > 0 {
			for len(batch) > 0 && batch[len(batch)-1].Seq > cfg.Last {
				batch = batch[:len(batch)-1]
			}
			if len(batch) == 0 {
				continue
			}
		}
		if err := a.ApplyBatch(batch); err != nil {
			stop()
			return true, fmt.Errorf("follow %s (%s): apply at seq %d: %w", cfg.Stream, cfg.Filter, batch[0].Seq, err), nil
		}
		log.Debug("applied", "stream", cfg.Stream, "filter", cfg.Filter, "count", len(batch), "seq", batch[len(batch)-1].Seq)
	}
}

// Replay applies every message of the stream matching filter with a
// sequence up to last to a, then returns. It is how a projection is rebuilt
// from zero for comparison with a live one.
func Replay(ctx context.Context, js jetstream.JetStream, stream, filter string, last uint64, a Applier) error {
	if last == 0 || a.Position() >= last {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Follow(ctx, js, FollowConfig{Stream: stream, Filter: filter, Last: last}, a) }()
	waited := make(chan error, 1)
	go func() { waited <- a.WaitFor(ctx, last) }()
	select {
	case err := <-errc:
		if err == nil {
			err = errors.New("follow stopped early")
		}
		cancel()
		<-waited
		return fmt.Errorf("replay %s: %w", stream, err)
	case err := <-waited:
		cancel()
		if ferr := <-errc; err == nil {
			err = ferr
		}
		return err
	}
}

// WhileFollowing follows cfg's stream into a (as Follow), waits until a
// has applied every message the stream held when it was called, runs f
// (whose own appends a applies as they come), then stops following. The
// filter must match every message of the stream (its last sequence is
// waited for). It is how a process reads a stream up to date before it
// starts, and how a bootstrap writes through a projection it then drops.
//
// A projection whose position is past the stream's end was written from
// another stream (a NATS store restored from an older backup, or made
// afresh, under the same data directory): following from its position
// would skip the stream's messages under the sequences it has passed.
// It is reset and rebuilt from the stream when it can be (a Resetter),
// and refused otherwise.
func WhileFollowing(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, a Applier, f func() error) (err error) {
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	last := st.CachedInfo().State.LastSeq
	if pos := a.Position(); pos > last {
		r, ok := a.(Resetter)
		if !ok {
			return fmt.Errorf("projection of stream %s is at sequence %d, past the stream's end (%d): it was written from another stream, and must be rebuilt from this one", cfg.Stream, pos, last)
		}
		if cfg.Logger != nil {
			cfg.Logger.Warn("projection past the end of its stream, written from another one; rebuilding it from the stream",
				"stream", cfg.Stream, "position", pos, "stream last", last)
		}
		if err := r.Reset(); err != nil {
			return fmt.Errorf("reset the projection of stream %s (at %d, the stream ends at %d): %w", cfg.Stream, pos, last, err)
		}
	} else if v, ok := a.(Versioned); ok {
		if old, err := v.Outdated(); err != nil {
			return fmt.Errorf("projection of stream %s: %w", cfg.Stream, err)
		} else if r, ok := a.(Resetter); old && ok {
			if cfg.Logger != nil {
				cfg.Logger.Info("projection written by an older version; rebuilding it from the stream",
					"stream", cfg.Stream, "position", pos)
			}
			if err := r.Reset(); err != nil {
				return fmt.Errorf("reset the projection of stream %s, written by an older version: %w", cfg.Stream, err)
			}
		}
	}
	fctx, stop := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() { followed <- Follow(fctx, js, cfg, a) }()
	defer func() {
		stop()
		if ferr := <-followed; err == nil {
			err = ferr
		}
	}()
	if err := a.WaitFor(ctx, last); err != nil {
		return err
	}
	return f()
}

// Resetter is a projection that can be deleted to be rebuilt from its
// stream (Home, Directory). Nothing may follow or read it meanwhile.
type Resetter interface {
	Reset() error
}

// Versioned is a projection that knows whether an older version, with
// another layout or other rules of applying, wrote it: WhileFollowing
// rebuilds one that is (if it is a Resetter too).
type Versioned interface {
	Outdated() (bool, error)
}
