package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestReadyzSaysWhyTheHomeNodeStopped: a process that holds a home
// server's lease while its home node fails and is started again said
// "the lease is being taken"; it now gives the error the node stopped
// with, and when.
func TestReadyzSaysWhyTheHomeNodeStopped(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "owners"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	o := &ops{}
	owner := o.homeReadiness("home1", kv, "n1")
	why := func() string {
		ok, results := o.readiness()
		if ok || len(results) != 1 {
			t.Fatalf("ready %v: %+v", ok, results)
		}
		return results[0].Why
	}
	if got := why(); !strings.Contains(got, "the lease is being taken") {
		t.Errorf("before its node ran: %q", got)
	}
	owner.failed(errors.New("home home1: catch up with the fact stream: boom"), time.Date(2026, 12, 6, 3, 4, 5, 0, time.UTC))
	owner.serving(nil) // as the node's deferred clean-up does
	if got := why(); !strings.Contains(got, "its home node stopped at 03:04:05") || !strings.Contains(got, "boom") {
		t.Errorf("after its node failed: %q, want why and when", got)
	}
}
