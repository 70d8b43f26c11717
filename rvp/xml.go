package rvp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"

	"github.com/rvp-im/rvpd/events"
)

// XML parsing is namespace-aware but tolerant, as the digest asks: names
// are matched by (namespace, local name) when prefixes are declared, and the
// customary prefixes d:, r: and a: stand for their namespaces when a
// document uses them without declaring them.

// Bounds of parsed XML documents.
const (
	maxXMLDepth = 32
	maxXMLNodes = 4096
	maxXMLText  = 64 << 10
	// maxPropNames bounds the names (namespace URI and local name) of
	// the properties one PROPFIND or PROPPATCH names: each is echoed in
	// the request event and the answer, and a namespace declared once
	// may be named by its prefix thousands of times.
	maxPropNames = 64 << 10
)

// nameBudget counts the bytes of property names a request names.
type nameBudget int

func (b *nameBudget) take(p events.Prop, what string) error {
	*b += nameBudget(len(p.Space) + len(p.Local))
	if *b > maxPropNames {
		return xmlErr("%s names more than %d bytes of properties (namespaces included); name fewer, or in shorter namespaces", what, maxPropNames)
	}
	return nil
}

// node is an element of a parsed document.
type node struct {
	name     events.Prop
	children []*node
	text     strings.Builder // character data directly inside, CDATA included
}

func (n *node) child(local string) *node {
	for _, c := range n.children {
		if c.name.Local == local {
			return c
		}
	}
	return nil
}

// firstChild returns the first child element, or nil.
func (n *node) firstChild() *node {
	if len(n.children) == 0 {
		return nil
	}
	return n.children[0]
}

var defaultPrefixes = map[string]string{
	"d": events.NSDAV, "D": events.NSDAV,
	"r": events.NSRVP, "R": events.NSRVP,
	"a": events.NSACL, "A": events.NSACL,
}

func propName(n xml.Name) events.Prop {
	space := n.Space
	if ns, ok := defaultPrefixes[space]; ok {
		// encoding/xml leaves an undeclared prefix in Space.
		space = ns
	}
	return events.Prop{Space: space, Local: n.Local}
}

// XMLError is a body that is not well-formed or not the document expected.
type XMLError struct{ Msg string }

func (e *XMLError) Error() string { return e.Msg }

func xmlErr(format string, args ...any) error { return &XMLError{Msg: fmt.Sprintf(format, args...)} }

// parseXML parses a whole document into a tree, bounded in depth, element
// count and text size. It fails on anything not well-formed.
func parseXML(body []byte) (*node, error) {
	// A UTF-8 document may start with a byte order mark (XML 1.0
	// §4.3.3); encoding/xml takes it for text.
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if root, ok := scanXML(body); ok {
		return root, nil
	}
	return decodeXML(body)
}

// decodeXML is parseXML through encoding/xml: any document, and every
// error.
func decodeXML(body []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	d.CharsetReader = func(charset string, r io.Reader) (io.Reader, error) {
		// The clients recorded declare UTF-8 or nothing; a body that
		// declares Latin-1 (or Windows' superset of it) is read as it.
		switch strings.ToLower(charset) {
		case "utf-8", "utf8", "us-ascii":
			return r, nil
		case "iso-8859-1", "latin1":
			return charmap.ISO8859_1.NewDecoder().Reader(r), nil
		case "windows-1252", "cp1252":
			return charmap.Windows1252.NewDecoder().Reader(r), nil
		}
		return nil, fmt.Errorf("unsupported encoding %q", charset)
	}
	if bytes.Contains(body, []byte("&#")) {
		if err := checkCharRefs(body); err != nil {
			return nil, err
		}
	}
	var root *node
	var stack []*node
	count, text := 0, 0
	for tokens := 0; ; tokens++ {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, xmlErr("malformed XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if err := checkStart(t); err != nil {
				return nil, err
			}
			count++
			if count > maxXMLNodes {
				return nil, xmlErr("XML has more than %d elements", maxXMLNodes)
			}
			if len(stack) >= maxXMLDepth {
				return nil, xmlErr("XML nested deeper than %d", maxXMLDepth)
			}
			n := &node{name: propName(t.Name)}
			if len(stack) == 0 {
				if root != nil {
					return nil, xmlErr("malformed XML: more than one root element")
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return nil, xmlErr("malformed XML: text outside the root element")
				}
				continue
			}
			text += len(t)
			if text > maxXMLText {
				return nil, xmlErr("XML text larger than %d bytes", maxXMLText)
			}
			stack[len(stack)-1].text.Write(t)
		case xml.Directive:
			return nil, xmlErr("XML directives (DOCTYPE) are not accepted")
		case xml.ProcInst:
			if err := checkDeclaration(body, t, tokens); err != nil {
				return nil, err
			}
		}
	}
	if root == nil {
		return nil, xmlErr("malformed XML: no root element")
	}
	return root, nil
}

