package rvp

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// What the server writes from what clients send: a NOTIFY body is
// forwarded to other users' clients as it came (a message, another
// organisation's propnotification), so one that encoding/xml takes but
// libxml2 (librvp) or expat refuses, whole document and all, is one user
// breaking another's client; and what the server inserts into such a
// body, or writes into a header line, must keep it whole.

const (
	injRoot = `<r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/">`
	injFrom = `<r:notification-from><r:contact><d:href>http://im.example.test/instmsg/aliases/alice</d:href></r:contact></r:notification-from>`
	injTo   = `<r:notification-to><r:contact><d:href>http://im.example.test/instmsg/aliases/bob</d:href></r:contact></r:notification-to>`
	injBody = `<r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0` + "\r\n" + `Content-Type: text/plain; charset=UTF-8` + "\r\n\r\n" + `hi]]></r:mime-data></r:msgbody>`
)

// injMessage is a message from alice to bob; desc goes into the sender's
// contact, after its href.
func injMessage(decl, desc string) string {
	from := strings.Replace(injFrom, "</d:href>", "</d:href>"+desc, 1)
	return decl + injRoot + `<r:message>` + from + injTo + injBody + `</r:message></r:notification>`
}

// TestNotificationStrictParsersAccept: a NOTIFY body the server takes is
// one libxml2 and expat take. encoding/xml (and the scanner before it)
// took an XML declaration after white space or inside the document, one
// without its version or with its pseudo-attributes out of order,
// repeated or misspelt, a processing instruction whose target is "xml"
// in another case, and a character reference to a surrogate (read as
// U+FFFD): libxml2 gives no document for any of them ("XML declaration
// allowed only at the start of the document", "xmlParseCharRef: invalid
// xmlChar value 55296", ...), so librvp answers 400 Parse Error to a
// message the server said was delivered.
func TestNotificationStrictParsersAccept(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"declaration after white space", " " + injMessage(`<?xml version="1.0"?>`, "")},
		{"declaration after a line end", "\n" + injMessage(`<?xml version="1.0"?>`, "")},
		{"declaration inside the document", strings.Replace(injMessage("", ""), "<r:message>", `<?xml version="1.0"?><r:message>`, 1)},
		{"declaration without version", injMessage(`<?xml encoding="UTF-8"?>`, "")},
		{"empty declaration", injMessage(`<?xml ?>`, "")},
		{"bare declaration", injMessage(`<?xml?>`, "")},
		{"declaration out of order", injMessage(`<?xml encoding="UTF-8" version="1.0"?>`, "")},
		{"declaration with version twice", injMessage(`<?xml version="1.0" version="1.0"?>`, "")},
		{"declaration with a bad standalone", injMessage(`<?xml version="1.0" standalone="maybe"?>`, "")},
		{"declaration with an unknown pseudo-attribute", injMessage(`<?xml version="1.0" foo="bar"?>`, "")},
		{"declaration with a bad encoding name", injMessage(`<?xml version="1.0" encoding="-utf8"?>`, "")},
		{"upper-case xml target", strings.Replace(injMessage("", ""), "<r:message>", `<?XML x?><r:message>`, 1)},
		{"mixed-case xml target", strings.Replace(injMessage("", ""), "<r:message>", `<?xMl?><r:message>`, 1)},
		{"surrogate reference in text", injMessage("", `<r:description>a&#xD800;b</r:description>`)},
		{"low surrogate reference, decimal", injMessage("", `<r:description>&#57343;</r:description>`)},
		{"surrogate reference in an href", strings.Replace(injMessage("", ""), "aliases/bob<", "aliases/bob&#xdc00;<", 1)},
		{"surrogate reference in an attribute", strings.Replace(injMessage("", ""), "<r:message>", `<r:message x="&#xD83D;">`, 1)},
	} {
		if n, err := ParseNotification([]byte(tc.body)); err == nil {
			t.Errorf("%s: accepted (%+v), which libxml2 and expat refuse:\n%s", tc.name, n, tc.body)
		}
	}
	// What they do take is still taken.
	for _, tc := range []struct{ name, body string }{
		{"no declaration", injMessage("", "")},
		{"librvp's declaration", injMessage(`<?xml version="1.0" encoding="UTF-8"?>`+"\n", "")},
		{"single quotes, standalone, spaces", injMessage(`<?xml version = '1.0'  encoding='utf-8' standalone='yes' ?>`, "")},
		{"Latin-1", injMessage(`<?xml version="1.0" encoding="ISO-8859-1"?>`, "<r:description>Jos\xe9</r:description>")},
		{"white space after the declaration", injMessage(`<?xml version="1.0"?>`+"\r\n\t ", "")},
		{"byte order mark", "\xef\xbb\xbf" + injMessage(`<?xml version="1.0"?>`, "")},
		{"another instruction named xml-something", strings.Replace(injMessage("", ""), "<r:message>", `<?xml-stylesheet href="a"?><r:message>`, 1)},
		{"character references to characters", injMessage("", `<r:description>&#xD7FF;&#xE000;&#xFFFD;&#x10000;&#65;</r:description>`)},
		{"a surrogate reference's text in CDATA", strings.Replace(injMessage("", ""), "hi]]>", "&#xD800; hi]]>", 1)},
		{"a surrogate reference's text in a comment", strings.Replace(injMessage("", ""), "<r:message>", "<!-- &#xD800; --><r:message>", 1)},
		{"an attribute holding > and &amp;", strings.Replace(injMessage("", ""), "<r:message>", `<r:message x='>&amp;#xD800;'>`, 1)},
	} {
		if _, err := ParseNotification([]byte(tc.body)); err != nil {
			t.Errorf("%s: refused: %v\n%s", tc.name, err, tc.body)
		}
	}
}

