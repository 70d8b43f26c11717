package rvp

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

var proppatchSeeds = []string{
	// The digest's compact form with single quotes.
	`<?xml version="1.0"?><d:propertyupdate xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'><d:set><d:prop><r:state><r:leased-value><r:value><r:online/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>1200</d:timeout></r:leased-value></r:state></d:prop></d:set></d:propertyupdate>`,
	// librvp: pretty-printed declaration line, view id after the lease.
	"<?xml version=\"1.0\"?>\n<d:propertyupdate xmlns:d=\"DAV:\" xmlns:r=\"http://schemas.microsoft.com/rvp/\" xmlns:a=\"http://schemas.microsoft.com/rvp/acl/\"><d:set><d:prop><r:state><r:leased-value><r:value><r:busy/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>1200</d:timeout></r:leased-value><r:view-id>1001</r:view-id></r:state></d:prop></d:set></d:propertyupdate>",
	// librvp at logout: bare state.
	"<?xml version=\"1.0\"?>\n<d:propertyupdate xmlns:d=\"DAV:\" xmlns:r=\"http://schemas.microsoft.com/rvp/\" xmlns:a=\"http://schemas.microsoft.com/rvp/acl/\"><d:set><d:prop><r:state><r:offline/><r:view-id>1002</r:view-id></r:state></d:prop></d:set></d:propertyupdate>",
	// Net::RVP: indented, r:timeout, trailing spaces.
	"<?xml version=\"1.0\"?>\n<d:propertyupdate xmlns:d=\"DAV:\" xmlns:r=\"http://schemas.microsoft.com/rvp/\">\n  <d:set><d:prop><r:state><r:leased-value>\n    <r:value><r:online/></r:value>\n    <r:default-value><r:offline/></r:default-value> \n    <r:timeout>14400</r:timeout>\n  </r:leased-value></r:state></d:prop></d:set>\n</d:propertyupdate> \n",
	// The spec's misspelt root and undeclared prefixes.
	`<?xml version="1.0"?><D:propupdate><D:set><D:prop><R:state><R:leased-value><R:value><R:away/></R:value><R:default-value><R:offline/></R:default-value><R:timeout>60</R:timeout></R:leased-value></R:state></D:prop></D:set></D:propupdate>`,
	`<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:displayname>x</d:displayname></d:prop></d:set></d:propertyupdate>`,
}

