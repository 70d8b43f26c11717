package events

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// The events read most — the facts a rebuild applies, the requests a
// home node decides, the replies a gateway renders — are decoded here
// without encoding/json's reflection, which the profiles put at about
// 6 µs a fact (a rebuild) and 5% of a sign-in's CPU. The decoder takes
// the form encoding/json writes, a strict subset of JSON: an unknown or
// repeated key, a null, an escaped surrogate, a number with a fraction
// or an exponent, a control character or invalid UTF-8 in a string,
// anything unexpected makes it give up, and Decode falls back to
// encoding/json, whose result stays the rule. FuzzFastDecode checks that
// whatever this decoder accepts, encoding/json decodes to the same
// value.

// fastDecode decodes data as an event of type typ if it can; ok is false
// when the caller must use encoding/json.
func fastDecode(typ string, data []byte) (e Event, ok bool) {
	d := &jdec{b: data}
	switch typ {
	case TypeSubscriptionCreated:
		v := new(SubscriptionCreated)
		d.object(func(k []byte) int {
			if i := d.meta(&v.Meta, k); i != 0 {
				return i
			}
			switch string(k) {
			case "node":
				d.user(&v.Node)
				return 10
			case "sub_id":
				v.ID = int32(d.int(32))
				return 11
			case "kind":
				v.Kind = d.str()
				return 12
			case "call_back":
				v.CallBack = d.str()
				return 13
			case "watcher":
				d.user(&v.Watcher)
				return 14
			case "subscriber":
				v.Subscriber = d.str()
				return 15
			case "subscriber_user":
				d.user(&v.SubscriberUser)
				return 16
			case "node_url":
				v.NodeURL = d.str()
				return 17
			case "lifetime":
				v.Lifetime = int(d.int(strconv.IntSize))
				return 18
			case "expires":
				v.Expires = d.time()
				return 19
			case "source":
				v.Source = d.str()
				return 20
			case "credential":
				v.Credential = d.str()
				return 21
			case "known_id":
				v.Known = int32(d.int(32))
				return 22
			case "handoff":
				v.Handoff = d.str()
				return 23
			}
			return -1
		})
		e = v
	case TypeSubscriptionRenewed:
		v := new(SubscriptionRenewed)
		d.object(func(k []byte) int {
			if i := d.meta(&v.Meta, k); i != 0 {
				return i
			}
			switch string(k) {
			case "node":
				d.user(&v.Node)
				return 10
			case "sub_id":
				v.ID = int32(d.int(32))
				return 11
			case "lifetime":
				v.Lifetime = int(d.int(strconv.IntSize))
				return 12
			case "expires":
				v.Expires = d.time()
				return 13
			}
			return -1
		})
		e = v
	case TypeSubscriptionEnded:
		v := new(SubscriptionEnded)
		d.object(func(k []byte) int {
			if i := d.meta(&v.Meta, k); i != 0 {
				return i
			}
			switch string(k) {
			case "node":
				d.user(&v.Node)
				return 10
			case "sub_id":
				v.ID = int32(d.int(32))
				return 11
			case "reason":
				v.Reason = d.str()
				return 12
			case "move":
				v.Move = d.uint()
				return 13
			case "by":
				v.By = d.str()
				return 14
			case "by_user":
				d.user(&v.ByUser)
				return 15
			}
			return -1
		})
		e = v
	case TypeViewSet:
		v := new(ViewSet)
		d.object(func(k []byte) int {
			if i := d.meta(&v.Meta, k); i != 0 {
				return i
			}
			switch string(k) {
			case "node":
				d.user(&v.Node)
				return 10
			case "view_id":
				v.ID = int32(d.int(32))
				return 11
			case "value":
				v.Value = d.str()
				return 12
			case "default":
				v.Default = d.str()
				return 13
			case "timeout":
				v.Timeout = int(d.int(strconv.IntSize))
				return 14
			case "expires":
				v.Expires = d.time()
				return 15
			case "source":
				v.Source = d.str()
				return 16
			case "known_id":
				v.Known = int32(d.int(32))
				return 17
			case "set":
				v.Set = d.time()
				return 18
			}
			return -1
		})
		e = v
	case TypeViewEnded:
		v := new(ViewEnded)
		d.object(func(k []byte) int {
			if i := d.meta(&v.Meta, k); i != 0 {
				return i
			}
			switch string(k) {
			case "node":
				d.user(&v.Node)
				return 10
			case "view_id":
				v.ID = int32(d.int(32))
				return 11
			case "reason":
				v.Reason = d.str()
				return 12
			}
			return -1
		})
		e = v
	case TypeSubscribe:
		v := new(Subscribe)
		d.object(func(k []byte) int {
			if i := d.req(&v.Req, k); i != 0 {
				return i
			}
			switch string(k) {
			case "notification_type":
				v.NotificationType = d.str()
				return 20
			case "call_back":
				v.CallBack = d.str()
				return 21
			case "call_back_user":
				d.user(&v.CallBackUser)
				return 22
			case "lifetime":
				v.Lifetime = int(d.int(strconv.IntSize))
				return 23
			}
			return -1
		})
		e = v
	case TypeRenew:
		v := new(Renew)
		d.object(func(k []byte) int {
			if i := d.req(&v.Req, k); i != 0 {
				return i
			}
			switch string(k) {
			case "sub_id":
				v.ID = int32(d.int(32))
				return 20
			case "lifetime":
				v.Lifetime = int(d.int(strconv.IntSize))
				return 21
			}
			return -1
		})
		e = v
	case TypeUnsubscribe:
		v := new(Unsubscribe)
		d.object(func(k []byte) int {
			if i := d.req(&v.Req, k); i != 0 {
				return i
			}
			if string(k) == "sub_id" {
				v.ID = int32(d.int(32))
				return 20
			}
			return -1
		})
		e = v
	case TypePropPatch:
		v := new(PropPatch)
		d.object(func(k []byte) int {
			if i := d.req(&v.Req, k); i != 0 {
				return i
			}
			switch string(k) {
			case "state":
				v.State = new(StateUpdate)
				d.stateUpdate(v.State)
				return 20
			case "set":
				v.Set = d.propValues()
				return 21
			}
			return -1
		})
		e = v
	case TypeNotify:
		v := new(Notify)
		d.object(func(k []byte) int {
			if i := d.req(&v.Req, k); i != 0 {
				return i
			}
			switch string(k) {
			case "ack_type":
				v.AckType = d.str()
				return 20
			case "hop_count":
				v.HopCount = int(d.int(strconv.IntSize))
				return 21
			case "body":
				v.Body = d.bytes()
				return 22
			}
			return -1
		})
		e = v
	case TypeReply:
		v := new(Reply)
		d.object(func(k []byte) int {
			switch string(k) {
			case "id":
				v.ID = d.str()
				return 1
			case "status":
				v.Status = int(d.int(strconv.IntSize))
				return 2
			case "error":
				v.Error = d.str()
				return 3
			case "retry_after":
				v.RetryAfter = int(d.int(strconv.IntSize))
				return 4
			case "sub_id":
				v.SubscriptionID = int32(d.int(32))
				return 5
			case "lifetime":
				v.Lifetime = int(d.int(strconv.IntSize))
				return 6
			case "location":
				v.Location = d.str()
				return 7
			case "href":
				v.Href = d.str()
				return 8
			case "found":
				v.Found = d.propValues()
				return 9
			case "lease":
				v.Lease = new(Lease)
				d.lease(v.Lease)
				return 10
			case "listed":
				v.Listed = d.bool()
				return 11
			case "has_acl":
				v.HasACL = d.bool()
				return 12
			case "kept":
				v.Kept = int(d.int(strconv.IntSize))
				return 13
			}
			return -1
		})
		e = v
	default:
		return nil, false
	}
	d.ws()
	if d.bad || d.i != len(d.b) {
		return nil, false
	}
	return e, true
}

