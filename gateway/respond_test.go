package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// TestRespondOutcomeUnknown: a request whose answer did not come
// (unanswered, however wrapped) is answered 504 and told it may have been
// carried out; any other failure of the service is 503, a refusal its own
// status.
func TestRespondOutcomeUnknown(t *testing.T) {
	notify, subscribe := &rvp.Request{Method: "NOTIFY"}, &rvp.Request{Method: "SUBSCRIBE"}
	for _, c := range []struct {
		name   string
		req    *rvp.Request
		err    error
		status int
		says   []string
		not    []string
	}{
		{"no reply, a message", notify, fmt.Errorf("NOTIFY for bob on home server home1: %w", &unanswered{err: errors.New("no reply to Notify: context deadline exceeded")}),
			504, []string{"may have been carried out", "(the message delivered)", "check before sending it again"}, nil},
		{"no reply, a subscription", subscribe, &unanswered{err: errors.New("no reply")},
			504, []string{"may have been carried out"}, []string{"message"}},
		{"site lost on the way", notify, fmt.Errorf("wrapped: %w", &unanswered{err: errors.New("append Notify: context canceled"), site: "b"}),
			504, []string{"site b was lost while the request travelled to it", "(the message delivered)"}, nil},
		{"not taken", notify, errors.New("append Notify: nats: no response from stream"),
			503, []string{"could not take the request"}, []string{"carried out"}},
		{"refused", notify, refuse(rvp.StatusUnavailable, "bob is homed at site b, which cannot be reached"),
			503, []string{"cannot be reached"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := respond(c.req, nil, c.err)
			body := string(r.Body)
			if r.Status != c.status {
				t.Errorf("status %d, want %d; body %q", r.Status, c.status, body)
			}
			for _, s := range c.says {
				if !strings.Contains(body, s) {
					t.Errorf("body %q does not say %q", body, s)
				}
			}
			for _, s := range c.not {
				if strings.Contains(body, s) {
					t.Errorf("body %q says %q", body, s)
				}
			}
		})
	}
}

// siteFlag is a site watch whose one site is lost when lost is set.
type siteFlag struct{ lost atomic.Bool }

func (s *siteFlag) Lost(string) bool { return s.lost.Load() }

// TestWhileReachable: the context ends with errSiteLost once the watch
// counts the site lost; with the parent's deadline when that comes
// first; and its goroutine is done when stop returns.
func TestWhileReachable(t *testing.T) {
	sites := &siteFlag{}
	ctx, stop := whileReachable(t.Context(), sites, "b")
	select {
	case <-ctx.Done():
		t.Fatalf("ended while the site was reachable: %v", context.Cause(ctx))
	case <-time.After(3 * siteLook):
	}
	lostAt := time.Now()
	sites.lost.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10 s after the site was lost")
	}
	if cause := context.Cause(ctx); !errors.Is(cause, errSiteLost) || !strings.Contains(cause.Error(), "site b") {
		t.Errorf("cause %v; want site b lost", cause)
	}
	t.Logf("ended %v after the site was lost (looks every %v)", time.Since(lostAt).Round(time.Millisecond), siteLook)
	stop()

	parent, cancel := context.WithTimeout(t.Context(), 2*siteLook)
	defer cancel()
	ctx, stop = whileReachable(parent, &siteFlag{}, "b")
	<-ctx.Done()
	stop()
	if cause := context.Cause(ctx); !errors.Is(cause, context.DeadlineExceeded) || errors.Is(cause, errSiteLost) {
		t.Errorf("cause %v; want the parent's deadline", cause)
	}
}