// senderContactAsMirandaReads returns the children's names (prefixed, as
// written) of the contact Miranda takes for a message's sender: the first
// r:contact of the first r:notification-from of the root's r:message,
// names compared as written (Miranda's XML is prefix-literal). ok is
// false when there is none.
func senderContactAsMirandaReads(t *testing.T, body []byte) (children []string, ok bool) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	d.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	want := []string{"", "r:message", "r:notification-from", "r:contact"}
	var path []string // names of the open elements
	matched := 0      // how many of path are the elements wanted
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			return nil, false
		}
		if err != nil {
			t.Fatalf("%v in\n%s", err, body)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			name := tk.Name.Local
			if tk.Name.Space != "" {
				name = tk.Name.Space + ":" + name
			}
			if len(path) == matched && matched < len(want) && (matched == 0 || name == want[matched]) {
				matched++
			} else if matched == len(want) && len(path) == matched {
				children = append(children, name)
			}
			path = append(path, name)
		case xml.EndElement:
			if len(path) == matched && matched > 0 {
				if matched == len(want) {
					return children, true
				}
				return nil, false // the first of the path ended without the rest
			}
			path = path[:len(path)-1]
		}
	}
}

// cdataOf returns the CDATA sections of body, in order.
func cdataOf(body string) []string {
	var out []string
	for {
		i := strings.Index(body, "<![CDATA[")
		if i < 0 {
			return out
		}
		body = body[i+len("<![CDATA["):]
		j := strings.Index(body, "]]>")
		out = append(out, body[:j])
		body = body[j:]
	}
}

// TestSenderDescriptionWhereMirandaReadsIt: the description the home
// server gives a message's sender (Miranda dereferences it without a
// check) goes into the contact Miranda reads, however the body is laid
// out, and nowhere else. Found by its literal spelling, it went into the
// first text that spelled it: message text in a CDATA section or a
// comment put before the sender (the message a user reads changed, the
// sender's contact left without one for Miranda to crash on; a name with
// "--" in it, as another organisation's alias may be, made the comment,
// and the whole NOTIFY, malformed); and a sender spelled with white
// space or another element after its href was left without one.
func TestSenderDescriptionWhereMirandaReadsIt(t *testing.T) {
	decoy := `<r:notification-from><r:contact><d:href>http://im.example.test/instmsg/aliases/carol</d:href></r:contact>`
	msg := func(before, from string) string {
		return `<?xml version="1.0"?>` + injRoot + before + `<r:message>` + from + injTo + injBody + `</r:message></r:notification>`
	}
	for _, tc := range []struct{ name, body string }{
		{"as Net::RVP writes it", msg("", injFrom)},
		{"white space after the href", msg("", strings.Replace(injFrom, "</d:href>", "</d:href>\n  ", 1))},
		{"pretty-printed", msg("", strings.NewReplacer("<r:contact>", "\n  <r:contact>\n    ", "</r:contact>", "\n  </r:contact>\n").Replace(injFrom))},
		{"another element after the href", msg("", strings.Replace(injFrom, "</d:href>", "</d:href><r:x/>", 1))},
		{"an attribute on the contact", msg("", strings.Replace(injFrom, "<r:contact>", `<r:contact x="1">`, 1))},
		{"the text of the message first, spelling a sender", `<?xml version="1.0"?>` + injRoot + `<r:message>` +
			strings.Replace(injBody, "hi]]>", "hi "+decoy+"]]>", 1) + injFrom + injTo + `</r:message></r:notification>`},
		{"a comment first, spelling a sender", msg("<!--"+decoy+"-->", injFrom)},
		{"an instruction first, spelling a sender", msg("<?note "+decoy+"?>", injFrom)},
	} {
		for _, name := range []string{"Alice & Co", "al--ice", "x]]>y", "a?>b"} {
			out := WithSenderDescription([]byte(tc.body), name)
			if _, err := CheckNotification(out); err != nil {
				t.Errorf("%s, %q: the body sent is malformed: %v\n%s", tc.name, name, err, out)
				continue
			}
			children, ok := senderContactAsMirandaReads(t, out)
			if !ok || !strings.Contains(strings.Join(children, " "), "r:description") {
				t.Errorf("%s, %q: the sender's contact Miranda reads holds %q, no r:description:\n%s", tc.name, name, children, out)
			}
			if got, want := cdataOf(string(out)), cdataOf(tc.body); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
				t.Errorf("%s, %q: the message's text changed: %q, sent as %q", tc.name, name, got, want)
			}
			if c := strings.Count(string(out), "<r:description>"); c != 1 {
				t.Errorf("%s, %q: %d descriptions inserted:\n%s", tc.name, name, c, out)
			}
		}
	}
	// A sender with a description keeps it, and nothing is added,
	// whatever is around it.
	for _, body := range []string{
		msg("", strings.Replace(injFrom, "</d:href>", "</d:href><r:description>A</r:description>", 1)),
		msg("", strings.Replace(injFrom, "</d:href>", "</d:href>\n<r:description/>\n", 1)),
		msg("", strings.Replace(injFrom, "</d:href>", "</d:href><r:x/><r:description>A</r:description>", 1)),
	} {
		if out := WithSenderDescription([]byte(body), "x"); string(out) != body {
			t.Errorf("a described sender changed:\n%s\nto\n%s", body, out)
		}
	}
	// Nothing Miranda would read as a sender: left as it is.
	for _, body := range []string{
		`<?xml version="1.0"?><D:notification><R:message/></D:notification>`,
		strings.ReplaceAll(msg("", injFrom), "r:", "x:"),
	} {
		if out := WithSenderDescription([]byte(body), "x"); string(out) != body {
			t.Errorf("changed:\n%s\nto\n%s", body, out)
		}
	}
}

