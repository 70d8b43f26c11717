package rvp

import (
	"bytes"
	"encoding/xml"
	"strings"
	"unicode/utf8"

	"github.com/rvp-im/rvpd/events"
)

// scanXML reads the XML RVP clients send without encoding/xml, into the
// tree parseXML would make: UTF-8, at most the declaration librvp and
// Messenger put first, elements with ASCII names, attributes with plain
// ASCII values (the namespace declarations), text with the five
// predefined entities, and CDATA (every message's MIME part).
//
// Everything else — comments, processing instructions, character
// references, a DOCTYPE, non-ASCII names, other encodings — and anything
// malformed or over parseXML's bounds it leaves to encoding/xml: ok is
// false. So a document it accepts is one encoding/xml accepts, with the
// same tree (FuzzScanXML compares the two), and every error a client
// reads comes from one place. encoding/xml's tokens cost about as much
// CPU as the rest of a message's decision; this is one pass without
// them.
func scanXML(s []byte) (root *node, ok bool) {
	i := 0
	if bytes.HasPrefix(s, []byte("<?xml")) {
		end := bytes.Index(s, []byte("?>"))
		if end < 0 || !plainDeclaration(s[len("<?xml"):end]) {
			return nil, false
		}
		i = end + len("?>")
	}
	type open struct {
		n     *node
		raw   []byte // the name as written, for the end tag
		binds int    // the namespace bindings in scope outside it
	}
	var (
		stack       []open
		binds       []nsBinding
		count, text int
		attrs       [8]rawAttr
	)
	for i < len(s) {
		if s[i] != '<' {
			if len(stack) == 0 {
				// Only white space may stand outside the root.
				if !isXMLSpace(s[i]) {
					return nil, false
				}
				i++
				continue
			}
			n, next, ok := scanText(s, i, &stack[len(stack)-1].n.text, false)
			if !ok {
				return nil, false
			}
			if text += n; text > maxXMLText {
				return nil, false
			}
			i = next
			continue
		}
		if i+1 >= len(s) {
			return nil, false
		}
		switch s[i+1] {
		case '/':
			if len(stack) == 0 {
				return nil, false
			}
			name, j := scanName(s, i+2)
			if j < 0 {
				return nil, false
			}
			for j < len(s) && isXMLSpace(s[j]) {
				j++
			}
			top := stack[len(stack)-1]
			if j >= len(s) || s[j] != '>' || !bytes.Equal(name, top.raw) {
				return nil, false
			}
			binds = binds[:top.binds]
			stack = stack[:len(stack)-1]
			i = j + 1
		case '!':
			const cdataOpen, cdataEnd = "<![CDATA[", "]]>"
			if len(stack) == 0 || !bytes.HasPrefix(s[i:], []byte(cdataOpen)) {
				return nil, false
			}
			data := s[i+len(cdataOpen):]
			k := bytes.Index(data, []byte(cdataEnd))
			if k < 0 {
				return nil, false
			}
			n, _, ok := scanText(data[:k], 0, &stack[len(stack)-1].n.text, true)
			if !ok {
				return nil, false
			}
			if text += n; text > maxXMLText {
				return nil, false
			}
			i += len(cdataOpen) + k + len(cdataEnd)
		case '?':
			return nil, false
		default:
			if root != nil && len(stack) == 0 {
				return nil, false // a second root: encoding/xml says so
			}
			if count++; count > maxXMLNodes || len(stack) >= maxXMLDepth {
				return nil, false
			}
			raw, j := scanName(s, i+1)
			if j < 0 {
				return nil, false
			}
			as, empty, next := scanAttrs(s, j, attrs[:0])
			if next < 0 {
				return nil, false
			}
			mark := len(binds)
			for _, a := range as {
				prefix, local := splitName(a.name)
				switch {
				case prefix == "xmlns":
					if local == "xml" || local == "xmlns" {
						return nil, false
					}
				case prefix == "" && local == "xmlns":
					local = ""
				default:
					continue
				}
				binds = append(binds, nsBinding{prefix: local, space: a.value})
			}
			if len(binds) > maxScanBindings {
				// Names are looked up along the bindings in scope: a
				// document declaring hundreds would make that a cost
				// encoding/xml's map does not have.
				return nil, false
			}
			prefix, local := splitName(raw)
			if prefix == "xml" || prefix == "xmlns" || prefix == "" && local == "xmlns" {
				return nil, false
			}
			space, bound := lookupNS(binds, prefix)
			if !bound {
				space = prefix // encoding/xml keeps an undeclared prefix
			}
			start := xml.StartElement{Name: xml.Name{Space: space, Local: local}}
			if len(as) > 0 {
				start.Attr = make([]xml.Attr, len(as))
				for k, a := range as {
					start.Attr[k] = xml.Attr{Name: attrName(a.name, binds), Value: a.value}
				}
			}
			// The tag as encoding/xml would give it, checked as decodeXML
			// checks its tags.
			if checkStart(start) != nil {
				return nil, false
			}
			n := &node{name: propName(start.Name)}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1].n
				p.children = append(p.children, n)
			}
			if empty {
				binds = binds[:mark]
			} else {
				stack = append(stack, open{n: n, raw: raw, binds: mark})
			}
			i = next
		}
	}
	if root == nil || len(stack) > 0 {
		return nil, false
	}
	return root, true
}

