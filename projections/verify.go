package projections

import (
	"context"
	"fmt"

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

// VerifyHome compares home's projection in db with a rebuild from sequence
// 1 of the fact stream. It works on a live store: it compares a snapshot,
// rebuilt up to the position recorded in that snapshot.
func VerifyHome(ctx context.Context, js jetstream.JetStream, db *DB, home string) (Verification, error) {
	return verify(ctx, js, db, "home "+home, events.FactStream(home), events.FactFilter(home),
		func(d *DB) (Applier, []byte, error) {
			h, err := OpenHome(d, home)
			if err != nil {
				return nil, nil, err
			}
			return h, h.Prefix(), nil
		})
}

// VerifyDirectory does for the directory projection what VerifyHome does
// for a home projection.
func VerifyDirectory(ctx context.Context, js jetstream.JetStream, db *DB) (Verification, error) {
	return verify(ctx, js, db, "directory", events.StreamDirectory, events.DirectoryFilter,
		func(d *DB) (Applier, []byte, error) {
			dir, err := OpenDirectory(d)
			if err != nil {
				return nil, nil, err
			}
			return dir, dir.Prefix(), nil
		})
}

func verify(ctx context.Context, js jetstream.JetStream, db *DB, name, stream, filter string, open func(*DB) (Applier, []byte, error)) (Verification, error) {
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
	mem, err := Open("", Options{InMemory: true})
	if err != nil {
		return v, err
	}
	defer mem.Close()
	rebuilt, _, err := open(mem)
	if err != nil {
		return v, err
	}
	if err := Replay(ctx, js, stream, filter, pos, rebuilt); err != nil {
		return v, fmt.Errorf("rebuild %s: %w", name, err)
	}
	live, err := dump(snap, prefix)
	if err != nil {
		return v, err
	}
	v.Keys = len(live)
	v.Diff, err = diff(snap, mem.pdb, prefix, 20)
	return v, err
}