// jdec reads the subset of JSON fastDecode takes; bad records that it
// met anything else, after which its results mean nothing.
type jdec struct {
	b   []byte
	i   int
	bad bool
}

func (d *jdec) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, or fails.
func (d *jdec) consume(c byte) {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return
	}
	d.bad = true
}

// peek skips white space and returns the next byte (0 at the end).
func (d *jdec) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// object reads an object, calling field with each key to read its value
// and return the field's number (1-63), or -1 for a key it does not
// take. A key met twice fails.
func (d *jdec) object(field func(key []byte) int) {
	d.consume('{')
	if d.bad {
		return
	}
	if d.peek() == '}' {
		d.i++
		return
	}
	var seen uint64
	for !d.bad {
		k := d.key()
		d.consume(':')
		if d.bad {
			return
		}
		d.ws()
		n := field(k)
		if n <= 0 || n > 63 || seen&(1<<n) != 0 {
			d.bad = true
			return
		}
		seen |= 1 << n
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.bad = true
		}
	}
}

// key reads an object key without escapes.
func (d *jdec) key() []byte {
	d.consume('"')
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			d.i++
			return d.b[start : d.i-1]
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.i++
	}
	d.bad = true
	return nil
}

// str reads a string.
func (d *jdec) str() string {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		d.bad = true
		return ""
	}
	d.i++
	start, ascii := d.i, true
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				d.bad = true // encoding/json replaces invalid bytes
				return ""
			}
			return string(s)
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			d.bad = true
			return ""
		case c >= utf8.RuneSelf:
			ascii = false
		}
		d.i++
	}
	d.bad = true
	return ""
}

