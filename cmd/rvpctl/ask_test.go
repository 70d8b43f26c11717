package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestAskHomeNodeWaits: verify, run a moment after a home node was
// started, waits for the node to answer rather than failing at once; with
// no node at all it fails once its wait is over.
func TestAskHomeNodeWaits(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen(), natstest.WithoutJetStream())
	nc, _ := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No node: ErrNoResponders once the wait is over, said once.
	var said bytes.Buffer
	start := time.Now()
	_, err := askHomeNode(ctx, nc, nats.NewMsg("rvp.test.none"), "home9", 1500*time.Millisecond, &said)
	if !errors.Is(err, nats.ErrNoResponders) || time.Since(start) < 1500*time.Millisecond {
		t.Fatalf("with no node: %v after %s; want no responders after the wait", err, time.Since(start))
	}
	if strings.Count(said.String(), "no node of home server home9 answers yet") != 1 {
		t.Errorf("stderr %q: want the wait said once", said.String())
	}

	// A node that comes up during the wait answers: it starts once the
	// wait is said.
	waiting := &saidWriter{said: make(chan struct{})}
	up := make(chan error, 1)
	go func() {
		<-waiting.said
		nc2, err := nats.Connect(ns.ClientURL())
		if err != nil {
			up <- err
			return
		}
		t.Cleanup(nc2.Close)
		if _, err := nc2.Subscribe("rvp.test.late", func(m *nats.Msg) { m.Respond([]byte("ok")) }); err != nil {
			up <- err
			return
		}
		up <- nc2.Flush()
	}()
	msg, err := askHomeNode(ctx, nc, nats.NewMsg("rvp.test.late"), "home1", 10*time.Second, waiting)
	if uerr := <-up; uerr != nil {
		t.Fatalf("the late node: %v", uerr)
	}
	if err != nil || string(msg.Data) != "ok" {
		t.Fatalf("with a node starting late: %v", err)
	}
	if !strings.Contains(waiting.String(), "waiting up to 10s") {
		t.Errorf("stderr %q: want the wait said", waiting.String())
	}
}

// saidWriter is a stderr that closes said at its first write.
type saidWriter struct {
	bytes.Buffer
	said chan struct{}
}

func (w *saidWriter) Write(p []byte) (int, error) {
	if w.Len() == 0 {
		defer close(w.said)
	}
	return w.Buffer.Write(p)
}