func TestParsePropertyUpdate(t *testing.T) {
	for i, want := range []*events.StateUpdate{
		{Value: "online", Default: "offline", Timeout: 1200},
		{Value: "busy", Default: "offline", Timeout: 1200, ViewID: 1001},
		{Value: "offline", Default: "offline", ViewID: 1002},
		{Value: "online", Default: "offline", Timeout: 14400},
		{Value: "away", Default: "offline", Timeout: 60},
	} {
		got, other, err := ParsePropertyUpdate([]byte(proppatchSeeds[i]))
		if err != nil || !reflect.DeepEqual(got, want) || len(other) != 0 {
			t.Errorf("seed %d: %+v %v %v, want %+v", i, got, other, err, want)
		}
	}
	st, other, err := ParsePropertyUpdate([]byte(proppatchSeeds[5]))
	if err != nil || st != nil || len(other) != 1 || other[0] != (events.PropValue{Prop: events.PropDisplayName, Value: "x"}) {
		t.Errorf("displayname only: %v %v %v", st, other, err)
	}
	for _, bad := range []string{"", "not xml", `<d:propertyupdate xmlns:d="DAV:">`, `<x/>`,
		`<d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop><r:state><r:leased-value><r:value><r:on line/></r:value></r:leased-value></r:state></d:prop></d:set></d:propertyupdate>`,
		`<d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop><r:state><r:leased-value><d:timeout>x</d:timeout><r:value><r:online/></r:value></r:leased-value></r:state></d:prop></d:set></d:propertyupdate>`,
		`<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><d:propertyupdate xmlns:d="DAV:"/>`,
		strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100),
	} {
		if _, _, err := ParsePropertyUpdate([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParsePropertyUpdate(f *testing.F) {
	for _, s := range proppatchSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, other, err := ParsePropertyUpdate(body)
		if err != nil {
			return
		}
		if st == nil && len(other) == 0 {
			t.Fatal("accepted a PROPPATCH that sets nothing")
		}
		var names []events.Prop
		for _, o := range other {
			names = append(names, o.Prop)
		}
		if st != nil && (st.Value == "" || st.Timeout < 0 || st.ViewID < 0) {
			t.Fatalf("bad state update %+v", st)
		}
		if st != nil {
			// The value must render safely as an element name.
			b := LeaseMultistatus("http://x/instmsg/aliases/a", events.Lease{Value: st.Value, Default: st.Default, Timeout: st.Timeout, ViewID: st.ViewID}, other, names)
			if err := wellFormed(b); err != nil {
				t.Fatalf("rendered answer not well-formed: %v\n%s", err, b)
			}
		}
	})
}

var propfindSeeds = []string{
	`<?xml version="1.0"?><d:propfind xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/'><d:prop><d:displayname/><r:foo/></d:prop></d:propfind>`,
	"<?xml version=\"1.0\"?>\n<d:propfind xmlns:d=\"DAV:\" xmlns:r=\"http://schemas.microsoft.com/rvp/\">\n  <d:allprop/>\n</d:propfind>",
	"",
	`<d:propfind xmlns:d="DAV:"><d:propname/></d:propfind>`,
}

func TestParsePropFind(t *testing.T) {
	all, _, props, err := ParsePropFind([]byte(propfindSeeds[0]))
	if err != nil || all || !reflect.DeepEqual(props, []events.Prop{events.PropDisplayName, {Space: events.NSRVP, Local: "foo"}}) {
		t.Errorf("named props: %v %v %v", all, props, err)
	}
	if all, _, _, err := ParsePropFind([]byte(propfindSeeds[1])); err != nil || !all {
		t.Errorf("allprop: %v %v", all, err)
	}
	if all, _, _, err := ParsePropFind(nil); err != nil || !all {
		t.Errorf("empty body means allprop: %v %v", all, err)
	}
	if _, _, _, err := ParsePropFind([]byte(`<d:propfind xmlns:d="DAV:"/>`)); err == nil {
		t.Error("accepted a PROPFIND naming nothing")
	}
}

func FuzzParsePropFind(f *testing.F) {
	for _, s := range propfindSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		all, names, props, err := ParsePropFind(body)
		if err != nil {
			return
		}
		if !all && !names && len(props) == 0 {
			t.Fatal("accepted a PROPFIND naming nothing")
		}
		var found []events.PropValue
		for _, p := range props {
			found = append(found, events.PropValue{Prop: p, Value: "v"})
		}
		if err := wellFormed(Multistatus("http://x/instmsg/aliases/a", found, props, nil)); err != nil {
			t.Fatalf("rendered answer not well-formed: %v", err)
		}
	})
}

var notificationSeeds = []string{
	"<?xml version=\"1.0\"?><r:notification xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'><r:message><r:notification-from><r:contact><d:href>http://im.example.com/instmsg/aliases/alice</d:href><r:description>Alice Smith</r:description></r:contact></r:notification-from><r:notification-to><r:contact><d:href>http://im.example.com/instmsg/aliases/bob</d:href><r:description>Bob Jones</r:description></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=MS%20Shell%20Dlg; EF=; CO=0; CS=0; PF=0\r\nSession-Id: {3F2504E0-4F89-11D3-9A0C-0305E82C3301}\r\n\r\nlunch at noon?]]></r:mime-data></r:msgbody></r:message></r:notification>",
	`<?xml version="1.0"?><r:notification xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/'><r:propnotification><r:notification-from><r:contact><d:href>http://im.example.com/instmsg/aliases/bob</d:href></r:contact></r:notification-from><d:propertyupdate><d:set><d:prop><r:state><r:away/></r:state></d:prop></d:set></d:propertyupdate></r:propnotification></r:notification>`,
	`<?xml version="1.0"?><D:notification><R:message/></D:notification>`,
}

