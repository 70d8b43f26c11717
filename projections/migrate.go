package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Versions before one fact stream per home server kept every home
// server's facts in one stream, RVP_FACTS, on the subjects rvp.evt.>.
// Those subjects overlap every home server's stream, so the old stream
// is migrated once before anything else starts: its subjects are moved
// aside (it is kept, unchanged otherwise, as an archive), and its facts
// are copied in order into the stream of their home server, each marked
// with its sequence and time in the old one. A copy interrupted is
// resumed where it stopped; the old stream is marked migrated when the
// copy is complete. Home projections are rebuilt from the new streams
// (their positions were sequences of the old one).

// ErrLegacyFacts is returned by EnsureStreams while the single fact
// stream of older versions is not migrated.
var ErrLegacyFacts = errors.New("the facts of this cluster are in the single stream " + events.StreamLegacyFacts +
	" of an older rvpd, and this version keeps one stream per home server: stop every rvpd of the cluster, then start one" +
	" `rvpd node` with -migrate-facts to copy them over once (rvpd dev does it by itself)")

// legacyArchive is the subject the old stream is moved to: nothing
// publishes there.
const legacyArchive = "rvp.archive.facts"

// metaMigrated marks the old stream migrated (stream metadata).
const metaMigrated = "rvp.migrated"

// LegacyFacts reports whether the cluster has the single fact stream of
// older versions, not yet migrated.
func LegacyFacts(ctx context.Context, js jetstream.JetStream) (bool, error) {
	st, err := js.Stream(ctx, events.StreamLegacyFacts)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for stream %s: %w", events.StreamLegacyFacts, err)
	}
	return st.CachedInfo().Config.Metadata[metaMigrated] == "", nil
}

// migrateResetAttempts is how many times the migration's ordered
// consumer is created for a fetch (each fetch creates it anew) before
// the fetch fails, 1 s, 2 s then 4 s apart: long enough for the stream
// to have a new leader. Unbounded (the client's default), a fetch on the
// old stream deleted or offline since the migration began never
// returned, nor heeded ctx: rvpd, migrating as it starts, hung silently.
const migrateResetAttempts = 4

