package projections

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// Subscriptions and views are the values a home server reads most (every
// change of presence reads every watcher of the user), so they are kept in
// a compact binary form rather than JSON: a version byte, then each field
// in order, numbers as varints, strings and times length- or value-
// prefixed. A zero time is 0.

const codecV1 = 1

var errCorrupt = errors.New("corrupt value")

type enc struct{ b []byte }

func (e *enc) int(v int64)        { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) str(s string)       { e.b = binary.AppendUvarint(e.b, uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) user(u events.User) { e.str(u.Domain); e.str(u.Alias) }
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.int(0)
		return
	}
	e.int(t.UnixNano())
}

// dec decodes a value. Its strings are parts of one copy of the whole
// value (all), made once: a subscription has a dozen, which as strings of
// their own cost a dozen small allocations a decode (every watcher of a
// user whose presence changes is decoded), and, kept in the user-state
// cache, a dozen small objects a user scattered among the load's garbage,
// whose spans they keep from the heap once it is gone.
type dec struct {
	b   []byte
	all string // the whole value; b is its rest
	err error
}

func newDec(b []byte) dec { return dec{b: b, all: string(b)} }

func (d *dec) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) { // canonical only
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string {
	if d.err != nil {
		return ""
	}
	l, n := binary.Uvarint(d.b)
	var canon [binary.MaxVarintLen64]byte
	if n <= 0 || n != binary.PutUvarint(canon[:], l) || uint64(len(d.b)-n) < l {
		d.err = errCorrupt
		return ""
	}
	if l == 0 {
		d.b = d.b[n:]
		return ""
	}
	at := len(d.all) - len(d.b) + n
	d.b = d.b[n+int(l):]
	return d.all[at : at+int(l)]
}

// id decodes a subscription's or view's id: an int32, and a value
// beyond its range is corrupt (cut to 32 bits, it would name another).
func (d *dec) id() int32 {
	v := d.int()
	if v != int64(int32(v)) {
		d.err = errCorrupt
		return 0
	}
	return int32(v)
}

func (d *dec) user() events.User { return events.User{Domain: d.str(), Alias: d.str()} }

func (d *dec) time() time.Time {
	if v := d.int(); v != 0 {
		return time.Unix(0, v).UTC()
	}
	return time.Time{}
}

func (d *dec) version() {
	if len(d.b) == 0 || d.b[0] != codecV1 {
		d.err = errCorrupt
		return
	}
	d.b = d.b[1:]
}

func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorrupt
	}
	return d.err
}

func encodeSub(s *Subscription) []byte { return appendSub(make([]byte, 0, 160), s) }

// appendSub appends s, encoded, to dst.
func appendSub(dst []byte, s *Subscription) []byte {
	e := enc{b: append(dst, codecV1)}
	e.int(int64(s.ID))
	e.user(s.Node)
	e.str(s.Kind)
	e.str(s.CallBack)
	e.user(s.Watcher)
	e.str(s.Subscriber)
	e.user(s.SubscriberUser)
	e.str(s.NodeURL)
	e.int(int64(s.Lifetime))
	e.time(s.Created)
	e.time(s.Expires)
	e.str(s.Source)
	e.str(s.Credential)
	if s.Known != 0 || s.Handoff != "" {
		// Last, and only when set: records written before it decode as
		// they are. A handoff's name follows it (the id 0 then when
		// there is none).
		e.int(int64(s.Known))
	}
	if s.Handoff != "" {
		e.str(s.Handoff)
	}
	return e.b
}

func decodeSub(b []byte, s *Subscription) error {
	d := newDec(b)
	d.version()
	s.ID = d.id()
	s.Node = d.user()
	s.Kind = d.str()
	s.CallBack = d.str()
	s.Watcher = d.user()
	s.Subscriber = d.str()
	s.SubscriberUser = d.user()
	s.NodeURL = d.str()
	s.Lifetime = int(d.int())
	s.Created = d.time()
	s.Expires = d.time()
	s.Source = d.str()
	s.Credential = d.str()
	if len(d.b) > 0 && d.err == nil {
		s.Known = d.id()
		if len(d.b) > 0 && d.err == nil {
			// Written only when set: an empty one is no value written here.
			if s.Handoff = d.str(); s.Handoff == "" {
				d.err = errCorrupt
			}
		} else if s.Known == 0 {
			// Written only when set (or a handoff follows): a 0 there is
			// no value written here.
			d.err = errCorrupt
		}
	}
	return d.done()
}

func encodeView(v *View) []byte { return appendView(make([]byte, 0, 80), v) }

// appendView appends v, encoded, to dst.
func appendView(dst []byte, v *View) []byte {
	e := enc{b: append(dst, codecV1)}
	e.int(int64(v.ID))
	e.user(v.Node)
	e.str(v.Value)
	e.str(v.Default)
	e.int(int64(v.Timeout))
	e.time(v.Set)
	e.time(v.Expires)
	e.str(v.Source)
	if v.Known != 0 {
		// Last, and only when set: records written before it decode as
		// they are.
		e.int(int64(v.Known))
	}
	return e.b
}

func decodeView(b []byte, v *View) error {
	d := newDec(b)
	d.version()
	v.ID = d.id()
	v.Node = d.user()
	v.Value = d.str()
	v.Default = d.str()
	v.Timeout = int(d.int())
	v.Set = d.time()
	v.Expires = d.time()
	v.Source = d.str()
	if len(d.b) > 0 && d.err == nil {
		// Written only when set: a 0 there is no value written here.
		if v.Known = d.id(); v.Known == 0 {
			d.err = errCorrupt
		}
	}
	return d.done()
}