// checkDeclaration refuses an instruction pi, the tokens-th of body,
// that is an XML declaration anywhere but at the very start of the
// document (XML 1.0 §2.8: not even after white space), or one not
// written as §2.8 has it (readDeclaration), or an instruction whose
// target is "xml" in another case (reserved, §2.6). encoding/xml takes
// them all; expat and libxml2 refuse the whole document, and a NOTIFY
// body is forwarded to other users' clients as it came.
func checkDeclaration(body []byte, pi xml.ProcInst, tokens int) error {
	if !strings.EqualFold(pi.Target, "xml") {
		return nil
	}
	if pi.Target != "xml" {
		return xmlErr("malformed XML: the instruction target %q is reserved", pi.Target)
	}
	if tokens > 0 || !bytes.HasPrefix(body, []byte("<?xml")) {
		return xmlErr("malformed XML: the XML declaration must be the first thing in the document, before any white space")
	}
	end := bytes.Index(body, []byte("?>"))
	if _, ok := readDeclaration(body[len("<?xml"):max(end, len("<?xml"))]); end < 0 || !ok {
		return xmlErr(`malformed XML: the XML declaration must be <?xml version="1.0"?>, with encoding and standalone after version if at all`)
	}
	return nil
}

// checkCharRefs refuses a character reference to a surrogate (&#xD800;
// to &#xDFFF;) in body's text or attribute values: no character (XML 1.0
// §4.1, Legal Character), which encoding/xml reads as U+FFFD and expat
// and libxml2 refuse, whole document and all (encoding/xml refuses the
// other references that name no character). The same text in a CDATA
// section, a comment or an instruction is no reference. body is read as
// far as it is markup: encoding/xml says what else is wrong with it.
func checkCharRefs(body []byte) error {
	for i := 0; i < len(body); {
		kind, end := nextSpan(body, i)
		if end < 0 {
			return nil
		}
		if kind == spanText || kind == spanStart {
			for s := body[i:end]; ; {
				j := bytes.Index(s, []byte("&#"))
				k := bytes.IndexByte(s[max(j, 0):], ';')
				if j < 0 || k < 0 {
					break
				}
				ref, base := s[j+2:j+k], 10
				if len(ref) > 0 && ref[0] == 'x' {
					ref, base = ref[1:], 16
				}
				if n, err := strconv.ParseUint(string(ref), base, 32); err == nil && 0xD800 <= n && n <= 0xDFFF {
					return xmlErr("malformed XML: the character reference %s names a surrogate, no character", s[j:j+k+1])
				}
				s = s[j+k+1:]
			}
		}
		i = end
	}
	return nil
}

// Kinds of span nextSpan finds.
const (
	spanText = iota
	spanStart
	spanEnd
	spanCDATA
	spanComment
	spanPI
)

