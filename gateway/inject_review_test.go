package gateway

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/rvp"
)

// TestNotifyBodyLibxml2RefusesRefused: a message body that encoding/xml
// takes and libxml2 (librvp) and expat refuse whole is refused (400)
// before anything is appended: the home server forwards a message's body
// to the recipient's clients as it came, and librvp answered such a one
// "400 Parse Error" while its sender was told it was delivered.
func TestNotifyBodyLibxml2RefusesRefused(t *testing.T) {
	e := newEdge(t, NoAuth{})
	const (
		root = `<r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/">`
		msg  = `<r:message><r:notification-from><r:contact><d:href>http://im.example.test/instmsg/aliases/alice</d:href><r:description>Alice%s</r:description></r:contact></r:notification-from>` +
			`<r:notification-to><r:contact><d:href>http://im.example.test/instmsg/aliases/bob</d:href></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0` + "\r\n\r\n" + `hi]]></r:mime-data></r:msgbody></r:message></r:notification>`
	)
	notify := func(body string) string {
		return "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: im.example.test\r\nRVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n" +
			"Content-Type: text/xml\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	m := func(desc string) string { return strings.Replace(msg, "%s", desc, 1) }
	for _, tc := range []struct{ name, body string }{
		{"declaration after white space", "\r\n" + `<?xml version="1.0"?>` + root + m("")},
		{"declaration without version", `<?xml encoding="UTF-8"?>` + root + m("")},
		{"declaration inside", root + `<?xml version="1.0"?>` + m("")},
		{"surrogate reference", `<?xml version="1.0"?>` + root + m("&#xD800;")},
	} {
		before := e.appended()
		r := e.do(notify(tc.body))
		if r.Status != rvp.StatusBadRequest {
			t.Errorf("%s: status %d, want 400; body %q", tc.name, r.Status, r.Body)
		}
		if n := e.appended() - before; n != 0 {
			t.Errorf("%s: %d events appended", tc.name, n)
		}
	}
	// The same message, well-formed, goes on.
	before := e.appended()
	if r := e.do(notify(`<?xml version="1.0"?>` + root + m(" &#x1F600;"))); r.Status == rvp.StatusBadRequest || e.appended() == before {
		t.Errorf("a well-formed message: status %d, body %q, not appended", r.Status, r.Body)
	}
}
