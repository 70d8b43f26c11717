package main

import (
	"testing"
	"time"

	"github.com/rvp-im/rvpd/testcluster"
)

// TestStopAnswersRequestsInFlight: a request in flight when the process
// is asked to stop (a message whose recipient's client takes a while to
// take it) is answered, as the gateway's drain promises, not cut off by
// its home node stopping first; and the stop does not wait out the
// gateway's -request.timeout for the answer that would never come.
func TestStopAnswersRequestsInFlight(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice, bob := newClient(t, p.addr, "alice"), newClient(t, p.addr, "bob")
	mustStatus(t, "alice signs in", alice.Login(14400), 200)
	mustStatus(t, "bob signs in", bob.Login(14400), 200)
	got := make(chan struct{}, 1) // the message reached bob's client
	bob.AnswerWith(func(n testcluster.Notify) testcluster.Answer {
		select {
		case got <- struct{}{}:
		default:
		}
		return testcluster.Answer{Raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Delay: time.Second}
	})
	type result struct {
		status int
		err    error
	}
	sent := make(chan result, 1)
	go func() {
		r, err := alice.TryDo("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "hello"), alice.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr")
		if err != nil {
			sent <- result{err: err}
			return
		}
		sent <- result{status: r.Status}
	}()
	// The stop comes while bob's client holds the message.
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the message did not reach bob's client")
	}
	stopping := time.Now()
	p.cancel()
	select {
	case r := <-sent:
		if r.err != nil || r.status != 200 {
			t.Errorf("a message in flight while the process stops: %d %v, want 200", r.status, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to a message in flight within 10 s of the stop")
	}
	p.stopped = true
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("rvpd dev: %v", err)
		}
		if took := time.Since(stopping); took > 5*time.Second {
			t.Errorf("stopping with a request in flight took %v, want a few seconds at most", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rvpd dev did not stop within 30 s")
	}
}
