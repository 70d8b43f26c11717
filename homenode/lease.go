package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Lease is a node's ownership of one home server: a key in the KV bucket
// events.BucketOwners, whose TTL is the lease. Exactly one node decides a
// home server's requests at a time; the others wait as standbys and take
// over when the owner lets go (a clean stop marks the key released) or
// dies (its key ages out unrenewed). Should two ever overlap (a partitioned owner
// that has not noticed yet), the chain of expected last sequences keeps
// each one's facts in order, and the fence the new owner appends when it
// takes over (fence.go, Term) keeps the old one's from being stored
// after it.
type Lease struct {
	KV     jetstream.KeyValue
	Home   string
	Holder string // the node's name, unique in the cluster
	Logger *slog.Logger
	// Every is how often the owner renews. Default a third of the
	// bucket's TTL.
	Every time.Duration
	// StandbyEvery is how often a standby looks whether the lease is free.
	// Default a tenth of the bucket's TTL, at least 100ms: a dead owner's
	// lease lapses between two thirds of the TTL and the TTL after it
	// died, and is taken so soon after.
	StandbyEvery time.Duration
	// Standby, when set, runs while this node waits as a standby, and is
	// stopped (and waited for) before the node serves: a warm standby
	// keeps its projection of the home server current, so that taking it
	// over costs what the owner decided since, not its whole history.
	Standby func(ctx context.Context)

	mu    sync.Mutex
	until time.Time // the lease is good until then (monotonic); zero: not held
	// seen is when the lease's previous holder last wrote it, as the
	// lease was last taken; zero when its key was gone.
	seen time.Time
	// term is the revision of the lease's key when this node last took it.
	term uint64
}

// Term returns the revision of the lease's key when this node last took
// it: no other taking of the lease has it, and every later one's is
// larger (the bucket's revisions only grow). Zero before it is taken. A
// home node's fence names it (Config.Term).
func (l *Lease) Term() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term
}

// PreviousHolderSeen returns when the node that held the lease before
// this one last renewed it (or let it go), as it was last taken: that node
// was alive then (the NATS server's clock). Zero when the lease had lapsed
// out of the bucket, or was never held.
func (l *Lease) PreviousHolderSeen() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

// Owned reports whether this node holds the lease now: it was taken or
// last renewed less than the bucket's TTL ago, counted from when the
// request was sent (the bucket counts from when it arrived), by the
// monotonic clock, which runs on while a process is stopped. The home
// node checks it before each append (Config.Owned).
func (l *Lease) Owned() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until)
}

// goodUntil records until when the lease is held.
func (l *Lease) goodUntil(t time.Time) {
	l.mu.Lock()
	l.until = t
	l.mu.Unlock()
}

// released is the prefix of the value of a lease let go cleanly, before
// the name of the node that held it.
const released = "released:"

// errHeld is a lease another node holds.
type errHeld struct{ by string }

func (e errHeld) Error() string { return "owned by node " + e.by }

// Hold runs serve while this node owns the home server, and waits as a
// standby while another does, until ctx ends; it returns nil then, after
// serve has returned and the lease is let go. A lease lost while serving
// stops serve and makes the node a standby again; so does serve failing
// (NATS unreachable for too long, say): the error is logged, the lease
// let go for another node to take, and taken again when it can be. serve
// is told whether the home server may have notifications undelivered:
// true unless this node itself let it go cleanly last.
func (l *Lease) Hold(ctx context.Context, serve func(ctx context.Context, takeover bool) error) error {
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("home", l.Home, "holder", l.Holder)
	key := events.OwnerKey(l.Home)
	every, ttl := l.Every, time.Duration(0)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		st, err := l.KV.Status(ctx)
		if err == nil {
			ttl = st.TTL()
			break
		}
		log.Warn("home server leases unreadable; will retry", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	if every <= 0 {
		every = ttl / 3
		if every <= 0 {
			every = projections.DefaultLeaseTTL / 3 // the bucket's TTL unread: its default's
		}
	}
	look := l.StandbyEvery
	if look <= 0 {
		look = max(ttl/10, 100*time.Millisecond)
	}
	var standby string
	warm := newWarmer(ctx, l.Standby)
	defer warm.stop()
	failed := false // serve failed last: what it had under way may be undelivered
	for {
		asked := time.Now()
		rev, takeover, err := l.acquire(ctx, key)
		takeover = takeover || failed
		if ctx.Err() != nil {
			return nil
		}
		var held errHeld
		switch {
		case errors.As(err, &held):
			if standby != held.by {
				standby = held.by
				log.Info("standby: home server owned by another node", "owner", held.by)
			}
			warm.start()
		case err != nil:
			log.Warn("home server lease not taken; will retry", "err", err)
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(look):
			}
			continue
		}
		l.goodUntil(leaseEnd(asked, ttl))
		l.mu.Lock()
		l.term = rev
		l.mu.Unlock()
		warm.stop()
		standby = ""
		log.Info("home server owned", "renew", every, "takeover", takeover)
		lost, err := l.serve(ctx, key, rev, every, ttl, func(ctx context.Context) error { return serve(ctx, takeover) }, log)
		if ctx.Err() != nil {
			return nil
		}
		failed = err != nil
		switch {
		case errors.Is(err, ErrFenced):
			// Another node took the home server over while this one was
			// paused or cut off: what this node had not stored goes to it.
			// Expected after such a spell, and nothing to mend here.
			log.Warn("home node stopped: another node has taken the home server over; this node stands by", "err", err)
		case failed:
			log.Error("home node stopped; the home server is let go, and taken again when it can be", "err", err)
		}
		// Taken again after a pause: a period after a failure; after a
		// lease lost, as soon as a standby would look (its renewals went
		// unanswered past the TTL, its connection cut off: moved since,
		// this node takes it back if no standby has, its projection
		// current, rather than leave the home server undecided a period
		// longer).
		again := every
		if lost && !failed {
			again = look
		}
		if failed || lost {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(again):
			}
		}
	}
}

