package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
// ctx ends; it returns nil then. It reads through an ordered consumer, so it
// keeps no acknowledgement state in JetStream: the projection's position is
// the only cursor. Messages that arrive together are applied in one batch.
func Follow(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, a Applier) error {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.Filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if pos := a.Position(); pos > 0 {
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = pos + 1
	}
	cons, err := js.OrderedConsumer(ctx, cfg.Stream, occ)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("follow %s (%s): create ordered consumer: %w", cfg.Stream, cfg.Filter, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(cfg.MaxBatch))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("follow %s (%s): %w", cfg.Stream, cfg.Filter, err)
	}

	// The reader hands messages over a channel so that the applier can
	// batch whatever has arrived without blocking.
	msgs := make(chan Msg, cfg.MaxBatch*2)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					readErr <- err
				}
				return
			}
			md, err := m.Metadata()
			if err != nil {
				readErr <- fmt.Errorf("message metadata: %w", err)
				return
			}
			msg := Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Type: m.Headers().Get(events.HeaderType), Data: m.Data(), Time: md.Timestamp}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	stop := func() { it.Stop(); wg.Wait() }

	batch := make([]Msg, 0, cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			stop()
			return nil
		case m, ok := <-msgs:
			if !ok {
				stop()
				select {
				case err := <-readErr:
					return fmt.Errorf("follow %s (%s): %w", cfg.Stream, cfg.Filter, err)
				default:
					return nil
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
			return fmt.Errorf("follow %s (%s): apply at seq %d: %w", cfg.Stream, cfg.Filter, batch[0].Seq, err)
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
