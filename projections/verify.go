package projections

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// VerifyHome rebuilds home's projection from sequence 1 of the fact
// stream into memory, up to the live projection's position, and compares
// the two key by key. It returns "" when they are equal, else the
// differences.
func VerifyHome(ctx context.Context, js jetstream.JetStream, live *DB, home string) (string, error) {
	lh, err := OpenHome(live, home)
	if err != nil {
		return "", err
	}
	mem, err := Open("", Options{InMemory: true})
	if err != nil {
		return "", err
	}
	defer mem.Close()
	rh, err := OpenHome(mem, home)
	if err != nil {
		return "", err
	}
	if err := Replay(ctx, js, events.StreamFacts, events.FactFilter(home), lh.Position(), rh); err != nil {
		return "", fmt.Errorf("rebuild home %s: %w", home, err)
	}
	return Diff(live, mem, lh.Prefix(), 20)
}

// VerifyDirectory does for the directory projection what VerifyHome does
// for a home projection.
func VerifyDirectory(ctx context.Context, js jetstream.JetStream, live *DB) (string, error) {
	ld, err := OpenDirectory(live)
	if err != nil {
		return "", err
	}
	mem, err := Open("", Options{InMemory: true})
	if err != nil {
		return "", err
	}
	defer mem.Close()
	rd, err := OpenDirectory(mem)
	if err != nil {
		return "", err
	}
	if err := Replay(ctx, js, events.StreamDirectory, events.DirectoryFilter, ld.Position(), rd); err != nil {
		return "", fmt.Errorf("rebuild directory: %w", err)
	}
	return Diff(live, mem, ld.Prefix(), 20)
}
