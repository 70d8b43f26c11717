package projections

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

func TestCodecRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891011, time.UTC)
	for _, s := range []Subscription{
		{},
		{ID: 7, Node: events.NewUser("example.test", "ann"), Kind: events.NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/ben",
			Watcher: events.NewUser("example.test", "ben"), Subscriber: "http://im.example.test/instmsg/aliases/ben", SubscriberUser: events.NewUser("example.test", "ben"),
			NodeURL: "http://im.example.test/instmsg/aliases/ann", Lifetime: 14400, Created: at, Expires: at.Add(4 * time.Hour), Source: "10.0.0.1", Credential: "ntlm"},
		{ID: -1, Lifetime: -5, Created: time.Unix(0, 1).UTC()},
		{ID: 12, Kind: events.NotifyPropChange, Known: 2},
		{ID: 13, Kind: events.NotifyPropChange, Handoff: "home1/example.test/ann/7"},
		{ID: 14, Kind: events.NotifyPropChange, Known: 3, Handoff: "home1/example.test/ann/7"},
	} {
		var got Subscription
		b := encodeSub(&s)
		if err := decodeSub(b, &got); err != nil || !reflect.DeepEqual(got, s) {
			t.Errorf("subscription %+v came back %+v (%v)", s, got, err)
		}
		// Its strings are its own: Pebble reuses the bytes it read.
		clear(b)
		if !reflect.DeepEqual(got, s) {
			t.Errorf("subscription %+v changed with the bytes it was decoded from: %+v", s, got)
		}
	}
	for _, v := range []View{{}, {ID: 3, Node: events.NewUser("x.test", "a.b"), Value: "busy", Default: "offline", Timeout: 600, Set: at, Expires: at.Add(time.Hour), Source: "::1"},
		{ID: 12, Value: "online", Known: 2}} {
		var got View
		if err := decodeView(encodeView(&v), &got); err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("view %+v came back %+v (%v)", v, got, err)
		}
	}
}

// FuzzDecodeSub: a stored value the decoder cannot read is an error, never
// a panic; what it reads encodes back to the same bytes.
func FuzzDecodeSub(f *testing.F) {
	f.Add(encodeSub(&Subscription{ID: 7, Node: events.NewUser("example.test", "ann"), Kind: events.NotifyPragma, CallBack: "http://10.0.0.1:4000",
		Expires: time.Unix(1800000000, 5).UTC()}))
	f.Add(encodeView(&View{ID: 3, Value: "busy", Set: time.Unix(1800000000, 0).UTC()}))
	f.Add([]byte{codecV1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Subscription
		if decodeSub(b, &s) == nil {
			if got := encodeSub(&s); string(got) != string(b) {
				t.Errorf("%x decoded to %+v, which encodes to %x", b, s, got)
			}
		}
		var v View
		if decodeView(b, &v) == nil {
			if got := encodeView(&v); string(got) != string(b) {
				t.Errorf("%x decoded to %+v, which encodes to %x", b, v, got)
			}
		}
	})
}

// TestDecodeRejectsWideID: an id is an int32; a stored varint beyond its
// range is a corrupt value, not an id cut to 32 bits (which would read
// another subscription's or view's id, and encode back otherwise).
func TestDecodeRejectsWideID(t *testing.T) {
	for _, id := range []int64{1 << 31, -1<<31 - 1, 1 << 40} {
		e := enc{b: []byte{codecV1}}
		e.int(id)
		sub := append(bytes.Clone(e.b), encodeSub(&Subscription{})[2:]...)
		var s Subscription
		if err := decodeSub(sub, &s); err == nil {
			t.Errorf("subscription with id %d decoded as id %d", id, s.ID)
		}
		view := append(bytes.Clone(e.b), encodeView(&View{})[2:]...)
		var v View
		if err := decodeView(view, &v); err == nil {
			t.Errorf("view with id %d decoded as id %d", id, v.ID)
		}
	}
}
