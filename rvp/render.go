package rvp

import (
	"bytes"
	"encoding/xml"
	"strconv"

	"github.com/rvp-im/rvpd/events"
)

// Documents are rendered by hand, compactly (no whitespace between
// elements: librvp's multistatus parser takes text nodes for elements), with
// the literal prefixes d:, r: and a: declared on the root, as Exchange did.
// encoding/xml's encoder would invent prefixes of its own.

const (
	xmlDecl = `<?xml version="1.0"?>`
	nsDecl  = ` xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/' xmlns:a='http://schemas.microsoft.com/rvp/acl/'`
)

// nsXML is the namespace of the reserved prefix xml: bound to it by
// definition, it may be declared with no other prefix (Namespaces in XML
// 1.0 §3).
const nsXML = "http://www.w3.org/XML/1998/namespace"

var prefixes = map[string]string{events.NSDAV: "d", events.NSRVP: "r", events.NSACL: "a", nsXML: "xml"}

func escape(b *bytes.Buffer, s string) {
	// Printable ASCII but for what XML escapes is written as it is,
	// without the copy xml.EscapeText's []byte takes.
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\'', c == '&', c == '<', c == '>':
			// Through a buffer of its own: b given to EscapeText as an
			// io.Writer would move every render's buffer to the heap.
			var esc bytes.Buffer
			xml.EscapeText(&esc, []byte(s))
			b.Write(esc.Bytes())
			return
		}
	}
	b.WriteString(s)
}

// openProp writes the start tag of p; for a namespace without a customary
// prefix it declares one on the element.
func openProp(b *bytes.Buffer, p events.Prop, empty bool) {
	b.WriteByte('<')
	switch pre, ok := prefixes[p.Space]; {
	case ok:
		b.WriteString(pre + ":" + p.Local)
	case p.Space == "":
		b.WriteString(p.Local)
	default:
		b.WriteString("x:" + p.Local + ` xmlns:x="`)
		escape(b, p.Space)
		b.WriteByte('"')
	}
	if empty {
		b.WriteByte('/')
	}
	b.WriteByte('>')
}

func closeProp(b *bytes.Buffer, p events.Prop) {
	b.WriteString("</")
	switch pre, ok := prefixes[p.Space]; {
	case ok:
		b.WriteString(pre + ":" + p.Local)
	case p.Space == "":
		b.WriteString(p.Local)
	default:
		b.WriteString("x:" + p.Local)
	}
	b.WriteByte('>')
}

// writeState writes r:state holding the bare state element; without a
// state (the answer to d:propname names the property only) it writes an
// empty <r:state/>: "<r:/>" is no name, and expat and libxml2 refuse it.
func writeState(b *bytes.Buffer, state string) {
	if state == "" {
		b.WriteString("<r:state/>")
		return
	}
	b.WriteString("<r:state><r:")
	b.WriteString(state)
	b.WriteString("/></r:state>")
}

func writePropStat(b *bytes.Buffer, status int, fn func()) {
	b.WriteString("<d:propstat><d:prop>")
	fn()
	b.WriteString("</d:prop><d:status>HTTP/1.1 ")
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(status), 10))
	b.WriteByte(' ')
	b.WriteString(ReasonPhrase(status))
	b.WriteString("</d:status></d:propstat>")
}

// Multistatus renders a 207 body for one node: found properties in a 200
// propstat, then missing ones in a 404 propstat and forbidden ones in a 403
// propstat, each only when not empty. r:state is rendered bare.
func Multistatus(href string, found []events.PropValue, missing, forbidden []events.Prop) []byte {
	var b bytes.Buffer
	// One allocation for the body (the answer to each buddy's SUBSCRIBE
	// is one), not one for each time the buffer doubled from 64 bytes.
	b.Grow(300 + len(href) + propValuesLen(found) + propsLen(missing) + propsLen(forbidden))
	b.WriteString(xmlDecl + "<d:multistatus" + nsDecl + "><d:response><d:href>")
	escape(&b, href)
	b.WriteString("</d:href>")
	if len(found) > 0 || len(missing)+len(forbidden) == 0 {
		writePropStat(&b, StatusOK, func() {
			for _, pv := range found {
				if pv.Prop == events.PropState {
					writeState(&b, pv.Value)
					continue
				}
				openProp(&b, pv.Prop, false)
				escape(&b, pv.Value)
				closeProp(&b, pv.Prop)
			}
		})
	}
	for _, set := range []struct {
		status int
		props  []events.Prop
	}{{StatusNotFound, missing}, {StatusForbidden, forbidden}} {
		if len(set.props) == 0 {
			continue
		}
		writePropStat(&b, set.status, func() {
			for _, p := range set.props {
				openProp(&b, p, true)
			}
		})
	}
	b.WriteString("</d:response></d:multistatus>")
	return b.Bytes()
}