func TestCheckNotification(t *testing.T) {
	for i, want := range []NotificationKind{KindMessage, KindPropNotification, KindMessage} {
		if got, err := CheckNotification([]byte(notificationSeeds[i])); err != nil || got != want {
			t.Errorf("seed %d: %v %v", i, got, err)
		}
	}
	for _, bad := range []string{"", "hello", `<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"/>`, `<r:message xmlns:r="x"/>`, `<r:notification><r:message>`} {
		if _, err := CheckNotification([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestParseNotification: the sender and recipients a body names, for the
// gateway to hold them to the request.
func TestParseNotification(t *testing.T) {
	n, err := ParseNotification([]byte(notificationSeeds[0]))
	if err != nil || n.Kind != KindMessage || len(n.From) != 1 || n.From[0] != "http://im.example.com/instmsg/aliases/alice" ||
		len(n.To) != 1 || n.To[0] != "http://im.example.com/instmsg/aliases/bob" {
		t.Errorf("message: %+v %v", n, err)
	}
	n, err = ParseNotification([]byte(notificationSeeds[1]))
	if err != nil || n.Kind != KindPropNotification || len(n.From) != 1 || len(n.To) != 0 {
		t.Errorf("propnotification: %+v %v", n, err)
	}
	multi := `<r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:message><r:notification-from><r:contact><d:href>
	  http://a/instmsg/aliases/x </d:href></r:contact></r:notification-from><r:notification-from/><r:notification-to><r:contact><d:href>http://a/instmsg/aliases/y</d:href></r:contact></r:notification-to><r:notification-to><r:contact><d:href>http://a/instmsg/aliases/z</d:href></r:contact></r:notification-to></r:message></r:notification>`
	n, err = ParseNotification([]byte(multi))
	if err != nil || len(n.From) != 2 || n.From[0] != "http://a/instmsg/aliases/x" || n.From[1] != "" || len(n.To) != 2 || n.To[1] != "http://a/instmsg/aliases/z" {
		t.Errorf("two senders (one empty), two recipients: %+v %v", n, err)
	}
}

// TestParseNotificationHidesNoSender: every sender a body names is seen,
// however it is spelt, so that the gateway's one-sender check
// (checkNotification) holds for what a client reads. The first
// r:contact of r:notification-from (by local name, in any namespace), its
// first d:href, and the first r:message were all that was read: a second
// contact, href or message, which a client may take for the sender
// (Miranda matches the literal "r:contact", Net::RVP makes a user of
// every href), went unchecked.
func TestParseNotificationHidesNoSender(t *testing.T) {
	const (
		head  = `<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:x="urn:x">`
		alice = `<r:contact><d:href>http://im.example.com/instmsg/aliases/alice</d:href></r:contact>`
		to    = `<r:notification-to><r:contact><d:href>http://im.example.com/instmsg/aliases/bob</d:href></r:contact></r:notification-to>`
		body  = `<r:msgbody><r:mime-data>hi</r:mime-data></r:msgbody>`
		tail  = `</r:notification>`
	)
	mallory := "http://im.example.com/instmsg/aliases/mallory"
	for name, doc := range map[string]string{
		"two contacts":                         head + `<r:message><r:notification-from>` + alice + `<r:contact><d:href>` + mallory + `</d:href></r:contact></r:notification-from>` + to + body + `</r:message>` + tail,
		"a contact of another namespace first": head + `<r:message><r:notification-from><x:contact><d:href>http://im.example.com/instmsg/aliases/alice</d:href></x:contact><r:contact><d:href>` + mallory + `</d:href></r:contact></r:notification-from>` + to + body + `</r:message>` + tail,
		"two hrefs":                            head + `<r:message><r:notification-from><r:contact><d:href>http://im.example.com/instmsg/aliases/alice</d:href><d:href>` + mallory + `</d:href></r:contact></r:notification-from>` + to + body + `</r:message>` + tail,
		"two messages":                         head + `<r:message><r:notification-from>` + alice + `</r:notification-from>` + to + body + `</r:message><r:message><r:notification-from><r:contact><d:href>` + mallory + `</d:href></r:contact></r:notification-from>` + to + body + `</r:message>` + tail,
		"a message of another namespace first": head + `<x:message><r:notification-from>` + alice + `</r:notification-from>` + to + `</x:message><r:message><r:notification-from><r:contact><d:href>` + mallory + `</d:href></r:contact></r:notification-from>` + to + body + `</r:message>` + tail,
	} {
		n, err := ParseNotification([]byte(doc))
		if err == nil && len(n.From) == 1 {
			t.Errorf("%s: one sender, %q, for a body that names %s too", name, n.From[0], mallory)
		}
	}
	// What real clients send is read as before.
	n, err := ParseNotification([]byte(notificationSeeds[0]))
	if err != nil || len(n.From) != 1 || n.From[0] != "http://im.example.com/instmsg/aliases/alice" {
		t.Errorf("a real message: %+v %v", n, err)
	}
}

func FuzzCheckNotification(f *testing.F) {
	for _, s := range notificationSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		kind, err := CheckNotification(body)
		if err == nil && kind != KindMessage && kind != KindPropNotification {
			t.Fatalf("accepted with kind %d", kind)
		}
		if err == nil {
			if werr := wellFormed(body); werr != nil {
				t.Fatalf("accepted a body encoding/xml finds malformed: %v", werr)
			}
		}
	})
}

// wellFormed parses b completely, and checks what Namespaces in XML 1.0
// adds and encoding/xml does not (expat, under Net::RVP's XML::Parser,
// and libxml2, under librvp, do): every element name has a local part,
// and the reserved namespace names are bound to their own prefixes only
// (§3).
func wellFormed(b []byte) error {
	const nsXML, nsXMLNS = "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"
	d := xml.NewDecoder(strings.NewReader(string(b)))
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return nil
			}
			return err
		}
		s, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		// encoding/xml keeps a name it cannot split ("r:") whole, and
		// checks a prefixed name whole ("r:9").
		if l := s.Name.Local; l == "" || strings.Contains(l, ":") || strings.IndexAny(l[:1], "0123456789-.") == 0 {
			return fmt.Errorf("element %q is not a qualified name", s.Name.Local)
		}
		for _, a := range s.Attr {
			decl := a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns"
			if decl && (a.Value == nsXMLNS || a.Value == nsXML && !(a.Name.Space == "xmlns" && a.Name.Local == "xml")) {
				return fmt.Errorf("element %s binds %s:%s to the reserved namespace %s", s.Name.Local, a.Name.Space, a.Name.Local, a.Value)
			}
		}
	}
}

