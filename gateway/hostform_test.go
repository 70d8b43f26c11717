package gateway

import (
	"testing"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// count returns how many messages stream holds.
func (e *edge) count(stream string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestHostWrittenInFull: a request whose Host (or absolute target, or
// RVP-From-Principal) names the IM host in upper case, or written in
// full with its trailing dot (im.example.test.: the same DNS name, which
// RVP clients send when their user typed it so), is served as one for
// im.example.test. With the dot, the host reached no IM domain: the
// request became a lookup for the routers, of a node of another
// organisation's at "im.example.test.".
func TestHostWrittenInFull(t *testing.T) {
	e := newEdge(t, NoAuth{})
	const rest = "Notification-Type: update/propchange\r\nCall-Back: http://192.0.2.7:3044/\r\n\r\n"
	for _, raw := range []string{
		"SUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nHost: IM.Example.Test\r\nRVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n" + rest,
		"SUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nHost: im.example.test.\r\nRVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n" + rest,
		"SUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nHost: IM.Example.Test.:80\r\nRVP-From-Principal: http://IM.Example.Test./instmsg/aliases/alice\r\n" + rest,
		"SUBSCRIBE http://im.example.test./instmsg/aliases/Bob HTTP/1.1\r\nHost: im.example.test.\r\nRVP-From-Principal: http://im.example.test./instmsg/aliases/alice\r\n" + rest,
		"SUBSCRIBE /instmsg/local/IM.Example.Test./instmsg/aliases/bob HTTP/1.1\r\nHost: home1.example.test.\r\nRVP-From-Principal: http://im.example.test./instmsg/aliases/alice\r\n" + rest,
	} {
		reqs, lookups := e.count(events.StreamRequests), e.count(events.StreamLookups)
		r := e.do(raw)
		if n := e.count(events.StreamLookups) - lookups; n != 0 || e.count(events.StreamRequests) == reqs {
			t.Errorf("%q: status %d (%q): %d lookups appended for the routers, %d requests for bob's home server; want bob's request",
				raw, r.Status, r.Body, n, e.count(events.StreamRequests)-reqs)
		}
		if r.Status == rvp.StatusBadRequest || r.Status == rvp.StatusForbidden || r.Status == rvp.StatusNotFound {
			t.Errorf("%q: refused %d: %q", raw, r.Status, r.Body)
		}
	}
}