// LeaseMultistatus renders the 207 answer to a PROPPATCH of r:state: the
// granted lease echoed in leased form, with the view id after it, the
// other properties set beside it, and those refused in a 403 propstat.
func LeaseMultistatus(href string, l events.Lease, set []events.PropValue, forbidden []events.Prop) []byte {
	var b bytes.Buffer
	b.Grow(500 + len(href) + len(l.Value) + len(l.Default) + propValuesLen(set) + propsLen(forbidden))
	b.WriteString(xmlDecl + "<d:multistatus" + nsDecl + "><d:response><d:href>")
	escape(&b, href)
	b.WriteString("</d:href>")
	writePropStat(&b, StatusOK, func() {
		b.WriteString("<r:state><r:leased-value><r:value><r:")
		b.WriteString(l.Value)
		b.WriteString("/></r:value><r:default-value><r:")
		b.WriteString(l.Default)
		b.WriteString("/></r:default-value><d:timeout>")
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(l.Timeout), 10))
		b.WriteString("</d:timeout></r:leased-value><r:view-id>")
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(l.ViewID), 10))
		b.WriteString("</r:view-id></r:state>")
		for _, pv := range set {
			openProp(&b, pv.Prop, false)
			escape(&b, pv.Value)
			closeProp(&b, pv.Prop)
		}
	})
	if len(forbidden) > 0 {
		writePropStat(&b, StatusForbidden, func() {
			for _, p := range forbidden {
				openProp(&b, p, true)
			}
		})
	}
	b.WriteString("</d:response></d:multistatus>")
	return b.Bytes()
}

// propValuesLen is about what the elements of pvs take, with their
// values.
func propValuesLen(pvs []events.PropValue) int {
	n := 0
	for _, pv := range pvs {
		n += 24 + 2*len(pv.Local) + len(pv.Space) + len(pv.Value)
	}
	return n
}

// propsLen is about what a propstat of the empty elements of props
// takes, its status included.
func propsLen(props []events.Prop) int {
	if len(props) == 0 {
		return 0
	}
	n := 100
	for _, p := range props {
		n += 16 + len(p.Local) + len(p.Space)
	}
	return n
}

// Contact is a principal named in a notification: its URL as the receiver
// knows it, and a display name (omitted when empty).
type Contact struct {
	Href        string
	Description string
}

func writeContact(b *bytes.Buffer, tag string, c Contact) {
	b.WriteString("<r:")
	b.WriteString(tag)
	b.WriteString("><r:contact><d:href>")
	escape(b, c.Href)
	b.WriteString("</d:href>")
	if c.Description != "" {
		b.WriteString("<r:description>")
		escape(b, c.Description)
		b.WriteString("</r:description>")
	}
	b.WriteString("</r:contact></r:")
	b.WriteString(tag)
	b.WriteByte('>')
}

// PropNotification renders the NOTIFY body that tells a watcher a node's
// state: the bare state element is the first child of r:state, which every
// client reads.
func PropNotification(from, to Contact, state string) []byte {
	var b bytes.Buffer
	// One allocation of about the body's size (some 520 bytes and the
	// contacts), not five as the buffer grows: a sign-in with a buddy
	// list renders one for each buddy.
	b.Grow(560 + len(from.Href) + len(from.Description) + len(to.Href) + len(to.Description) + len(state))
	b.WriteString(xmlDecl + "<r:notification" + nsDecl + "><r:propnotification>")
	writeContact(&b, "notification-from", from)
	writeContact(&b, "notification-to", to)
	b.WriteString("<d:propertyupdate><d:set><d:prop>")
	writeState(&b, state)
	b.WriteString("</d:prop></d:set></d:propertyupdate></r:propnotification></r:notification>")
	return b.Bytes()
}