// nextSpan returns the kind of the markup (or text) at body[i:] and the
// index after it; end is -1 for what it does not read (a DOCTYPE, which
// no document here has, or anything unterminated). It reads a document
// encoding/xml has taken, or will judge, in any encoding that writes
// ASCII as ASCII: text runs to the next '<', and a start tag to the '>'
// outside its quoted attribute values.
func nextSpan(body []byte, i int) (kind, end int) {
	rest := body[i:]
	find := func(from int, close string) int {
		if k := bytes.Index(rest[from:], []byte(close)); k >= 0 {
			return i + from + k + len(close)
		}
		return -1
	}
	switch {
	case rest[0] != '<':
		if k := bytes.IndexByte(rest, '<'); k >= 0 {
			return spanText, i + k
		}
		return spanText, len(body)
	case bytes.HasPrefix(rest, []byte("<!--")):
		return spanComment, find(4, "-->")
	case bytes.HasPrefix(rest, []byte("<![CDATA[")):
		return spanCDATA, find(9, "]]>")
	case bytes.HasPrefix(rest, []byte("<?")):
		return spanPI, find(2, "?>")
	case bytes.HasPrefix(rest, []byte("<!")):
		return spanComment, -1
	case bytes.HasPrefix(rest, []byte("</")):
		return spanEnd, find(2, ">")
	}
	for j := 1; j < len(rest); j++ {
		switch c := rest[j]; c {
		case '>':
			return spanStart, i + j + 1
		case '"', '\'':
			k := bytes.IndexByte(rest[j+1:], c)
			if k < 0 {
				return spanStart, -1
			}
			j += k + 1
		}
	}
	return spanStart, -1
}

// checkStart checks what Namespaces in XML asks of a start tag and
// encoding/xml does not: checkReserved, checkNCNames, checkUniqueAttrs.
func checkStart(t xml.StartElement) error {
	if err := checkReserved(t); err != nil {
		return err
	}
	if err := checkNCNames(t); err != nil {
		return err
	}
	return checkUniqueAttrs(t)
}

// nsXMLNS is the namespace the prefix xmlns: stands for; no document may
// bind it.
const nsXMLNS = "http://www.w3.org/2000/xmlns/"