// TestPropertyInReservedNamespace: a property named in the XML namespace
// (xml:lang) was answered as <x:lang xmlns:x="http://www.w3.org/XML/1998/namespace"/>,
// which binds a reserved namespace name to another prefix: expat and
// libxml2 refuse the whole 207. A request that binds one itself is no
// namespace-well-formed XML and is refused.
func TestPropertyInReservedNamespace(t *testing.T) {
	_, _, props, err := ParsePropFind([]byte(`<d:propfind xmlns:d="DAV:"><d:prop><d:displayname/><xml:lang/></d:prop></d:propfind>`))
	if err != nil {
		t.Fatalf("xml:lang: %v", err)
	}
	for _, b := range [][]byte{
		Multistatus("http://x/instmsg/aliases/a", nil, props, nil),
		Multistatus("http://x/instmsg/aliases/a", []events.PropValue{{Prop: props[1], Value: "en"}}, nil, nil),
		LeaseMultistatus("http://x/instmsg/aliases/a", events.Lease{Value: "online", Default: "offline", Timeout: 60, ViewID: 1}, nil, props),
	} {
		if err := wellFormed(b); err != nil {
			t.Errorf("answer not well-formed: %v\n%s", err, b)
		}
	}
	for _, bad := range []string{
		`<d:propfind xmlns:d="DAV:"><d:prop><q:foo xmlns:q="http://www.w3.org/2000/xmlns/"/></d:prop></d:propfind>`,
		`<d:propfind xmlns:d="DAV:"><d:prop><q:lang xmlns:q="http://www.w3.org/XML/1998/namespace"/></d:prop></d:propfind>`,
		`<d:propfind xmlns:d="DAV:"><d:prop><lang xmlns="http://www.w3.org/XML/1998/namespace"/></d:prop></d:propfind>`,
	} {
		if _, _, props, err := ParsePropFind([]byte(bad)); err == nil {
			t.Errorf("accepted %s as %v", bad, props)
		}
	}
}