// Subscriptions renders a SUBSCRIPTIONS answer; an empty list is an empty
// r:subscriptions element.
func Subscriptions(subs []events.SubscriptionInfo) []byte {
	var b bytes.Buffer
	b.WriteString(xmlDecl + "<r:subscriptions" + nsDecl)
	if len(subs) == 0 {
		b.WriteString("/>")
		return b.Bytes()
	}
	b.WriteString(">")
	for _, s := range subs {
		b.WriteString("<r:subscription><r:subscription-id>")
		b.WriteString(strconv.Itoa(int(s.ID)))
		b.WriteString("</r:subscription-id><d:href>")
		escape(&b, s.Href)
		b.WriteString("</d:href><a:principal><a:rvp-principal>")
		escape(&b, s.Principal)
		b.WriteString("</a:rvp-principal></a:principal><d:timeout>")
		b.WriteString(strconv.Itoa(s.Timeout))
		b.WriteString("</d:timeout></r:subscription>")
	}
	b.WriteString("</r:subscriptions>")
	return b.Bytes()
}

// ACL renders an a:rvpacl document.
func ACL(aces []events.ACE) []byte {
	var b bytes.Buffer
	b.WriteString(xmlDecl + "<a:rvpacl" + nsDecl + "><a:acl><a:inheritance>none</a:inheritance>")
	for _, ace := range aces {
		b.WriteString("<a:ace><a:principal>")
		if ace.Principal == "" {
			b.WriteString("<a:allprincipals/>")
		} else {
			b.WriteString("<a:rvp-principal>")
			escape(&b, ace.Principal)
			b.WriteString("</a:rvp-principal>")
		}
		b.WriteString("<a:credentials>")
		for _, c := range ace.Credentials {
			b.WriteString("<a:" + c + "/>")
		}
		b.WriteString("</a:credentials></a:principal>")
		for _, set := range []struct {
			tag    string
			rights []string
		}{{"grant", ace.Grant}, {"deny", ace.Deny}} {
			if len(set.rights) == 0 {
				b.WriteString("<a:" + set.tag + "/>")
				continue
			}
			b.WriteString("<a:" + set.tag + ">")
			for _, r := range set.rights {
				b.WriteString("<a:" + r + "/>")
			}
			b.WriteString("</a:" + set.tag + ">")
		}
		b.WriteString("</a:ace>")
	}
	b.WriteString("</a:acl></a:rvpacl>")
	return b.Bytes()
}

// WithSenderDescription returns a message body whose sender's contact
// has an r:description: Net::RVP sends none, and Miranda dereferences it
// without a check. The contact is the one Miranda reads, by names as
// written: the first r:contact of the first r:notification-from of the
// root's r:message (or r:propnotification); the description is inserted
// by text before its end tag, when it has none. Everything else, the
// CDATA above all, is left byte for byte: a CDATA section, a comment or
// an instruction that spells a contact is no contact. The original is
// returned when nothing is inserted. body is one the gateway checked
// (ParseNotification).
func WithSenderDescription(body []byte, name string) []byte {
	at := senderContactEnd(body)
	if at < 0 {
		return body
	}
	var b bytes.Buffer
	b.Grow(len(body) + len(name) + 40)
	b.Write(body[:at])
	b.WriteString("<r:description>")
	escape(&b, name)
	b.WriteString("</r:description>")
	b.Write(body[at:])
	return b.Bytes()
}

// senderContactEnd returns the offset of the end tag of the sender's
// contact WithSenderDescription describes, or -1 when there is none or
// it has an r:description already.
func senderContactEnd(body []byte) int {
	// depth is the number of elements open; matched how many of them
	// are the root and the elements wanted under it, in turn.
	depth, matched := 0, 0
	for i := 0; i < len(body); {
		kind, end := nextSpan(body, i)
		if end < 0 {
			return -1
		}
		switch kind {
		case spanStart:
			tag := body[i+1 : end-1]
			empty := bytes.HasSuffix(tag, []byte("/"))
			name := tag
			if k := bytes.IndexAny(tag, " \t\r\n/"); k >= 0 {
				name = tag[:k]
			}
			if depth == matched {
				switch n := string(name); {
				case matched == 0, matched == 1 && (n == "r:message" || n == "r:propnotification"), matched == 2 && n == "r:notification-from", matched == 3 && n == "r:contact":
					if empty {
						return -1
					}
					matched++
				case matched == 4 && n == "r:description":
					return -1
				}
			}
			if !empty {
				depth++
			}
		case spanEnd:
			if depth == matched && matched > 0 {
				// The first of the elements wanted ends: Miranda reads
				// no other.
				if matched == 4 {
					return i
				}
				return -1
			}
			depth--
		}
		i = end
	}
	return -1
}
