package directory_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestClientNoAnswer: a directory service that receives requests and
// never answers them (its NATS server, or the client's, frozen). A read
// is asked again, each try bounded, and a change is sent once; both fail
// when their context ends, saying through which NATS server nothing
// came and what to check, and for the change that it may have been
// made. Before, one request waited for the whole 30 s and said "context
// deadline exceeded (is rvpd running?)".
func TestClientNoAnswer(t *testing.T) {
	ns := natstest.Start(t, natstest.WithoutJetStream(), natstest.Listen())
	nc, _ := natstest.Connect(t, ns)
	var reads, changes atomic.Int32
	if _, err := nc.Subscribe(events.DirectoryAdminSubject, func(m *nats.Msg) {
		var req directory.Request
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("request: %v", err)
			return
		}
		switch req.Op {
		case directory.OpChallenge:
			data, _ := json.Marshal(directory.Response{Challenge: make([]byte, 40), Salt: []byte("salt"), Iter: 1000})
			m.Respond(data)
		case directory.OpWhoami:
			reads.Add(1)
		default:
			changes.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	cl := &directory.Client{Conn: nc, Name: "root", Password: "pw"}

	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	start := time.Now()
	_, err := cl.Whoami(ctx)
	took := time.Since(start)
	t.Logf("whoami unanswered: %v", err)
	want := []string{"no answer from the directory service in", "through NATS server " + ns.ClientURL(), "is a server frozen? is rvpd running?"}
	if err == nil || took > 10*time.Second {
		t.Fatalf("whoami unanswered: %v after %v", err, took)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("whoami unanswered: the error lacks %q: %v", w, err)
		}
	}
	if n := reads.Load(); n < 2 {
		t.Errorf("whoami unanswered was asked %d times in %v, want again", n, took)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	err = cl.SetInternetCapable(ctx, true)
	if err == nil {
		t.Fatal("a change unanswered succeeded")
	}
	for _, w := range append(want, "may have been recorded all the same") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("a change unanswered: the error lacks %q: %v", w, err)
		}
	}
	if n := changes.Load(); n != 1 {
		t.Errorf("a change unanswered was sent %d times, want once", n)
	}
	t.Logf("a change unanswered: %v", err)
}