// checkReserved refuses a start tag that binds a reserved namespace name
// to a prefix other than its own (Namespaces in XML 1.0 §3): such a
// document is not namespace-well-formed, and a name in it, echoed in an
// answer, would make the answer so too.
func checkReserved(t xml.StartElement) error {
	for _, a := range t.Attr {
		prefixDecl := a.Name.Space == "xmlns"
		if !prefixDecl && !(a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		if a.Value == nsXMLNS || a.Value == nsXML && !(prefixDecl && a.Name.Local == "xml") {
			return xmlErr("malformed XML: <%s> binds the reserved namespace %s to another prefix", truncate(t.Name.Local, 40), a.Value)
		}
	}
	return nil
}

// checkNCNames refuses a start tag whose element or attribute name has a
// part that is no NCName (Namespaces in XML 1.0 §3): encoding/xml checks
// a prefixed name whole, so <r:9/> passes as the XML name "r:9". Such a
// name echoed (a state is sent to every watcher as its element) makes
// what we send unreadable to expat and libxml2.
func checkNCNames(t xml.StartElement) error {
	if !ncNamePart(t.Name.Local) {
		return xmlErr("malformed XML: element name %q is not a qualified name", truncate(t.Name.Local, 40))
	}
	for _, a := range t.Attr {
		// For xmlns:p, Local is the prefix p declared.
		if !ncNamePart(a.Name.Local) {
			return xmlErr("malformed XML: attribute name %q is not a qualified name", truncate(a.Name.Local, 40))
		}
	}
	return nil
}

// checkUniqueAttrs refuses a start tag naming an attribute twice (XML 1.0
// §3.1), or twice by its expanded name through two prefixes bound to one
// namespace (Namespaces in XML 1.0 §6.3): encoding/xml keeps them all,
// and of two declarations of one prefix uses the last.
func checkUniqueAttrs(t xml.StartElement) error {
	// A tag has a few attributes (a NOTIFY's root its three
	// declarations) and this runs on every message: those are compared
	// in pairs, without a map; a tag with many (one start tag may hold
	// thousands in a body) goes through one.
	twice := func(a xml.Attr) error {
		name := a.Name.Local
		if a.Name.Space != "" {
			name = a.Name.Space + ":" + name
		}
		return xmlErr("malformed XML: <%s> has the attribute %q twice", truncate(t.Name.Local, 40), truncate(name, 80))
	}
	if len(t.Attr) > 16 {
		seen := make(map[xml.Name]bool, len(t.Attr))
		for _, a := range t.Attr {
			if seen[a.Name] {
				return twice(a)
			}
			seen[a.Name] = true
		}
		return nil
	}
	for i, a := range t.Attr {
		for _, b := range t.Attr[:i] {
			if a.Name == b.Name {
				return twice(a)
			}
		}
	}
	return nil
}

// ncNamePart reports whether s, a part of a name encoding/xml has read as
// an XML name, is an NCName: no colon, and its first character one that
// may start a name (not a digit, '-', '.' or a combining character).
func ncNamePart(s string) bool {
	if s == "" || strings.ContainsRune(s, ':') {
		return false
	}
	r, _ := utf8.DecodeRuneInString(s)
	switch {
	case '0' <= r && r <= '9', r == '-', r == '.', r == 0xB7, 0x300 <= r && r <= 0x36F, r == 0x203F, r == 0x2040:
		return false
	}
	return true
}

// ParsePropertyUpdate parses a PROPPATCH body: d:propertyupdate (or the
// spec's misspelt d:propupdate) with d:set/d:prop. r:state may be leased
// (r:leased-value with r:value, r:default-value and d:timeout or r:timeout)
// or bare (<r:state><r:offline/></r:state>, as librvp sends at logout); an
// r:view-id may follow. Other properties are returned with their text.
func ParsePropertyUpdate(body []byte) (state *events.StateUpdate, other []events.PropValue, err error) {
	root, err := parseXML(body)
	if err != nil {
		return nil, nil, err
	}
	if root.name.Local != "propertyupdate" && root.name.Local != "propupdate" {
		return nil, nil, xmlErr("PROPPATCH body: root element is %s, want d:propertyupdate", root.name.Local)
	}
	var budget nameBudget
	for _, op := range root.children {
		if op.name.Local != "set" && op.name.Local != "remove" {
			continue
		}
		for _, prop := range op.children {
			if prop.name.Local != "prop" {
				continue
			}
			for _, p := range prop.children {
				if p.name != events.PropState && !(p.name.Local == "state" && p.name.Space != events.NSDAV) {
					if !validName(p.name.Local) {
						return nil, nil, xmlErr("PROPPATCH body: bad property name %q", truncate(p.name.Local, 40))
					}
					if len(p.children) > 0 {
						return nil, nil, xmlErr("PROPPATCH body: property %s holds elements, want text", p.name.Local)
					}
					if err := budget.take(p.name, "PROPPATCH body"); err != nil {
						return nil, nil, err
					}
					value := strings.TrimSpace(p.text.String())
					if op.name.Local == "remove" {
						value = ""
					}
					other = append(other, events.PropValue{Prop: p.name, Value: value})
					continue
				}
				if state != nil {
					return nil, nil, xmlErr("PROPPATCH body: r:state given twice")
				}
				if op.name.Local == "remove" {
					state = &events.StateUpdate{Value: events.StateOffline, Default: events.StateOffline}
					continue
				}
				if state, err = parseState(p); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	if state == nil && len(other) == 0 {
		return nil, nil, xmlErr("PROPPATCH body: no property to set")
	}
	return state, other, nil
}

func parseState(st *node) (*events.StateUpdate, error) {
	u := &events.StateUpdate{Default: events.StateOffline}
	for _, c := range st.children {
		switch c.name.Local {
		case "leased-value":
			for _, lc := range c.children {
				switch lc.name.Local {
				case "value":
					v, err := stateName(lc.firstChild())
					if err != nil {
						return nil, err
					}
					u.Value = v
				case "default-value":
					v, err := stateName(lc.firstChild())
					if err != nil {
						return nil, err
					}
					u.Default = v
				case "timeout":
					t, err := ParseCount(lc.text.String())
					if err != nil {
						return nil, xmlErr("r:state lease: bad timeout %q", truncate(lc.text.String(), 20))
					}
					u.Timeout = t
				}
			}
		case "view-id":
			id, err := strconv.ParseInt(strings.TrimSpace(c.text.String()), 10, 32)
			if err != nil || id <= 0 {
				return nil, xmlErr("r:state: bad r:view-id %q", truncate(c.text.String(), 20))
			}
			u.ViewID = int32(id)
		default:
			if u.Value != "" {
				return nil, xmlErr("r:state holds more than one state")
			}
			v, err := stateName(c)
			if err != nil {
				return nil, err
			}
			u.Value = v
		}
	}
	if u.Value == "" {
		return nil, xmlErr("r:state: no state value")
	}
	return u, nil
}

// stateName returns the state an empty element such as <r:online/> names.
// Unknown names are passed through, as the digest recommends, but must look
// like a state.
func stateName(n *node) (string, error) {
	if n == nil {
		return "", xmlErr("r:state: value holds no state element")
	}
	s := n.name.Local
	if len(s) > 32 {
		return "", xmlErr("r:state: state name too long")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || c == '-' || '0' <= c && c <= '9') {
			return "", xmlErr("r:state: bad state name %q", s)
		}
	}
	return s, nil
}

// validName reports whether s is an XML name without a colon (NCName,
// ASCII subset), safe to echo in an answer.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// ParsePropFind parses a PROPFIND body. An empty body asks for all
// properties, as in WebDAV.
func ParsePropFind(body []byte) (all, names bool, props []events.Prop, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return true, false, nil, nil
	}
	root, err := parseXML(body)
	if err != nil {
		return false, false, nil, err
	}
	if root.name.Local != "propfind" {
		return false, false, nil, xmlErr("PROPFIND body: root element is %s, want d:propfind", root.name.Local)
	}
	var budget nameBudget
	for _, c := range root.children {
		switch c.name.Local {
		case "allprop":
			all = true
		case "propname":
			names = true
		case "prop":
			for _, p := range c.children {
				if !validName(p.name.Local) {
					return false, false, nil, xmlErr("PROPFIND body: bad property name %q", truncate(p.name.Local, 40))
				}
				if err := budget.take(p.name, "PROPFIND body"); err != nil {
					return false, false, nil, err
				}
				props = append(props, p.name)
			}
		}
	}
	if !all && !names && len(props) == 0 {
		return false, false, nil, xmlErr("PROPFIND body names no property")
	}
	return all, names, props, nil
}

// NotificationKind is what a NOTIFY body carries.
type NotificationKind int

// Kinds of notification.
const (
	KindMessage NotificationKind = iota + 1
	KindPropNotification
)

// Notification is what the gateway reads of a NOTIFY body: its kind, and
// the d:href of every r:notification-from and r:notification-to contact
// (surrounding whitespace stripped). The body itself is forwarded
// unchanged.
type Notification struct {
	Kind NotificationKind
	From []string
	To   []string
}

// ParseNotification checks that a NOTIFY body is a well-formed
// r:notification (the spec's D:notification too) holding one r:message
// or one r:propnotification, and returns who it says it is from and to.
// Every href of every contact is returned, each as one entry (a
// notification-from or -to without a contact, a contact without an href,
// or an href holding elements as ""), matched by local name in any
// namespace: clients read these bodies in different ways (Miranda by
// literal prefixed names, librvp by local name, Net::RVP makes a user of
// every href), so a sender one of them could read is never left out.
func ParseNotification(body []byte) (*Notification, error) {
	root, err := parseXML(body)
	if err != nil {
		return nil, err
	}
	if root.name.Local != "notification" {
		return nil, xmlErr("NOTIFY body: root element is %s, want r:notification", root.name.Local)
	}
	var n *Notification
	for _, c := range root.children {
		kind := NotificationKind(0)
		switch c.name.Local {
		case "message":
			kind = KindMessage
		case "propnotification":
			kind = KindPropNotification
		default:
			continue
		}
		if n != nil {
			return nil, xmlErr("NOTIFY body: r:notification holds more than one r:message or r:propnotification")
		}
		n = &Notification{Kind: kind}
		for _, p := range c.children {
			var to *[]string
			switch p.name.Local {
			case "notification-from":
				to = &n.From
			case "notification-to":
				to = &n.To
			default:
				continue
			}
			start := len(*to)
			for _, ct := range p.children {
				if ct.name.Local != "contact" {
					continue
				}
				before := len(*to)
				for _, h := range ct.children {
					if h.name.Local != "href" {
						continue
					}
					href := strings.TrimSpace(h.text.String())
					if len(h.children) > 0 {
						href = ""
					}
					*to = append(*to, href)
				}
				if len(*to) == before {
					*to = append(*to, "") // a contact without an href
				}
			}
			if len(*to) == start {
				*to = append(*to, "") // no contact
			}
		}
	}
	if n == nil {
		return nil, xmlErr("NOTIFY body: r:notification holds neither r:message nor r:propnotification")
	}
	return n, nil
}

// CheckNotification checks that a NOTIFY body is a well-formed
// r:notification and says what it holds (ParseNotification).
func CheckNotification(body []byte) (NotificationKind, error) {
	n, err := ParseNotification(body)
	if err != nil {
		return 0, err
	}
	return n.Kind, nil
}

// MaxACEs bounds the entries of an ACL.
const MaxACEs = 256

// ParseACL parses an a:rvpacl document. Each ACE must name one principal
// (a:rvp-principal, or a:allprincipals; librvp writes the word
// "allprincipals" as a principal) and its credentials (an ACE without them
// is refused, "credentials not specified"). Rights the server does not
// support (writeowner, delete, createchild, deletechild) are dropped.
func ParseACL(body []byte) ([]events.ACE, error) {
	root, err := parseXML(body)
	if err != nil {
		return nil, err
	}
	if root.name.Local != "rvpacl" {
		return nil, xmlErr("ACL body: root element is %s, want a:rvpacl", root.name.Local)
	}
	acl := root.child("acl")
	if acl == nil {
		return nil, xmlErr("ACL body: no a:acl")
	}
	known := map[string]bool{events.RightAll: true}
	for _, r := range events.Rights() {
		known[r] = true
	}
	var aces []events.ACE
	for _, n := range acl.children {
		if n.name.Local != "ace" {
			continue
		}
		if len(aces) == MaxACEs {
			return nil, xmlErr("ACL body: more than %d entries", MaxACEs)
		}
		var ace events.ACE
		p := n.child("principal")
		if p == nil {
			return nil, xmlErr("ACL body: an a:ace without a:principal")
		}
		principals, creds := 0, p.child("credentials")
		for _, c := range p.children {
			switch c.name.Local {
			case "allprincipals":
				principals++
			case "rvp-principal":
				principals++
				v := strings.TrimSpace(c.text.String())
				if v == "" || len(c.children) > 0 {
					// Not all principals: S§5.7.2 permits no null value.
					return nil, xmlErr("ACL body: an a:rvp-principal is empty or holds elements; name a principal's URL or a server as its text, or write a:allprincipals")
				}
				if !strings.EqualFold(v, "allprincipals") {
					ace.Principal = v
				}
			}
		}
		if principals != 1 {
			return nil, xmlErr("ACL body: an a:principal names %d principals, want one", principals)
		}
		if ace.Principal != "" && strings.Contains(ace.Principal, "://") {
			u, err := ParseURL(ace.Principal)
			if err != nil {
				return nil, xmlErr("ACL body: principal: %v", err)
			}
			ace.Principal = u.String()
		}
		if creds == nil || len(creds.children) == 0 {
			return nil, xmlErr("ACL body: credentials not specified")
		}
		for _, c := range creds.children {
			switch c.name.Local {
			case events.CredAssertion, events.CredDigest, events.CredNTLM, events.CredInternal, events.CredAny:
				ace.Credentials = append(ace.Credentials, c.name.Local)
			}
		}
		if len(ace.Credentials) == 0 {
			return nil, xmlErr("ACL body: credentials not specified (none known)")
		}
		for _, set := range []struct {
			tag string
			to  *[]string
		}{{"grant", &ace.Grant}, {"deny", &ace.Deny}} {
			if g := n.child(set.tag); g != nil {
				for _, r := range g.children {
					if known[r.name.Local] {
						*set.to = append(*set.to, r.name.Local)
					}
				}
			}
		}
		aces = append(aces, ace)
	}
	return aces, nil
}