// MigrateFacts copies the facts of the old single stream into the
// stream of each home server (created with o), if there is an old stream
// not migrated yet. It returns how many facts it copied. Nothing else
// may write facts meanwhile.
func MigrateFacts(ctx context.Context, js jetstream.JetStream, o StreamOptions, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if legacy, err := LegacyFacts(ctx, js); err != nil || !legacy {
		return 0, err
	}
	st, err := js.Stream(ctx, events.StreamLegacyFacts)
	if err != nil {
		return 0, err
	}
	cfg := st.CachedInfo().Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != legacyArchive {
		cfg.Subjects = []string{legacyArchive}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return 0, fmt.Errorf("move the subjects of stream %s aside: %w", events.StreamLegacyFacts, err)
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	log.Info("copying the facts of the single fact stream of an older version into one stream per home server",
		"stream", events.StreamLegacyFacts, "facts", info.State.Msgs)

	// Where each home server's copy stands: its last copied sequence of
	// the old stream, and its own last sequence (the chain's expectation).
	type copyState struct {
		done, last uint64
		finished   bool // the home server's stream has facts of its own after the copy
	}
	homes := map[string]*copyState{}
	state := func(home string) (*copyState, error) {
		if c := homes[home]; c != nil {
			return c, nil
		}
		if err := EnsureFactStream(ctx, js, home, o); err != nil {
			return nil, err
		}
		hs, err := js.Stream(ctx, events.FactStream(home))
		if err != nil {
			return nil, err
		}
		c := &copyState{last: hs.CachedInfo().State.LastSeq}
		if c.last > 0 {
			m, err := hs.GetMsg(ctx, c.last)
			if err != nil {
				return nil, fmt.Errorf("read the last fact of %s: %w", events.FactStream(home), err)
			}
			if v := m.Header.Get(events.HeaderLegacySeq); v != "" {
				c.done, _ = strconv.ParseUint(v, 10, 64)
			} else {
				c.finished = true
			}
		}
		homes[home] = c
		return c, nil
	}

	cons, err := js.OrderedConsumer(ctx, events.StreamLegacyFacts, jetstream.OrderedConsumerConfig{MaxResetAttempts: migrateResetAttempts})
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamLegacyFacts, err)
	}
	pub, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(1024), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return 0, err
	}
	copied := 0
	// cut is the old stream's sequence after the last run of facts its
	// retention removed before they were read here (0: none): the first
	// fact copied into a home server's stream after it is marked
	// (HeaderLegacyCut), since the removed facts may have been that home
	// server's, and the gap checks (Home.CatchUp, verify) find the mark.
	var cut, next uint64 = 0, 1
	var futures []jetstream.PubAckFuture
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("copy fact %s: %w", f.Msg().Header.Get(events.HeaderLegacySeq), err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	// The facts up to the old stream's last sequence, of which its
	// retention (MaxAge) may have removed the first, or all.
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		last = 0
	}
	for seq := uint64(0); seq < last; {
		msgs, err := Fetch(ctx, 5*time.Second, func() (jetstream.MessageBatch, error) {
			return cons.Fetch(int(min(512, last-seq)), jetstream.FetchMaxWait(5*time.Second))
		})
		if err != nil && len(msgs) == 0 && !errors.Is(err, nats.ErrTimeout) {
			return copied, fmt.Errorf("read stream %s after sequence %d: %w; run the migration again once it is available (it resumes where it stopped)", events.StreamLegacyFacts, seq, err)
		}
		n := 0
		for _, m := range msgs {
			n++
			md, err := m.Metadata()
			if err != nil {
				return copied, err
			}
			seq = md.Sequence.Stream
			if seq != next {
				cut = seq
			}
			next = seq + 1
			home, _, err := events.ParseFactSubject(m.Subject())
			if err != nil {
				log.Warn("not a fact's subject; left in the archive only", "seq", seq, "subject", m.Subject())
				continue
			}
			c, err := state(home)
			if err != nil {
				return copied, err
			}
			if c.finished || seq <= c.done {
				continue
			}
			msg := nats.NewMsg(m.Subject())
			for _, h := range []string{events.HeaderType, events.HeaderRequest} {
				if v := m.Headers().Get(h); v != "" {
					msg.Header.Set(h, v)
				}
			}
			msg.Header.Set(events.HeaderLegacySeq, strconv.FormatUint(seq, 10))
			msg.Header.Set(events.HeaderLegacyTime, md.Timestamp.UTC().Format(time.RFC3339Nano))
			if c.last == 0 && cut > 0 {
				msg.Header.Set(events.HeaderLegacyCut, strconv.FormatUint(cut, 10))
			}
			msg.Data = m.Data()
			f, err := pub.PublishMsgAsync(msg, jetstream.WithMsgID("legacy-"+strconv.FormatUint(seq, 10)),
				jetstream.WithExpectLastSequence(c.last))
			if err != nil {
				return copied, fmt.Errorf("copy fact %d: %w", seq, err)
			}
			futures = append(futures, f)
			c.last++
			c.done = seq
			copied++
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) {
			return copied, fmt.Errorf("read stream %s: %w", events.StreamLegacyFacts, err)
		}
		if err := wait(); err != nil {
			return copied, err
		}
		if n == 0 {
			if now, err := st.Info(ctx); err == nil && now.State.FirstSeq > last {
				break // the rest removed by the retention meanwhile
			}
			return copied, fmt.Errorf("read stream %s: stopped at %d of %d; run the migration again", events.StreamLegacyFacts, seq, last)
		}
		if copied > 0 && copied%50000 < n {
			log.Info("copying facts", "copied", copied, "seq", seq, "of", last)
		}
	}
	if cut > 0 {
		log.Warn("the old stream's retention had removed facts before they were copied: the state only they made (ACLs, properties, subscriptions) "+
			"is missing from the projections rebuilt from the copies; each home node's catch-up and rvpctl verify say so",
			"stream", events.StreamLegacyFacts, "removed_before_seq", cut)
	}
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[metaMigrated] = time.Now().UTC().Format(time.RFC3339)
	cfg.Description = "Archive: the fact events of versions before one stream per home server, copied into those (" + events.FactStreamPrefix + "*)"
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return copied, fmt.Errorf("mark stream %s migrated: %w", events.StreamLegacyFacts, err)
	}
	log.Info("facts copied into one stream per home server; the old stream is kept as an archive (delete it once rvpctl verify agrees)",
		"copied", copied, "homes", len(homes), "archive", events.StreamLegacyFacts)
	return copied, nil
}