// escaped reads the rest of a string holding escapes, from start (just
// after its opening quote).
func (d *jdec) escaped(start int) string {
	out := make([]byte, 0, d.i-start+16)
	out = append(out, d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			if !utf8.Valid(out) {
				d.bad = true
				return ""
			}
			return string(out)
		case c < 0x20:
			d.bad = true
			return ""
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.b) {
			break
		}
		switch e := d.b[d.i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if d.i+6 > len(d.b) {
				d.bad = true
				return ""
			}
			r, err := strconv.ParseUint(string(d.b[d.i+2:d.i+6]), 16, 32)
			if err != nil || (r >= 0xd800 && r < 0xe000) {
				d.bad = true // surrogates: encoding/json's rules
				return ""
			}
			out = utf8.AppendRune(out, rune(r))
			d.i += 6
			continue
		default:
			d.bad = true
			return ""
		}
		d.i += 2
	}
	d.bad = true
	return ""
}

// num reads an integer literal: an optional minus sign and digits
// without leading zeros, no fraction or exponent.
func (d *jdec) num() []byte {
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i == digits || (d.b[digits] == '0' && d.i > digits+1) {
		d.bad = true
		return nil
	}
	if d.i < len(d.b) {
		if c := d.b[d.i]; c == '.' || c == 'e' || c == 'E' {
			d.bad = true
			return nil
		}
	}
	return d.b[start:d.i]
}

// int reads an integer that fits in bits.
func (d *jdec) int(bits int) int64 {
	v, err := strconv.ParseInt(string(d.num()), 10, bits)
	if err != nil {
		d.bad = true
	}
	return v
}

// uint reads an unsigned 64-bit integer.
func (d *jdec) uint() uint64 {
	v, err := strconv.ParseUint(string(d.num()), 10, 64)
	if err != nil {
		d.bad = true
	}
	return v
}

func (d *jdec) bool() bool {
	switch {
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false
	}
	d.bad = true
	return false
}