type nsBinding struct{ prefix, space string }

// maxScanBindings bounds the namespace bindings in scope scanXML takes:
// clients declare three.
const maxScanBindings = 64

// lookupNS finds the namespace prefix stands for, the innermost binding
// first; "" is the default namespace.
func lookupNS(binds []nsBinding, prefix string) (string, bool) {
	for i := len(binds) - 1; i >= 0; i-- {
		if binds[i].prefix == prefix {
			return binds[i].space, true
		}
	}
	return "", prefix == "" // no default namespace: none
}

type rawAttr struct {
	name  []byte
	value string
}

// scanAttrs reads a start tag's attributes from s[i:], up to and past its
// > or />, appending them to as. next is -1 for what it does not read.
func scanAttrs(s []byte, i int, as []rawAttr) (_ []rawAttr, empty bool, next int) {
	for {
		j := i
		for j < len(s) && isXMLSpace(s[j]) {
			j++
		}
		if j >= len(s) {
			return nil, false, -1
		}
		switch s[j] {
		case '>':
			return as, false, j + 1
		case '/':
			if j+1 < len(s) && s[j+1] == '>' {
				return as, true, j + 2
			}
			return nil, false, -1
		}
		if j == i || len(as) == 32 {
			return nil, false, -1 // no space before the attribute; or a great many
		}
		name, k := scanName(s, j)
		if k < 0 {
			return nil, false, -1
		}
		for k < len(s) && isXMLSpace(s[k]) {
			k++
		}
		if k >= len(s) || s[k] != '=' {
			return nil, false, -1
		}
		k++
		for k < len(s) && isXMLSpace(s[k]) {
			k++
		}
		if k >= len(s) || s[k] != '"' && s[k] != '\'' {
			return nil, false, -1
		}
		quote := s[k]
		start := k + 1
		k = start
		for k < len(s) && s[k] != quote {
			// Values taken as they are written: no reference, no line
			// end to normalise, nothing outside printable ASCII.
			if c := s[k]; c < 0x20 || c > 0x7e || c == '<' || c == '&' {
				return nil, false, -1
			}
			k++
		}
		if k >= len(s) {
			return nil, false, -1
		}
		as = append(as, rawAttr{name: name, value: intern(s[start:k])})
		i = k + 1
	}
}

// attrName is an attribute's name translated as encoding/xml translates
// it: unprefixed attributes are in no namespace, declarations keep their
// prefix, and an undeclared prefix stays as it is.
func attrName(name []byte, binds []nsBinding) xml.Name {
	prefix, local := splitName(name)
	switch prefix {
	case "", "xmlns":
		return xml.Name{Space: prefix, Local: local}
	case "xml":
		return xml.Name{Space: nsXML, Local: local}
	}
	if ns, ok := lookupNS(binds, prefix); ok {
		return xml.Name{Space: ns, Local: local}
	}
	return xml.Name{Space: prefix, Local: local}
}

// scanName reads a name at s[i]: an NCName of ASCII letters, digits and
// ._- not starting with a digit, '.' or '-', optionally prefixed by
// another and a colon. It returns the index after it, or -1 where the
// name is anything else (encoding/xml reads further, and decides).
func scanName(s []byte, i int) ([]byte, int) {
	start := i
	for part := 0; ; part++ {
		if i >= len(s) || !isNameStart(s[i]) {
			return nil, -1
		}
		i++
		for i < len(s) && (isNameStart(s[i]) || '0' <= s[i] && s[i] <= '9' || s[i] == '.' || s[i] == '-') {
			i++
		}
		if i < len(s) && s[i] == ':' && part == 0 {
			i++
			continue
		}
		if i < len(s) && (s[i] == ':' || s[i] >= utf8.RuneSelf) {
			return nil, -1
		}
		return s[start:i], i
	}
}

func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// splitName splits a name scanName read at its colon.
func splitName(name []byte) (prefix, local string) {
	if i := bytes.IndexByte(name, ':'); i >= 0 {
		return intern(name[:i]), intern(name[i+1:])
	}
	return "", intern(name)
}

// intern returns the protocol's own names and namespaces without
// allocating them again for every document.
func intern(b []byte) string {
	switch string(b) {
	case "d":
		return "d"
	case "r":
		return "r"
	case "a":
		return "a"
	case "xmlns":
		return "xmlns"
	case "notification":
		return "notification"
	case "message":
		return "message"
	case "propnotification":
		return "propnotification"
	case "notification-from":
		return "notification-from"
	case "notification-to":
		return "notification-to"
	case "contact":
		return "contact"
	case "href":
		return "href"
	case "description":
		return "description"
	case "msgbody":
		return "msgbody"
	case "mime-data":
		return "mime-data"
	case "propertyupdate":
		return "propertyupdate"
	case "set":
		return "set"
	case "prop":
		return "prop"
	case "state":
		return "state"
	case "leased-value":
		return "leased-value"
	case "value":
		return "value"
	case "default-value":
		return "default-value"
	case "timeout":
		return "timeout"
	case "view-id":
		return "view-id"
	case events.NSDAV:
		return events.NSDAV
	case events.NSRVP:
		return events.NSRVP
	case events.NSACL:
		return events.NSACL
	}
	return string(b)
}

