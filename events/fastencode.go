package events

import (
	"encoding/base64"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"
)

// The events written most — the requests of sign-ins, presence and
// messages, the facts they make, the reply — are encoded here without
// encoding/json's reflection (2.7% of rvpd's CPU in a sign-in with a
// buddy list, a third of it the encoder's buffers). The output is byte
// for byte what encoding/json writes, which stays the rule: fastEncode
// gives up (ok false) on what it does not write, and FuzzFastEncode and
// TestFastEncode compare the two.

// fastEncode returns the body of e if it can; ok is false when the
// caller must use encoding/json.
func fastEncode(e Event) (data []byte, ok bool) {
	if v := reflect.ValueOf(e); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, false // encoding/json's: null
	}
	var w jenc
	switch v := e.(type) {
	case *Subscribe:
		// The keys and the fixed-width values (340 bytes in a librvp
		// sign-in's), with room for a Call-Back's user, then the strings
		// (escapes grow the buffer).
		w.b = make([]byte, 0, 400+reqLen(&v.Req)+len(v.NotificationType)+len(v.CallBack)+len(v.CallBackUser.Domain)+len(v.CallBackUser.Alias))
		w.open()
		w.req(&v.Req)
		w.strField("notification_type", v.NotificationType)
		w.strField("call_back", v.CallBack)
		w.optUser("call_back_user", v.CallBackUser)
		w.optInt("lifetime", int64(v.Lifetime))
	case *SubscriptionCreated:
		m := &v.Meta
		// 345 bytes of keys and fixed-width values in a librvp sign-in's,
		// with room for a watcher.
		w.b = make([]byte, 0, 420+len(m.Request)+len(m.Actor)+len(m.Auth)+len(m.Client)+len(m.Gateway)+len(m.Home)+
			len(v.Node.Domain)+len(v.Node.Alias)+len(v.Kind)+len(v.CallBack)+len(v.Watcher.Domain)+len(v.Watcher.Alias)+len(v.Subscriber)+
			len(v.SubscriberUser.Domain)+len(v.SubscriberUser.Alias)+len(v.NodeURL)+len(v.Source)+len(v.Credential)+len(v.Handoff))
		w.open()
		w.meta(&v.Meta)
		w.userField("node", v.Node)
		w.intField("sub_id", int64(v.ID))
		w.strField("kind", v.Kind)
		w.strField("call_back", v.CallBack)
		w.optUser("watcher", v.Watcher)
		w.optStr("subscriber", v.Subscriber)
		w.optUser("subscriber_user", v.SubscriberUser)
		w.strField("node_url", v.NodeURL)
		w.intField("lifetime", int64(v.Lifetime))
		w.timeField("expires", v.Expires)
		w.optStr("source", v.Source)
		w.optStr("credential", v.Credential)
		w.optInt("known_id", int64(v.Known))
		w.optStr("handoff", v.Handoff)
	case *Reply:
		if len(v.Subscriptions) != 0 || v.Listed || len(v.ACL) != 0 || v.HasACL || v.Raw != nil {
			return nil, false
		}
		n := 80 + len(v.ID) + len(v.Error) + len(v.Location) + len(v.Href) + 32*(len(v.Missing)+len(v.Forbidden))
		for _, p := range v.Found {
			n += 32 + len(p.Space) + len(p.Local) + len(p.Value)
		}
		if v.Lease != nil {
			n += 72 + len(v.Lease.Value) + len(v.Lease.Default)
		}
		w.b = make([]byte, 0, n)
		w.open()
		w.strField("id", v.ID)
		w.intField("status", int64(v.Status))
		w.optStr("error", v.Error)
		w.optInt("retry_after", int64(v.RetryAfter))
		w.optInt("sub_id", int64(v.SubscriptionID))
		w.optInt("lifetime", int64(v.Lifetime))
		w.optStr("location", v.Location)
		w.optStr("href", v.Href)
		w.props("found", len(v.Found), func(i int) Prop { return v.Found[i].Prop }, func(i int) string { return v.Found[i].Value })
		w.props("missing", len(v.Missing), func(i int) Prop { return v.Missing[i] }, nil)
		w.props("forbidden", len(v.Forbidden), func(i int) Prop { return v.Forbidden[i] }, nil)
		if l := v.Lease; l != nil {
			w.object("lease", func() {
				w.strField("value", l.Value)
				w.strField("default", l.Default)
				w.intField("timeout", int64(l.Timeout))
				w.intField("view_id", int64(l.ViewID))
			})
		}
		w.optInt("kept", int64(v.Kept))
	case *PropPatch:
		n := 20
		if v.State != nil {
			n += 96 + len(v.State.Value) + len(v.State.Default)
		}
		for _, p := range v.Set {
			n += 32 + len(p.Space) + len(p.Local) + len(p.Value)
		}
		w.request(&v.Req, n)
		if st := v.State; st != nil {
			w.object("state", func() {
				w.strField("value", st.Value)
				w.optStr("default", st.Default)
				w.optInt("timeout", int64(st.Timeout))
				w.optInt("view_id", int64(st.ViewID))
			})
		}
		w.props("set", len(v.Set), func(i int) Prop { return v.Set[i].Prop }, func(i int) string { return v.Set[i].Value })
	case *Renew:
		w.request(&v.Req, 20)
		w.intField("sub_id", int64(v.ID))
		w.optInt("lifetime", int64(v.Lifetime))
	case *Unsubscribe:
		w.request(&v.Req, 0)
		w.intField("sub_id", int64(v.ID))
	case *Notify:
		w.request(&v.Req, 40+len(v.AckType)+base64.StdEncoding.EncodedLen(len(v.Body)))
		w.optStr("ack_type", v.AckType)
		w.optInt("hop_count", int64(v.HopCount))
		w.bytesField("body", v.Body)
	case *SubscriptionRenewed:
		w.fact(&v.Meta, v.Node, 40)
		w.intField("sub_id", int64(v.ID))
		w.intField("lifetime", int64(v.Lifetime))
		w.timeField("expires", v.Expires)
	case *SubscriptionEnded:
		w.fact(&v.Meta, v.Node, 40+len(v.Reason)+len(v.By)+len(v.ByUser.Domain)+len(v.ByUser.Alias))
		w.intField("sub_id", int64(v.ID))
		w.strField("reason", v.Reason)
		if v.Move != 0 {
			w.key("move")
			w.b = strconv.AppendUint(w.b, v.Move, 10)
		}
		w.optStr("by", v.By)
		w.optUser("by_user", v.ByUser)
	case *ViewSet:
		w.fact(&v.Meta, v.Node, 120+len(v.Value)+len(v.Default)+len(v.Source))
		w.intField("view_id", int64(v.ID))
		w.strField("value", v.Value)
		w.strField("default", v.Default)
		w.intField("timeout", int64(v.Timeout))
		w.timeField("expires", v.Expires)
		w.optStr("source", v.Source)
		w.optInt("known_id", int64(v.Known))
		if !v.Set.IsZero() {
			w.timeField("set", v.Set)
		}
	case *ViewEnded:
		w.fact(&v.Meta, v.Node, len(v.Reason))
		w.intField("view_id", int64(v.ID))
		w.strField("reason", v.Reason)
	case *MessageAccepted:
		w.fact(&v.Meta, v.Node, 80+len(v.AckType)+base64.StdEncoding.EncodedLen(len(v.Body))+len(v.BodySHA256))
		w.optStr("ack_type", v.AckType)
		w.optInt("hop_count", int64(v.HopCount))
		w.intField("endpoints", int64(v.Endpoints))
		if len(v.Body) != 0 {
			w.bytesField("body", v.Body)
		}
		w.optInt("body_size", int64(v.BodySize))
		w.optStr("body_sha256", v.BodySHA256)
	case *MessageDelivered:
		w.fact(&v.Meta, v.Node, 40)
		w.intField("status", int64(v.Status))
		w.intField("delivered", int64(v.Delivered))
		w.intField("failed", int64(v.Failed))
	default:
		return nil, false
	}
	if w.bad {
		return nil, false
	}
	w.b = append(w.b, '}')
	return w.b, true
}