func TestRenderShapes(t *testing.T) {
	got := string(Multistatus("http://im.example.com/instmsg/aliases/bob",
		[]events.PropValue{{Prop: events.PropState, Value: "busy"}, {Prop: events.PropDisplayName, Value: "Bob & Co"}, {Prop: events.PropMobileDescription, Value: ""}},
		[]events.Prop{{Space: events.NSRVP, Local: "foo"}}, nil))
	want := `<?xml version="1.0"?><d:multistatus xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'><d:response><d:href>http://im.example.com/instmsg/aliases/bob</d:href><d:propstat><d:prop><r:state><r:busy/></r:state><d:displayname>Bob &amp; Co</d:displayname><r:mobile-description></r:mobile-description></d:prop><d:status>HTTP/1.1 200 Successful</d:status></d:propstat><d:propstat><d:prop><r:foo/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response></d:multistatus>`
	if got != want {
		t.Errorf("multistatus:\n got %s\nwant %s", got, want)
	}
	got = string(PropNotification(Contact{"http://im.example.com/instmsg/aliases/bob", "Bob Jones"}, Contact{"http://im.example.com/instmsg/aliases/alice", "Alice Smith"}, "away"))
	want = `<?xml version="1.0"?><r:notification xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'><r:propnotification><r:notification-from><r:contact><d:href>http://im.example.com/instmsg/aliases/bob</d:href><r:description>Bob Jones</r:description></r:contact></r:notification-from><r:notification-to><r:contact><d:href>http://im.example.com/instmsg/aliases/alice</d:href><r:description>Alice Smith</r:description></r:contact></r:notification-to><d:propertyupdate><d:set><d:prop><r:state><r:away/></r:state></d:prop></d:set></d:propertyupdate></r:propnotification></r:notification>`
	if got != want {
		t.Errorf("propnotification:\n got %s\nwant %s", got, want)
	}
	if got := string(Subscriptions(nil)); got != `<?xml version="1.0"?><r:subscriptions xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'/>` {
		t.Errorf("empty subscriptions: %s", got)
	}
}

// TestRenderOneAllocation: the answers rendered for each buddy's
// SUBSCRIBE (the buddy's properties, one unknown) and for a PROPPATCH of
// the state are made in the one buffer sized for them.
func TestRenderOneAllocation(t *testing.T) {
	want := 1.0
	if raceDetector {
		want = 2 // the buffer escapes under the race detector
	}
	href := "http://127.0.0.1:41917/instmsg/aliases/user10031"
	found := []events.PropValue{{Prop: events.PropState, Value: "online"}, {Prop: events.PropDisplayName, Value: "user10031"},
		{Prop: events.PropEmail, Value: "user10031@example.test"}, {Prop: events.PropMobileDescription, Value: ""}}
	var body []byte
	for name, render := range map[string]func(){
		"multistatus": func() { body = Multistatus(href, found, []events.Prop{events.PropMobileState}, nil) },
		"lease": func() {
			body = LeaseMultistatus(href, events.Lease{Value: "online", Default: "offline", Timeout: 14400, ViewID: 1234567}, nil, nil)
		},
		"forbidden": func() { body = Multistatus(href, found[:1], nil, events.PrincipalProps()) },
	} {
		if n := testing.AllocsPerRun(20, render); n != want {
			t.Errorf("%s (%d bytes): %v allocations, want %v", name, len(body), n, want)
		}
	}
}

func FuzzReadAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Successful\r\nRVP-Notifications-Version: 0.2\r\n\r\n",
		"HTTP/1.1 200 Change Notification Accepted\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Length: 5\n\nhello",
		"HTTP/1.1 500 0\r\n\r\n",
		"HTTP/1.0 404\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ans, err := readAnswer(bufio.NewReader(strings.NewReader(string(raw))))
		if err == nil && (ans.Status < 100 || ans.Status > 999) {
			t.Fatalf("status %d", ans.Status)
		}
	})
}

var aclSeeds = []string{
	// librvp's first write: "allprincipals" as a principal.
	`<?xml version="1.0"?>` + "\n" + `<a:rvpacl xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal><a:rvp-principal>allprincipals</a:rvp-principal><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`,
	// The digest's example: mallory denied.
	`<?xml version="1.0"?><a:rvpacl xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal><a:rvp-principal>http://im.example.com/instmsg/aliases/mallory</a:rvp-principal><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant/><a:deny><a:send-to/><a:presence/></a:deny></a:ace><a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`,
	`<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:ace><a:principal><a:allprincipals/></a:principal><a:grant><a:all/></a:grant></a:ace></a:acl></a:rvpacl>`,
}