// time reads a time as encoding/json does: the string literal handed to
// time.Time's UnmarshalJSON.
func (d *jdec) time() time.Time {
	var t time.Time
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		d.bad = true
		return t
	}
	start := d.i
	for d.i++; d.i < len(d.b) && d.b[d.i] != '"'; d.i++ {
		if d.b[d.i] == '\\' {
			d.bad = true
			return t
		}
	}
	if d.i >= len(d.b) {
		d.bad = true
		return t
	}
	d.i++
	if err := t.UnmarshalJSON(d.b[start:d.i]); err != nil {
		d.bad = true
	}
	return t
}

// bytes reads a []byte, base64 in a string, as encoding/json does.
func (d *jdec) bytes() []byte {
	s := d.str()
	if d.bad {
		return nil
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, []byte(s))
	if err != nil {
		d.bad = true
		return nil
	}
	return b[:n]
}

func (d *jdec) user(u *User) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "domain":
			u.Domain = d.str()
			return 1
		case "alias":
			u.Alias = d.str()
			return 2
		}
		return -1
	})
}

// meta reads the field of a Meta named k, returning its number (1-7), or
// 0 when k is not one of Meta's.
func (d *jdec) meta(m *Meta, k []byte) int {
	switch string(k) {
	case "at":
		m.At = d.time()
		return 1
	case "req":
		m.Request = d.str()
		return 2
	case "actor":
		m.Actor = d.str()
		return 3
	case "auth":
		m.Auth = d.str()
		return 4
	case "client":
		m.Client = d.str()
		return 5
	case "gateway":
		m.Gateway = d.str()
		return 6
	case "decided_by":
		m.Home = d.str()
		return 7
	}
	return 0
}

// req reads the field of a Req named k, returning its number (1-11), or
// 0 when k is not one of Req's.
func (d *jdec) req(r *Req, k []byte) int {
	switch string(k) {
	case "id":
		r.ID = d.str()
		return 1
	case "at":
		r.At = d.time()
		return 2
	case "deadline":
		r.Deadline = d.time()
		return 3
	case "gateway":
		r.Gateway = d.str()
		return 4
	case "client":
		r.Client = d.str()
		return 5
	case "node":
		d.user(&r.Node)
		return 6
	case "node_url":
		r.NodeURL = d.str()
		return 7
	case "from":
		r.From = d.str()
		return 8
	case "from_user":
		d.user(&r.FromUser)
		return 9
	case "auth":
		d.object(func(k []byte) int {
			switch string(k) {
			case "scheme":
				r.Auth.Scheme = d.str()
				return 1
			case "user":
				d.user(&r.Auth.User)
				return 2
			}
			return -1
		})
		return 10
	case "dir_pos":
		r.DirPos = d.uint()
		return 11
	}
	return 0
}

func (d *jdec) stateUpdate(s *StateUpdate) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "value":
			s.Value = d.str()
			return 1
		case "default":
			s.Default = d.str()
			return 2
		case "timeout":
			s.Timeout = int(d.int(strconv.IntSize))
			return 3
		case "view_id":
			s.ViewID = int32(d.int(32))
			return 4
		}
		return -1
	})
}

func (d *jdec) lease(l *Lease) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "value":
			l.Value = d.str()
			return 1
		case "default":
			l.Default = d.str()
			return 2
		case "timeout":
			l.Timeout = int(d.int(strconv.IntSize))
			return 3
		case "view_id":
			l.ViewID = int32(d.int(32))
			return 4
		}
		return -1
	})
}

// propValues reads an array of PropValue; an empty one is empty, not nil,
// as encoding/json makes it.
func (d *jdec) propValues() []PropValue {
	d.consume('[')
	out := []PropValue{}
	if d.peek() == ']' {
		d.i++
		return out
	}
	for !d.bad {
		var p PropValue
		d.ws()
		d.object(func(k []byte) int {
			switch string(k) {
			case "ns":
				p.Space = d.str()
				return 1
			case "local":
				p.Local = d.str()
				return 2
			case "value":
				p.Value = d.str()
				return 3
			}
			return -1
		})
		out = append(out, p)
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out
		default:
			d.bad = true
		}
	}
	return nil
}