// warmer runs a standby's work (Lease.Standby) while it waits, one at a
// time.
type warmer struct {
	ctx     context.Context
	run     func(context.Context)
	stopRun context.CancelFunc
	done    chan struct{}
}

func newWarmer(ctx context.Context, run func(context.Context)) *warmer {
	return &warmer{ctx: ctx, run: run}
}

// start runs the standby's work unless it runs already.
func (w *warmer) start() {
	if w.run == nil || w.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	w.stopRun, w.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		w.run(ctx)
	}(w.done)
}

// stop stops the standby's work and waits for it.
func (w *warmer) stop() {
	if w.done == nil {
		return
	}
	w.stopRun()
	<-w.done
	w.done = nil
}

// acquire takes the lease if it is free (never held, lapsed, or let go),
// or if this node held it before a restart. takeover is false only when
// this node itself let it go last.
func (l *Lease) acquire(ctx context.Context, key string) (rev uint64, takeover bool, err error) {
	l.mu.Lock()
	l.seen = time.Time{}
	l.mu.Unlock()
	rev, err = l.KV.Create(ctx, key, []byte(l.Holder))
	if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, true, err
	}
	e, err := l.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err = l.KV.Create(ctx, key, []byte(l.Holder)) // it lapsed meanwhile
		return rev, true, err
	}
	if err != nil {
		return 0, false, err
	}
	v := string(e.Value())
	before, free := strings.CutPrefix(v, released)
	if !free && v != l.Holder {
		return 0, false, errHeld{by: v}
	}
	rev, err = l.KV.Update(ctx, key, []byte(l.Holder), e.Revision())
	if err == nil {
		l.mu.Lock()
		l.seen = e.Created()
		l.mu.Unlock()
	}
	return rev, !(free && before == l.Holder), err
}