func TestParseACL(t *testing.T) {
	aces, err := ParseACL([]byte(aclSeeds[0]))
	if err != nil || len(aces) != 1 || aces[0].Principal != "" || !reflect.DeepEqual(aces[0].Grant, []string{"send-to", "presence"}) {
		t.Errorf("librvp ACL: %+v %v", aces, err)
	}
	aces, err = ParseACL([]byte(aclSeeds[1]))
	if err != nil || len(aces) != 2 || aces[0].Principal != "http://im.example.com/instmsg/aliases/mallory" || !reflect.DeepEqual(aces[0].Deny, []string{"send-to", "presence"}) {
		t.Errorf("digest ACL: %+v %v", aces, err)
	}
	if _, err := ParseACL([]byte(aclSeeds[2])); err == nil || !strings.Contains(err.Error(), "credentials not specified") {
		t.Errorf("ACE without credentials: %v", err)
	}
	// What ACL renders, ParseACL reads back.
	back, err := ParseACL(ACL(aces))
	if err != nil || !reflect.DeepEqual(back, aces) {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func FuzzParseACL(f *testing.F) {
	for _, s := range aclSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		aces, err := ParseACL(body)
		if err != nil {
			return
		}
		for _, a := range aces {
			if len(a.Credentials) == 0 {
				t.Fatal("an ACE without credentials was accepted")
			}
		}
		if err := wellFormed(ACL(aces)); err != nil {
			t.Fatalf("rendered ACL not well-formed: %v", err)
		}
	})
}

func TestWithSenderDescription(t *testing.T) {
	netrvp := "<?xml version=\"1.0\"?>\n<r:notification xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/'><r:message><r:notification-from><r:contact><d:href>http://127.0.0.1/instmsg/aliases/alice</d:href></r:contact></r:notification-from><r:notification-to><r:contact><d:href>http://127.0.0.1/instmsg/aliases/bob</d:href></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\r\nSession-Id: {X}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n<r:contact><d:href>x</d:href></r:contact> & ]]]]></r:mime-data></r:msgbody></r:message></r:notification>"
	got := string(WithSenderDescription([]byte(netrvp), "Alice & Co"))
	want := strings.Replace(netrvp, "aliases/alice</d:href></r:contact>", "aliases/alice</d:href><r:description>Alice &amp; Co</r:description></r:contact>", 1)
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := CheckNotification([]byte(got)); err != nil {
		t.Errorf("result not well-formed: %v", err)
	}
	withDesc := notificationSeeds[0]
	if string(WithSenderDescription([]byte(withDesc), "x")) != withDesc {
		t.Error("a body with a description was changed")
	}
}

// TestEscape: escape writes what xml.EscapeText writes, for text it
// copies as it is and for text that needs escaping.
func TestEscape(t *testing.T) {
	for _, s := range []string{"", "user1234", "http://im.example.test/instmsg/aliases/alice", "Ann & Bob", `a"b`, "a'b", "<x>", "tab\there",
		"line\nbreak", "cr\rhere", "\x00nul", "\x7fdel", "caf\u00e9", "\xff\xfe bad UTF-8", "\u2028", "~!@#$%^*()_+{}|:?-=[];,./"} {
		var want, got bytes.Buffer
		xml.EscapeText(&want, []byte(s))
		escape(&got, s)
		if got.String() != want.String() {
			t.Errorf("escape(%q) = %q, want %q", s, got.String(), want.String())
		}
	}
}

// TestParseACLRefusesEmptyPrincipal: an a:rvp-principal must name a
// principal or a server ("Null values are not permitted", S§5.7.2); an
// empty one was taken for a:allprincipals, so that an ACE denying one
// principal whose URL a client failed to fill in denied everyone.
func TestParseACLRefusesEmptyPrincipal(t *testing.T) {
	for _, p := range []string{`<a:rvp-principal/>`, `<a:rvp-principal></a:rvp-principal>`, "<a:rvp-principal>\n  </a:rvp-principal>"} {
		body := `<?xml version="1.0"?><a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal>` + p +
			`<a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant/><a:deny><a:send-to/><a:presence/></a:deny></a:ace></a:acl></a:rvpacl>`
		if aces, err := ParseACL([]byte(body)); err == nil {
			t.Errorf("%s: accepted as %+v (all principals: %v), want a 400", p, aces, len(aces) == 1 && aces[0].AllPrincipals())
		}
	}
	// librvp's word for all principals is still all principals.
	if aces, err := ParseACL([]byte(aclSeeds[0])); err != nil || len(aces) != 1 || !aces[0].AllPrincipals() {
		t.Errorf("librvp's allprincipals: %+v %v", aces, err)
	}
}