// request sizes w's buffer for a request with extra bytes of its own
// fields, opens it, and writes r's fields.
func (w *jenc) request(r *Req, extra int) {
	w.b = make([]byte, 0, 280+reqLen(r)+extra)
	w.open()
	w.req(r)
}

// fact sizes w's buffer for a fact about node with extra bytes of its own
// fields, opens it, and writes m's fields and the node's.
func (w *jenc) fact(m *Meta, node User, extra int) {
	w.b = make([]byte, 0, 160+metaLen(m)+len(node.Domain)+len(node.Alias)+extra)
	w.open()
	w.meta(m)
	w.userField("node", node)
}

// metaLen is the length of m's strings.
func metaLen(m *Meta) int {
	return len(m.Request) + len(m.Actor) + len(m.Auth) + len(m.Client) + len(m.Gateway) + len(m.Home)
}

// reqLen is the length of r's strings.
func reqLen(r *Req) int {
	return len(r.ID) + len(r.Gateway) + len(r.Client) + len(r.Node.Domain) + len(r.Node.Alias) + len(r.NodeURL) + len(r.From) +
		len(r.FromUser.Domain) + len(r.FromUser.Alias) + len(r.Auth.Scheme) + len(r.Auth.User.Domain) + len(r.Auth.User.Alias)
}

// jenc appends JSON as encoding/json writes it (HTML-safe strings, invalid
// UTF-8 as U+FFFD). bad is set by a value it cannot write (a time
// encoding/json refuses).
type jenc struct {
	b     []byte
	first bool // no field written yet in the object open
	bad   bool
}