// serve runs serve and renews the lease until serve returns or the lease
// is lost; lost reports the latter. A renewal that fails for another
// reason (NATS unreachable) is retried soon (renewRetry), not at the
// next period, until the lease would have lapsed: a connection that
// failed it, moving to another NATS server (natsclient.ReachWatch), is
// back within a second, often as the lease lapses here (a server cut
// off is noticed in 6 to 10 s, the lease's TTL is 10 s): retried at the
// next period, up to a third of the TTL later, the lease lapsed here
// meanwhile and the home server decided nothing, the bucket keeping the
// lapsed key only until it next expired its keys.
func (l *Lease) serve(ctx context.Context, key string, rev uint64, every, ttl time.Duration,
	serve func(context.Context) error, log *slog.Logger) (lost bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(sctx) }()
	next := time.NewTimer(every)
	defer next.Stop()
	retry := renewRetry(every, ttl)
	renewed := time.Now()
	// unsure is when the first renewal sent since the last one answered
	// was sent; zero: none. One whose answer was lost may be the one
	// stored: a lease found still ours (stillOurs) runs from then, not
	// from the renewal that found it.
	var unsure time.Time
	for {
		select {
		case err := <-done:
			l.goodUntil(time.Time{})
			l.release(key, rev, log)
			if ctx.Err() != nil {
				return false, nil
			}
			if err == nil {
				err = fmt.Errorf("home server %s stopped serving", l.Home)
			}
			return false, err
		case <-next.C:
			// Not cut short by ctx: a renewal cancelled in flight would
			// leave the revision unknown.
			rctx, rcancel := context.WithTimeout(context.Background(), every)
			asked := time.Now()
			sent := asked
			if unsure.IsZero() {
				unsure = asked
			}
			nextRev, err := l.KV.Update(rctx, key, []byte(l.Holder), rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				// A renewal whose answer was lost (the bucket's leader
				// changing under it) moved the revision on: still ours?
				// Then the lease runs from that renewal, sent when the
				// first renewal not answered was, or later.
				asked = unsure
				nextRev, err = l.stillOurs(rctx, key, err)
			}
			rcancel()
			switch {
			case err == nil:
				rev, renewed, unsure = nextRev, asked, time.Time{}
				l.goodUntil(leaseEnd(asked, ttl))
				next.Reset(max(0, every-time.Since(sent)))
				continue
			case ctx.Err() != nil:
				continue // stopping: done comes next
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound),
				ttl > 0 && time.Since(renewed) >= ttl:
				log.Error("home server lease lost; stopping this home node, another may own it now", "err", err)
				l.goodUntil(time.Time{})
			default:
				log.Warn("home server lease not renewed; will retry", "err", err, "since", time.Since(renewed), "retry_in", retry)
				next.Reset(retry)
				continue
			}
			cancel()
			<-done
			return true, nil
		}
	}
}

// renewRetry is how soon a renewal that failed, not finding the lease
// lost, is tried again: a twentieth of the TTL (500ms of the production
// 10 s), at least 100ms, at most the renewal period. One unanswered
// takes the renewal period to fail; this paces those that fail at once
// (a connection moving, JetStream electing a leader).
func renewRetry(every, ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return every
	}
	return min(every, max(ttl/20, 100*time.Millisecond))
}

// leaseEnd is when a lease taken or renewed by a request sent at asked
// lapses: its TTL later, or never for a bucket without one.
func leaseEnd(asked time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return asked.Add(100 * 365 * 24 * time.Hour)
	}
	return asked.Add(ttl)
}

// stillOurs returns the revision of the lease when this node holds it
// still (its own value written last), else mismatch.
func (l *Lease) stillOurs(ctx context.Context, key string, mismatch error) (uint64, error) {
	e, err := l.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%w; the lease is gone", mismatch)
	}
	if err != nil {
		return 0, err // unknown: tried again at the next renewal
	}
	if string(e.Value()) != l.Holder {
		return 0, fmt.Errorf("%w (held by %q)", mismatch, e.Value())
	}
	return e.Revision(), nil
}

// release lets the lease go, so that a standby takes over at once.
func (l *Lease) release(key string, rev uint64, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	value := []byte(released + l.Holder)
	_, err := l.KV.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A renewal we did not hear the answer of: still ours?
		if e, gerr := l.KV.Get(ctx, key); gerr == nil && string(e.Value()) == l.Holder {
			_, err = l.KV.Update(ctx, key, value, e.Revision())
		}
	}
	if err != nil {
		log.Warn("home server lease not let go; a standby takes over when it lapses", "err", err)
		return
	}
	log.Info("home server let go")
}

// LeaseState is a home server's entry in the lease bucket as its readers
// (rvpctl status, the operator console) show it: the node that owns it,
// or the one that let it go cleanly, and when it was last written (the
// NATS server's clock).
type LeaseState struct {
	Node    string // the owner; "" when let go
	LetGo   string // the node that let it go cleanly; "" when owned
	Renewed time.Time
}

// Leases returns the home servers' leases by home server; nil and no
// error when there is no lease bucket (a cluster from before leases). A
// lapsed lease has no entry, nor one let go between its listing and its
// reading; a key that names no home server is given as it is.
func Leases(ctx context.Context, js jetstream.JetStream) (map[string]LeaseState, error) {
	kv, err := js.KeyValue(ctx, events.BucketOwners)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
	}
	out := map[string]LeaseState{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // lapsed meanwhile
		}
		home, err := events.Untoken(strings.TrimPrefix(k, "home."))
		if err != nil {
			home = k
		}
		l := LeaseState{Renewed: e.Created()}
		if by, free := strings.CutPrefix(string(e.Value()), released); free {
			l.LetGo = by
		} else {
			l.Node = by
		}
		out[home] = l
	}
	return out, nil
}