// TestPropNamesBounded: an answer echoes the name of every property a
// request names, its namespace URI included, but a namespace is declared
// once and named by its prefix: 4,000 <q:a/> under one 200 KB
// declaration, a 229 KB body, named 819 MB of properties, which the
// gateway encodes into its request event and a 207 would render. The
// names a PROPFIND or PROPPATCH echoes are bounded like the text of a
// body; what clients send is far below it.
func TestPropNamesBounded(t *testing.T) {
	ns := strings.Repeat("u", 200<<10)
	decl := ` xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:q="` + ns + `"`
	find := `<d:propfind` + decl + `><d:prop>` + strings.Repeat("<q:a/>", 4000) + `</d:prop></d:propfind>`
	if _, _, props, err := ParsePropFind([]byte(find)); err == nil {
		t.Errorf("PROPFIND of %d bytes accepted, naming %d bytes of properties", len(find), namesSize(props))
	}
	patch := `<d:propertyupdate` + decl + `><d:set><d:prop>` + strings.Repeat("<q:a>1</q:a>", 4000) + `</d:prop></d:set></d:propertyupdate>`
	if _, other, err := ParsePropertyUpdate([]byte(patch)); err == nil {
		var names []events.Prop
		for _, o := range other {
			names = append(names, o.Prop)
		}
		t.Errorf("PROPPATCH of %d bytes accepted, naming %d bytes of properties", len(patch), namesSize(names))
	}
	// A long namespace named a few times, and many short names, pass.
	few := `<d:propfind` + decl + `><d:prop><q:a/><q:b/><d:displayname/><r:state/></d:prop></d:propfind>`
	if _, _, props, err := ParsePropFind([]byte(strings.Replace(few, ns, strings.Repeat("u", 8<<10), 1))); err != nil || len(props) != 4 {
		t.Errorf("a few properties: %d %v", len(props), err)
	}
	many := `<d:propfind` + decl + `><d:prop>` + strings.Repeat("<d:displayname/>", 2000) + `</d:prop></d:propfind>`
	if _, _, props, err := ParsePropFind([]byte(strings.Replace(many, ns, "urn:x", 1))); err != nil || len(props) != 2000 {
		t.Errorf("2000 short names: %d %v", len(props), err)
	}
}

func namesSize(props []events.Prop) int {
	n := 0
	for _, p := range props {
		n += len(p.Space) + len(p.Local)
	}
	return n
}

// TestNamesMustBeXMLNames: encoding/xml reads the local part of a
// prefixed name starting with a digit, '-' or '.', which Namespaces in
// XML 1.0 (§3, NCName: a Name without colons) does not allow. <r:9/> as a state was accepted, stored, and sent to
// every watcher as <r:state><r:9/></r:state>, which expat (Net::RVP, which
// then dies without answering) and libxml2 (librvp) refuse. Such a body is
// not well-formed: 400.
func TestNamesMustBeXMLNames(t *testing.T) {
	state := func(s string) string {
		return `<d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop><r:state><r:leased-value><r:value><r:` + s +
			`/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>60</d:timeout></r:leased-value></r:state></d:prop></d:set></d:propertyupdate>`
	}
	for _, s := range []string{"9", "-x", "1online"} {
		if st, _, err := ParsePropertyUpdate([]byte(state(s))); err == nil {
			t.Errorf("state <r:%s/> accepted as %+v", s, st)
		}
	}
	// encoding/xml checks a prefixed name whole ("r:9" starts with a
	// letter), never its parts.
	for _, bad := range []string{
		`<d:propfind xmlns:d="DAV:"><d:allprop/><d:9a/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:"><d:allprop/><d:.a/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:"><d:allprop/><d:` + "\u00b7" + `a/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:"><d:allprop/><d:a:b/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:" d:9a="x"><d:allprop/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:" xmlns:9="urn:x"><d:allprop/></d:propfind>`,
	} {
		if _, _, props, err := ParsePropFind([]byte(bad)); err == nil {
			t.Errorf("accepted %s as %v", bad, props)
		}
	}
	// What clients send still parses, non-ASCII names included.
	for _, good := range []string{state("on-phone"), state("back-soon"), state("x9")} {
		if _, _, err := ParsePropertyUpdate([]byte(good)); err != nil {
			t.Errorf("refused: %v", err)
		}
	}
	if _, _, _, err := ParsePropFind([]byte(`<d:propfind xmlns:d="DAV:"><d:allprop/><d:x` + "\u00e9\u00b7" + `/></d:propfind>`)); err != nil {
		t.Errorf("non-ASCII name: %v", err)
	}
}