// TestHeaderValuesHoldNoControlCharacters: a header value the server
// writes (its own answers, NOTIFYs to Call-Backs, what it relays of
// another organisation's answer: Location, Content-Type, Subscription-Id
// and Subscription-Lifetime, read by readAnswer without a check) holds
// no control character but tab. Line breaks became spaces; NUL, ESC and
// the rest were written as they came, into a header that librvp and
// Miranda read as C strings.
func TestHeaderValuesHoldNoControlCharacters(t *testing.T) {
	// Another organisation's answer, as readAnswer reads it.
	ans, err := readFinalAnswer(bufio.NewReader(strings.NewReader(
		"HTTP/1.1 302 Moved\r\nLocation: http://im.acme.example/a\x00b\x1b[2Jc\rd\x7fe\r\nContent-Type: text/xml\x0bx\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	resp := &Response{Status: ans.Status}
	resp.Set(HdrLocation, ans.Header.Get(HdrLocation))
	resp.Set(HdrContentType, ans.Header.Get(HdrContentType))
	resp.Set("X-Tab", "a\tb")
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := resp.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(b.String(), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n") {
		if i := strings.IndexFunc(line, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }); i >= 0 {
			t.Errorf("header line %q holds %q", line, line[i])
		}
	}
	if !strings.Contains(head, "\r\nX-Tab: a\tb\r\n") {
		t.Errorf("a tab was not kept:\n%q", head)
	}
	if !strings.Contains(head, "\r\nLocation: http://im.acme.example/a b [2Jc d e\r\n") {
		t.Errorf("Location not written with spaces for its control characters:\n%q", head)
	}
}

// FuzzSenderDescription: whatever body the gateway takes, the body sent
// on is one it takes too, its CDATA as it was, and it differs from it by
// one description at most, inserted whole.
func FuzzSenderDescription(f *testing.F) {
	for _, s := range notificationSeeds {
		f.Add([]byte(s), "Alice")
	}
	f.Add([]byte(injMessage(`<?xml version="1.0"?>`, "")), "al--ice")
	f.Add([]byte(injMessage("", "\n ")), "x]]>y")
	f.Add([]byte(strings.Replace(injMessage("", ""), "<r:message>", "<!--<r:notification-from><r:contact><d:href>x</d:href></r:contact>--><r:message>", 1)), "a")
	f.Fuzz(func(t *testing.T, body []byte, name string) {
		if _, err := CheckNotification(body); err != nil {
			return
		}
		out := WithSenderDescription(body, name)
		if bytes.Equal(out, body) {
			return
		}
		if _, err := CheckNotification(out); err != nil {
			t.Fatalf("%q became %q: %v", body, out, err)
		}
		var esc bytes.Buffer
		escape(&esc, name)
		ins := "<r:description>" + esc.String() + "</r:description>"
		i := 0
		for i < len(body) && body[i] == out[i] {
			i++
		}
		inserted := false
		for p := i; p >= max(0, i-len(ins)) && !inserted; p-- {
			inserted = len(out) == len(body)+len(ins) && string(out[p:p+len(ins)]) == ins && bytes.Equal(out[p+len(ins):], body[p:])
		}
		if !inserted {
			t.Fatalf("%q became %q", body, out)
		}
		if got, want := cdataOf(string(out)), cdataOf(string(body)); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("the CDATA of %q changed: %q", body, got)
		}
	})
}