// plainDeclaration reports whether decl, what stands between <?xml and
// ?>, is a declaration of version 1.0 in UTF-8, as XML 1.0 §2.8 writes
// it (readDeclaration).
func plainDeclaration(decl []byte) bool {
	enc, ok := readDeclaration(decl)
	return ok && (enc == "" || strings.EqualFold(enc, "utf-8"))
}

// readDeclaration reads decl, what stands between <?xml and ?>, as XML
// 1.0 §2.8 has it: white space, version="1.0", then optionally encoding
// and standalone, in that order, each once, and optional white space;
// it returns the encoding named, if any. encoding/xml reads the two it
// wants wherever they are, and takes a declaration without them; expat
// and libxml2 refuse the whole document for anything else.
func readDeclaration(decl []byte) (encoding string, ok bool) {
	s := string(decl)
	v, s, ok := pseudoAttr(s, "version")
	if !ok || v != "1.0" {
		return "", false
	}
	if e, rest, ok := pseudoAttr(s, "encoding"); ok {
		if !encName(e) {
			return "", false
		}
		encoding, s = e, rest
	}
	if sd, rest, ok := pseudoAttr(s, "standalone"); ok {
		if sd != "yes" && sd != "no" {
			return "", false
		}
		s = rest
	}
	return encoding, strings.TrimLeft(s, " \t\r\n") == ""
}

// pseudoAttr reads white space, name, '=' (white space around it) and a
// quoted value at the start of s: the value and what follows it.
func pseudoAttr(s, name string) (value, rest string, ok bool) {
	t := strings.TrimLeft(s, " \t\r\n")
	if len(t) == len(s) || !strings.HasPrefix(t, name) {
		return "", s, false
	}
	t = strings.TrimLeft(t[len(name):], " \t\r\n")
	if !strings.HasPrefix(t, "=") {
		return "", s, false
	}
	t = strings.TrimLeft(t[1:], " \t\r\n")
	if t == "" || t[0] != '"' && t[0] != '\'' {
		return "", s, false
	}
	end := strings.IndexByte(t[1:], t[0])
	if end < 0 {
		return "", s, false
	}
	return t[1 : 1+end], t[end+2:], true
}

// encName reports whether s is an encoding name (XML 1.0 §4.3.3):
// [A-Za-z] ([A-Za-z0-9._] | '-')*.
func encName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '.' || c == '_' || c == '-')) {
			return false
		}
	}
	return s != ""
}

// scanText appends the character data at s[i:] to b as encoding/xml
// reads it, and returns the bytes appended and the index after: text up
// to the next < or the end, the predefined entities replaced; or, with
// cdata, a CDATA section's content, all of s. Line ends are made \n.
func scanText(s []byte, i int, b *strings.Builder, cdata bool) (n, next int, ok bool) {
	run := i // start of bytes to copy as they are
	flush := func(j int) {
		b.Write(s[run:j])
		n += j - run
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '<' && !cdata:
			flush(i)
			return n, i, true
		case c == '&' && !cdata:
			flush(i)
			r, l := predefinedEntity(s[i:])
			if l == 0 {
				return 0, 0, false
			}
			b.WriteByte(r)
			n++
			i += l
			run = i
			continue
		case c == '\r':
			flush(i)
			b.WriteByte('\n')
			n++
			i++
			if i < len(s) && s[i] == '\n' {
				i++
			}
			run = i
			continue
		case c == ']' && !cdata:
			if i+2 < len(s) && s[i+1] == ']' && s[i+2] == '>' {
				return 0, 0, false // not allowed outside CDATA
			}
		case c < 0x20:
			if c != '\t' && c != '\n' {
				return 0, 0, false
			}
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(s[i:])
			if !xmlChar(r, size) {
				return 0, 0, false
			}
			i += size
			continue
		}
		i++
	}
	flush(i)
	return n, i, true
}

// xmlChar reports whether r, decoded from size bytes, is valid UTF-8 and a
// character XML allows (XML 1.0 §2.2) above ASCII.
func xmlChar(r rune, size int) bool {
	if r == utf8.RuneError && size == 1 {
		return false
	}
	return r <= 0xD7FF || 0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= 0x10FFFF
}

// predefinedEntity reads one of XML's five predefined entities at the
// start of s, returning its character and length, or length 0.
func predefinedEntity(s []byte) (byte, int) {
	for _, e := range [...]struct {
		ref string
		r   byte
	}{{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}} {
		if bytes.HasPrefix(s, []byte(e.ref)) {
			return e.r, len(e.ref)
		}
	}
	return 0, 0
}