// TestByteOrderMark: a UTF-8 document may begin with a byte order mark
// (XML 1.0 §4.3.3, Appendix F), as Windows tools write it; it was taken
// for text outside the root element and the request refused with 400.
func TestByteOrderMark(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	if all, _, _, err := ParsePropFind([]byte(bom + propfindSeeds[1])); err != nil || !all {
		t.Errorf("PROPFIND with a BOM: %v %v", all, err)
	}
	if st, _, err := ParsePropertyUpdate([]byte(bom + proppatchSeeds[0])); err != nil || st == nil || st.Value != "online" {
		t.Errorf("PROPPATCH with a BOM: %+v %v", st, err)
	}
	if aces, err := ParseACL([]byte(bom + aclSeeds[0])); err != nil || len(aces) != 1 {
		t.Errorf("ACL with a BOM: %+v %v", aces, err)
	}
	// Only at the very start: elsewhere it is text.
	if _, _, _, err := ParsePropFind([]byte(propfindSeeds[1] + bom)); err == nil {
		t.Error("a BOM after the root element accepted")
	}
}

// TestDuplicateAttributes: an attribute may appear once in a start tag
// (XML 1.0 §3.1, Unique Att Spec; Namespaces in XML 1.0 §6.3 for the
// same expanded name by two prefixes). encoding/xml reads them all, and
// such a body, not well-formed, was accepted.
func TestDuplicateAttributes(t *testing.T) {
	for _, bad := range []string{
		`<d:propfind xmlns:d="DAV:" xmlns:d="urn:x"><d:allprop/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:" a="1" a="2"><d:allprop/></d:propfind>`,
		`<d:propfind xmlns:d="DAV:" xmlns:p="urn:x" xmlns:q="urn:x" p:a="1" q:a="2"><d:allprop/></d:propfind>`,
	} {
		if _, _, _, err := ParsePropFind([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	// The same local name in two namespaces is two attributes.
	if _, _, _, err := ParsePropFind([]byte(`<d:propfind xmlns:d="DAV:" xmlns:p="urn:p" a="1" p:a="2" d:a="3"><d:allprop/></d:propfind>`)); err != nil {
		t.Errorf("distinct attributes refused: %v", err)
	}
}

// TestManyAttributesLinear: a start tag with thousands of attributes (one
// twice, at the end) is refused in time linear in their number.
func TestManyAttributesLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<d:propfind xmlns:d="DAV:"`)
	for i := range 30000 {
		fmt.Fprintf(&b, ` a%d=""`, i)
	}
	b.WriteString(` a0=""><d:allprop/></d:propfind>`)
	start := time.Now()
	_, _, _, err := ParsePropFind([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("err %v, want the attribute named twice", err)
	}
	t.Logf("%d bytes refused in %s", b.Len(), time.Since(start))
}

// TestLatin1Body: a body that declares ISO-8859-1 (or windows-1252) is
// read in it: its non-ASCII bytes are characters, not invalid UTF-8.
func TestLatin1Body(t *testing.T) {
	for _, c := range []struct{ charset, raw, want string }{
		{"ISO-8859-1", "Caf\xe9", "Café"},
		{"latin1", "\xfcber", "über"},
		{"windows-1252", "\x80 5", "€ 5"},
	} {
		body := `<?xml version="1.0" encoding="` + c.charset + `"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop><r:mobile-description>` +
			c.raw + `</r:mobile-description></d:prop></d:set></d:propertyupdate>`
		_, other, err := ParsePropertyUpdate([]byte(body))
		if err != nil {
			t.Errorf("%s: %v", c.charset, err)
			continue
		}
		if len(other) != 1 || other[0].Value != c.want {
			t.Errorf("%s: read %+v, want %q", c.charset, other, c.want)
		}
	}
}
