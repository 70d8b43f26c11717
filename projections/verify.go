package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Verification is the result of comparing a projection with a rebuild of
// it from its stream.
type Verification struct {
	Projection string `json:"projection"`
	Position   uint64 `json:"position"` // stream sequence both were compared at
	Keys       int    `json:"keys"`     // keys of the live projection
	Diff       string `json:"diff,omitempty"`
}

// OK reports whether the projection equals its rebuild.
func (v Verification) OK() bool { return v.Diff == "" }

// HeaderProgress names, in a verification request, the subject the
// verifying node sends its Progress to.
const HeaderProgress = "Rvp-Progress"

// ProgressTo returns a Progress function that publishes each report as
// JSON on subject, an inbox of the requester's; nil when subject is not
// one (a node publishes nowhere else on a request's word).
func ProgressTo(nc *nats.Conn, subject string) func(Progress) {
	if nc == nil || !strings.HasPrefix(subject, nats.InboxPrefix) {
		return nil
	}
	return func(p Progress) {
		if data, err := json.Marshal(p); err == nil {
			nc.Publish(subject, data)
		}
	}
}

// Verifier compares projections with rebuilds of them from their
// streams. Progress, when set, is told how far each rebuild has come
// every Interval (default 250ms) and when it ends.
type Verifier struct {
	Progress func(Progress)
	Interval time.Duration
}

// VerifyHome compares home's projection in db with a rebuild from sequence
// 1 of the fact stream. It works on a live store: it compares a snapshot,
// rebuilt up to the position recorded in that snapshot.
func VerifyHome(ctx context.Context, js jetstream.JetStream, db *DB, home string) (Verification, error) {
	return Verifier{}.Home(ctx, js, db, home)
}

// VerifyDirectory does for the directory projection what VerifyHome does
// for a home projection.
func VerifyDirectory(ctx context.Context, js jetstream.JetStream, db *DB) (Verification, error) {
	return Verifier{}.Directory(ctx, js, db)
}

// Home is VerifyHome.
func (vr Verifier) Home(ctx context.Context, js jetstream.JetStream, db *DB, home string) (Verification, error) {
	return vr.verify(ctx, js, db, "home "+home, events.FactStream(home), events.FactFilter(home),
		func(d *DB) (rebuildTarget, []byte, error) {
			h, err := OpenHome(d, home)
			if err != nil {
				return rebuildTarget{}, nil, err
			}
			return homeTarget(h), h.Prefix(), nil
		})
}

// Directory is VerifyDirectory.
func (vr Verifier) Directory(ctx context.Context, js jetstream.JetStream, db *DB) (Verification, error) {
	return vr.verify(ctx, js, db, "directory", events.StreamDirectory, events.DirectoryFilter,
		func(d *DB) (rebuildTarget, []byte, error) {
			dir, err := OpenDirectory(d)
			if err != nil {
				return rebuildTarget{}, nil, err
			}
			return directoryTarget(dir), dir.Prefix(), nil
		})
}

func (vr Verifier) verify(ctx context.Context, js jetstream.JetStream, db *DB, name, stream, filter string, open func(*DB) (rebuildTarget, []byte, error)) (Verification, error) {
	v := Verification{Projection: name}
	_, prefix, err := open(db)
	if err != nil {
		return v, err
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	pos, err := getUint64(snap, append(append([]byte(nil), prefix...), "pos"...))
	if err != nil {
		return v, err
	}
	v.Position = pos
	if err := rebuildable(ctx, js, stream, pos); err != nil {
		return v, fmt.Errorf("verify %s: %w", name, err)
	}
	mem, err := Open("", Options{InMemory: true, Scratch: true})
	if err != nil {
		return v, err
	}
	defer mem.Close()
	rebuilt, _, err := open(mem)
	if err != nil {
		return v, err
	}
	interval := vr.Interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	if err := rebuild(ctx, js, stream, filter, pos, rebuilt, vr.Progress, interval); err != nil {
		return v, fmt.Errorf("rebuild %s: %w", name, err)
	}
	v.Diff, v.Keys, err = diff(snap, mem.pdb, prefix, 20)
	return v, err
}

// rebuildable reports, as an error, that a projection at pos cannot be
// rebuilt from stream: the stream ends before pos (the projection was
// written from another stream, and a rebuild would wait for ever for
// what it has applied), or no longer holds its first messages (its
// retention, a fact stream's -audit.retention, removed them: fact and
// directory streams deny deletes and purges), or begins with facts
// copied from the single fact stream of older versions after that one's
// retention had removed some (MigrateFacts marks them HeaderLegacyCut),
// and a rebuild from what is left cannot make the projection they made.
func rebuildable(ctx context.Context, js jetstream.JetStream, stream string, pos uint64) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	if last := info.State.LastSeq; pos > last {
		return fmt.Errorf("the projection is at sequence %d, past the end of stream %s (%d): it was written from another stream; "+
			"its node rebuilds it from this one when it starts", pos, stream, last)
	}
	if first := info.State.FirstSeq; first > 1 {
		return fmt.Errorf("stream %s no longer holds its messages before sequence %d (removed by its retention, MaxAge %s: -audit.retention for facts), "+
			"so a rebuild cannot make the projection they made: it is not compared, and must not be deleted to be rebuilt", stream, first, info.Config.MaxAge)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cut, err := legacyCut(ctx, st)
	if err != nil {
		return err
	}
	if cut > 0 {
		return fmt.Errorf("stream %s begins with facts copied from %s, the single fact stream of an older version, whose retention had removed its facts before sequence %d "+
			"when they were copied, so a rebuild cannot make the projection they made: it is not compared, and must not be deleted to be rebuilt", stream, events.StreamLegacyFacts, cut)
	}
	return nil
}