func (w *jenc) open() {
	w.b = append(w.b, '{')
	w.first = true
}

func (w *jenc) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

// object writes a field holding an object whose fields fields writes.
func (w *jenc) object(k string, fields func()) {
	w.key(k)
	w.b = append(w.b, '{')
	w.first = true
	fields()
	w.b = append(w.b, '}')
	w.first = false
}

func (w *jenc) strField(k, v string) {
	w.key(k)
	w.str(v)
}

// optStr writes a string field with omitempty.
func (w *jenc) optStr(k, v string) {
	if v != "" {
		w.strField(k, v)
	}
}

// optInt writes an integer field with omitempty.
func (w *jenc) optInt(k string, v int64) {
	if v != 0 {
		w.intField(k, v)
	}
}

// optUser writes a User field with omitzero.
func (w *jenc) optUser(k string, u User) {
	if !u.IsZero() {
		w.userField(k, u)
	}
}

func (w *jenc) intField(k string, v int64) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}

// bytesField writes a []byte field as encoding/json does: base64, or
// null for nil.
func (w *jenc) bytesField(k string, v []byte) {
	w.key(k)
	if v == nil {
		w.b = append(w.b, "null"...)
		return
	}
	w.b = append(w.b, '"')
	w.b = base64.StdEncoding.AppendEncode(w.b, v)
	w.b = append(w.b, '"')
}

func (w *jenc) timeField(k string, t time.Time) {
	w.key(k)
	w.b = append(w.b, '"')
	var err error
	if w.b, err = t.AppendText(w.b); err != nil {
		w.bad = true
	}
	w.b = append(w.b, '"')
}

func (w *jenc) userField(k string, u User) {
	w.key(k)
	w.b = append(w.b, '{')
	w.first = true
	w.strField("domain", u.Domain)
	w.strField("alias", u.Alias)
	w.b = append(w.b, '}')
	w.first = false
}

// props writes a field of n properties, with omitempty: each prop(i),
// and its value(i) when value is not nil (a []PropValue).
func (w *jenc) props(k string, n int, prop func(int) Prop, value func(int) string) {
	if n == 0 {
		return
	}
	w.key(k)
	w.b = append(w.b, '[')
	for i := range n {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, '{')
		w.first = true
		p := prop(i)
		w.strField("ns", p.Space)
		w.strField("local", p.Local)
		if value != nil {
			w.strField("value", value(i))
		}
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ']')
	w.first = false
}

// meta writes the fields of Meta.
func (w *jenc) meta(m *Meta) {
	w.timeField("at", m.At)
	w.optStr("req", m.Request)
	w.optStr("actor", m.Actor)
	w.optStr("auth", m.Auth)
	w.optStr("client", m.Client)
	w.optStr("gateway", m.Gateway)
	w.optStr("decided_by", m.Home)
}

// req writes the fields of Req.
func (w *jenc) req(r *Req) {
	w.strField("id", r.ID)
	w.timeField("at", r.At)
	w.timeField("deadline", r.Deadline)
	w.strField("gateway", r.Gateway)
	w.strField("client", r.Client)
	w.userField("node", r.Node)
	w.strField("node_url", r.NodeURL)
	w.optStr("from", r.From)
	w.optUser("from_user", r.FromUser)
	if r.Auth != (Identity{}) {
		w.key("auth")
		w.b = append(w.b, '{')
		w.first = true
		w.optStr("scheme", r.Auth.Scheme)
		w.optUser("user", r.Auth.User)
		w.b = append(w.b, '}')
		w.first = false
	}
	if r.DirPos != 0 {
		w.key("dir_pos")
		w.b = strconv.AppendUint(w.b, r.DirPos, 10)
	}
}

const hexDigits = "0123456789abcdef"

// plain is '1' at each byte a JSON string holds as it is (printable ASCII
// but for ", \ and the HTML characters encoding/json escapes).
const plain = "0000000000000000000000000000000011011101111111111111111111110101111111111111111111111111111101111111111111111111111111111111111100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"

// str writes s as a JSON string the way encoding/json does.
func (w *jenc) str(s string) {
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plain[c] == '1' {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			w.b = append(w.b, s[start:i]...)
			switch c {
			case '"', '\\':
				w.b = append(w.b, '\\', c)
			case '\b':
				w.b = append(w.b, '\\', 'b')
			case '\f':
				w.b = append(w.b, '\\', 'f')
			case '\n':
				w.b = append(w.b, '\\', 'n')
			case '\r':
				w.b = append(w.b, '\\', 'r')
			case '\t':
				w.b = append(w.b, '\\', 't')
			default:
				w.b = append(w.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			w.b = append(w.b, s[start:i]...)
			w.b = append(w.b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			w.b = append(w.b, s[start:i]...)
			w.b = append(w.b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}
