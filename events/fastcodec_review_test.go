package events

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// checkDecodeLikeJSON fails t when Decode reads data otherwise than
// encoding/json: another value, or an event where encoding/json refuses
// the input. It reports whether the fast decoder took data itself.
func checkDecodeLikeJSON(t *testing.T, typ string, data []byte) (fast bool) {
	t.Helper()
	got, gotErr := Decode(typ, data)
	want, wantErr := decodeJSON(typ, data)
	_, fast = fastDecode(typ, data)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Errorf("%s %q: Decode error %v, encoding/json error %v (fast %v)", typ, data, gotErr, wantErr, fast)
	case gotErr == nil && !reflect.DeepEqual(got, want):
		t.Errorf("%s %q (fast %v):\nDecode %#v\njson   %#v", typ, data, fast, got, want)
	}
	return fast
}

// checkEncodeLikeJSON fails t when Encode writes e otherwise than
// json.Marshal, byte for byte, or succeeds where it fails.
func checkEncodeLikeJSON(t *testing.T, e Event) {
	t.Helper()
	got, gotErr := Encode(e)
	want, wantErr := json.Marshal(e)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Errorf("%T: Encode %s, %v; json.Marshal %s, %v", e, got, gotErr, want, wantErr)
	case string(got) != string(want):
		t.Errorf("%T:\nEncode %s\njson   %s", e, got, want)
	}
}

// TestReviewDecodeKeys: keys in another case, repeated, escaped or
// unknown are read as encoding/json reads them (the fast decoder leaves
// them to it).
func TestReviewDecodeKeys(t *testing.T) {
	sc := TypeSubscriptionCreated
	for _, c := range []struct {
		typ, data string
		fast      bool // the fast decoder takes it
	}{
		{sc, `{"sub_id":1,"node":{"domain":"d","alias":"a"}}`, true},
		{sc, `{"SUB_ID":1}`, false},
		{sc, `{"Sub_Id":1,"sub_id":2}`, false},
		{sc, `{"sub_id":2,"Sub_Id":1}`, false},
		{sc, `{"node":{"Domain":"d","ALIAS":"a"}}`, false},
		{sc, `{"sub_id":1,"sub_id":2}`, false},
		{sc, `{"node":{"alias":"a"},"node":{"domain":"d"}}`, false}, // encoding/json merges the two
		{sc, `{"node":{"alias":"a","alias":"b"}}`, false},
		{sc, `{"n\u006fde":{"alias":"a"}}`, false},
		{sc, `{"node":{"\u0061lias":"a"}}`, false},
		{sc, `{"sub_\u0069d":5}`, false},
		{sc, `{"unknown":[1,{"x":null}],"sub_id":3}`, false},
		{sc, `{"ID":3,"Meta":{"at":"2026-01-02T03:04:05Z"}}`, false},
		{sc, `{"at":"2026-01-02T03:04:05Z","At":"2027-01-02T03:04:05Z"}`, false},
		{sc, `{"ſub_id":4}`, false}, // U+017F folds to s in encoding/json
		{sc, `{"sub_id\u0000":4}`, false},
		{TypeSubscribe, `{"auth":{"scheme":"ntlm","Scheme":"digest"}}`, false},
		{TypeSubscribe, `{"auth":"ntlm:a@b"}`, false},
		{TypeRenew, `{"id":"r","sub_id":1,"ID":"s"}`, false},
		{TypeReply, `{"id":"x","status":200,"Status":201}`, false},
		{TypeReply, `{"found":[{"ns":"n","NS":"m","local":"l"}]}`, false},
		{TypeReply, `{"found":[{"ns":"n","local":"l","value":"v","value":"w"}]}`, false},
		{TypeReply, `{"lease":{"value":"a"},"lease":{"default":"b"}}`, false},
		{TypePropPatch, `{"state":{"value":"a"},"state":{"timeout":3}}`, false},
		{TypeViewSet, `{"Set":"2026-01-02T03:04:05Z","set":"2026-01-02T03:04:06Z"}`, false},
		{TypeSubscriptionEnded, `{"move":1,"MOVE":2}`, false},
	} {
		if fast := checkDecodeLikeJSON(t, c.typ, []byte(c.data)); fast != c.fast {
			t.Errorf("%s %s: fast decoder took it %v, want %v", c.typ, c.data, fast, c.fast)
		}
	}
}

// TestReviewDecodeValues: nulls, escapes, numbers, white space, trailing
// data and odd times read as encoding/json reads them.
func TestReviewDecodeValues(t *testing.T) {
	cases := map[string][]string{
		TypeSubscriptionCreated: {
			// nulls: encoding/json leaves the field as it was
			`{"kind":null}`, `{"node":null}`, `{"at":null}`, `{"expires":null}`, `{"sub_id":null}`, `null`, ` null `,
			// escapes
			`{"kind":"\ud83d\ude00"}`, `{"kind":"\uD83D\uDE00"}`, `{"kind":"\ud800"}`, `{"kind":"\udc00x"}`, `{"kind":"\ud800\u0041"}`,
			`{"kind":"\ud800\ud800"}`, `{"kind":"\u00e9\u00E9\/\b\f\n\r\t\"\\"}`, `{"kind":"\u0000\u001f"}`, `{"kind":"\u2028\u2029"}`,
			`{"kind":"\x"}`, `{"kind":"\u12"}`, `{"kind":"\u12g4"}`, `{"kind":"\u+123"}`, `{"kind":"\u-123"}`, `{"kind":"\U00e9"}`,
			`{"kind":"\'"}`, `{"kind":"\`, `{"kind":"\u`, `{"kind":"\u00`,
			// raw bytes in strings
			"{\"kind\":\"\x00\"}", "{\"kind\":\"\x1f\"}", "{\"kind\":\"\x7f\"}", "{\"kind\":\"\xff\"}", "{\"kind\":\"a\xc3\"}",
			"{\"kind\":\"\xed\xa0\x80\"}", "{\"kind\":\"\xef\xbf\xbd\"}", "{\"kind\":\"\u2028\"}", "{\"kind\":\"\\n\xff\"}",
			"{\"kind\":\"\xf4\x90\x80\x80\"}", "{\"kind\":\"\xc0\xaf\"}",
			// numbers
			`{"sub_id":-0}`, `{"sub_id":0}`, `{"sub_id":01}`, `{"sub_id":-01}`, `{"sub_id":1.0}`, `{"sub_id":1e2}`, `{"sub_id":1E2}`,
			`{"sub_id":2147483647}`, `{"sub_id":-2147483648}`, `{"sub_id":2147483648}`, `{"sub_id":-2147483649}`,
			`{"sub_id":+1}`, `{"sub_id":-}`, `{"sub_id":"1"}`, `{"sub_id":1 }`, `{"sub_id":0x10}`, `{"sub_id":true}`,
			`{"lifetime":9223372036854775807}`, `{"lifetime":-9223372036854775808}`, `{"lifetime":9223372036854775808}`,
			`{"lifetime":99999999999999999999999}`, `{"known_id":-0.0}`, `{"sub_id":Infinity}`, `{"sub_id":NaN}`,
			// white space, trailing data, empty input
			"\t\r\n {\t\"sub_id\"\n:\r1 ,\"kind\" : \"k\" }\n\t ", "{\"sub_id\":1}\f", "\ufeff{\"sub_id\":1}", "\v{}",
			`{}`, `{ }`, ``, ` `, `{`, `}`, `{}{}`, `{} {}`, `{}x`, `{},`, `[]`, `"x"`, `1`, `{"sub_id":1,}`, `{,"sub_id":1}`,
			`{"sub_id" 1}`, `{"sub_id":1 "kind":"k"}`, `{"node":{}}`, `{"node":{ }}`, `{"node":{,}}`, `{"node":[]}`,
			`{"sub_id":1}}`, `{"sub_id":1]`, `{'sub_id':1}`, `{sub_id:1}`,
			// times
			`{"expires":"2026-01-02T03:04:05Z"}`, `{"expires":"2026-01-02T03:04:05.123456789+05:30"}`,
			`{"expires":"2026-01-02T03:04:05.1234567891Z"}`, `{"expires":"2026-01-02T03:04:05,5Z"}`, `{"expires":"2026-01-02t03:04:05z"}`,
			`{"expires":"2026-01-02 03:04:05Z"}`, `{"expires":"2026-01-02T03:04:60Z"}`, `{"expires":"2026-01-02T24:00:00Z"}`,
			`{"expires":"2026-01-02T03:04:05+24:00"}`, `{"expires":"2026-01-02T03:04:05+23:59"}`, `{"expires":"2026-01-02T03:04:05-00:00"}`,
			`{"expires":"0000-01-01T00:00:00Z"}`, `{"expires":"9999-12-31T23:59:59.999999999Z"}`, `{"expires":"10000-01-01T00:00:00Z"}`,
			`{"expires":"-0001-01-01T00:00:00Z"}`, `{"expires":"2026-02-30T00:00:00Z"}`, `{"expires":"2026-01-02T3:04:05Z"}`,
			`{"expires":"2026-01-02T03:04:05.Z"}`, `{"expires":"2026-01-02T03:04:05+0100"}`, `{"expires":"2026-01-02T03:04:05"}`,
			`{"expires":"2026-01-02T03:04:05\u005a"}`, `{"expires":"2026\u002d01-02T03:04:05Z"}`, `{"expires":""}`, `{"expires":"x`,
			"{\"expires\":\"2026-01-02T03:04:05\x00Z\"}", "{\"expires\":\"2026-01-02T03:04:05Z\xff\"}", `{"expires":1767323045}`,
		},
		TypeSubscriptionEnded: {
			`{"move":18446744073709551615}`, `{"move":18446744073709551616}`, `{"move":-1}`, `{"move":-0}`, `{"move":0}`,
			`{"by_user":{"alias":"a"},"move":3}`,
		},
		TypeSubscribe: {
			`{"dir_pos":18446744073709551615}`, `{"dir_pos":-0}`, `{"auth":{}}`, `{"auth":{"user":{}}}`, `{"auth":null}`,
			`{"call_back_user":null}`, `{"lifetime":1,"deadline":"2026-01-02T03:04:05Z","at":"0001-01-01T00:00:00Z"}`,
		},
		TypeNotify: {
			`{"body":""}`, `{"body":null}`, `{"body":"YQ=="}`, `{"body":"YQ"}`, `{"body":"YQ\r\n=="}`, `{"body":"Y\nQ=="}`,
			`{"body":"YQ==\n"}`, `{"body":"-_8="}`, `{"body":"+/8="}`, `{"body":"YQ= ="}`, `{"body":"YR=="}`, `{"body":"\u0059Q=="}`,
			`{"body":[1,2]}`, `{"hop_count":-1}`,
		},
		TypePropPatch: {
			`{"state":null}`, `{"state":{}}`, `{"set":null}`, `{"set":[]}`, `{"set":[ ]}`, `{"set":[{}]}`, `{"set":[{},]}`,
			`{"set":[,{}]}`, `{"set":[{}{}]}`, `{"set":[{"ns":"a","local":"b","value":"c"},{"ns":"d"}]}`, `{"set":{}}`,
			`{"state":{"view_id":2147483648}}`, `{"state":{"timeout":-5,"default":"x"}}`,
		},
		TypeReply: {
			`{"found":[]}`, `{"found":null}`, `{"lease":null}`, `{"lease":{}}`, `{"listed":true}`, `{"listed":false}`,
			`{"listed":null}`, `{"listed":1}`, `{"listed":tru}`, `{"listed":truee}`, `{"has_acl":true,"listed":true}`,
			`{"missing":[{"ns":"a","local":"b"}]}`, `{"raw":{"status":200}}`, `{"subscriptions":[]}`,
		},
	}
	for typ, datas := range cases {
		for _, data := range datas {
			checkDecodeLikeJSON(t, typ, []byte(data))
		}
	}
}

// TestReviewDecodeEveryByte: every byte, and every byte after a
// backslash, in a string value reads as encoding/json reads it.
func TestReviewDecodeEveryByte(t *testing.T) {
	for c := range 256 {
		for _, f := range []string{"{\"kind\":\"a%sb\"}", "{\"kind\":\"a\\%sb\"}", "{\"node\":{\"alias\":\"%s\"}}", "{\"sub_id\":1%s}"} {
			data := strings.Replace(f, "%s", string([]byte{byte(c)}), 1)
			checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(data))
		}
	}
	// each \uXXXX around the surrogates and the ends of the planes
	for _, r := range []int{0, 0x1f, 0x20, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffd, 0xfffe, 0xffff} {
		const hex = "0123456789abcdef"
		esc := []byte{'\\', 'u', hex[r>>12], hex[r>>8&15], hex[r>>4&15], hex[r&15]}
		checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"kind":"`+string(esc)+`"}`))
		checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"kind":"`+string(esc)+`\udc00"}`))
	}
}

// TestReviewDecodeBig: long strings, many properties and deep nesting in
// an unknown field read as encoding/json reads them.
func TestReviewDecodeBig(t *testing.T) {
	long := strings.Repeat("ab\u00e9\u2028", 1<<18)
	checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"kind":"`+long+`"}`))
	checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"kind":"`+strings.Repeat(`\n\u00e9`, 1<<16)+`"}`))
	var b strings.Builder
	b.WriteString(`{"id":"x","status":207,"found":[`)
	for i := range 20000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"ns":"DAV:","local":"displayname","value":"v"}`)
	}
	b.WriteString(`]}`)
	if !checkDecodeLikeJSON(t, TypeReply, []byte(b.String())) {
		t.Error("the fast decoder refused 20,000 properties")
	}
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"x":`+deep+`}`))
	checkDecodeLikeJSON(t, TypeSubscriptionCreated, []byte(`{"x":`+deep[:10000]+deep[30000:]+`}`))
}

// TestReviewEncodeStrings: strings with HTML characters, line and
// paragraph separators, control characters and invalid UTF-8 are written
// byte for byte as encoding/json writes them, in every fast event type.
func TestReviewEncodeStrings(t *testing.T) {
	var all []string
	for c := range 256 {
		all = append(all, "x"+string([]byte{byte(c)})+"y")
	}
	all = append(all, "<script>&amp;</script>", "\u2028\u2029", "\ufffd", "\xef\xbf\xbd\xef\xbf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xc0\xaf", "\U0010ffff", "\u007f\u0080\u00ff", "\"\\/", "", strings.Repeat("\xff<", 500))
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, s := range all {
		u := User{Domain: s, Alias: s}
		req := Req{ID: s, At: at, Deadline: at, Gateway: s, Client: s, Node: u, NodeURL: s, From: s, FromUser: u, Auth: Identity{Scheme: s, User: u}}
		meta := Meta{At: at, Request: s, Actor: s, Auth: s, Client: s, Gateway: s, Home: s}
		for _, e := range []Event{
			&Subscribe{Req: req, NotificationType: s, CallBack: s, CallBackUser: u},
			&SubscriptionCreated{Meta: meta, Node: u, Kind: s, CallBack: s, Watcher: u, Subscriber: s, SubscriberUser: u, NodeURL: s, Source: s, Credential: s, Handoff: s},
			&Reply{ID: s, Error: s, Location: s, Href: s, Found: []PropValue{{Prop{s, s}, s}}, Missing: []Prop{{s, s}}, Forbidden: []Prop{{s, s}}, Lease: &Lease{Value: s, Default: s}},
			&PropPatch{Req: req, State: &StateUpdate{Value: s, Default: s}, Set: []PropValue{{Prop{s, s}, s}}},
			&Notify{Req: req, AckType: s, Body: []byte(s)},
			&SubscriptionEnded{Meta: meta, Node: u, Reason: s, By: s, ByUser: u},
			&ViewSet{Meta: meta, Node: u, Value: s, Default: s, Source: s},
			&ViewEnded{Meta: meta, Node: u, Reason: s},
			&MessageAccepted{Meta: meta, Node: u, AckType: s, Body: []byte(s), BodySHA256: s},
		} {
			checkEncodeLikeJSON(t, e)
		}
	}
}

// TestReviewEncodeTimes: times in other zones, with a monotonic reading,
// at the ends of the years encoding/json writes and past them, and zero
// times in a zone are written as encoding/json writes them (or refused
// as it refuses them).
func TestReviewEncodeTimes(t *testing.T) {
	times := []time.Time{
		{},
		time.Now(), // a monotonic reading
		time.Now().In(time.FixedZone("x", 5*3600+30*60)),
		time.Time{}.In(time.FixedZone("x", 3600)), // zero, in a zone: IsZero
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("lmt", -75)),
		time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.FixedZone("", -(23*3600+59*60))),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 24*3600)),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -24*3600)),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.Local),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -3600)), // year 10000 in UTC
		time.Date(0, 1, 1, 0, 30, 0, 0, time.FixedZone("", 3600)),       // year -1 in UTC
		time.Unix(math.MaxInt64/4, 0),
		time.Unix(-math.MaxInt64/4, 0),
	}
	if loc, err := time.LoadLocation("America/St_Johns"); err == nil {
		times = append(times, time.Date(2026, 7, 1, 12, 0, 0, 0, loc))
	}
	for _, at := range times {
		req := Req{ID: "r", At: at, Deadline: at}
		meta := Meta{At: at}
		for _, e := range []Event{
			&Subscribe{Req: req},
			&Renew{Req: req},
			&Unsubscribe{Req: req},
			&PropPatch{Req: req},
			&Notify{Req: req},
			&SubscriptionCreated{Meta: meta, Expires: at},
			&SubscriptionCreated{Meta: Meta{}, Expires: at},
			&SubscriptionRenewed{Meta: meta, Expires: at},
			&SubscriptionEnded{Meta: meta},
			&ViewSet{Meta: meta, Expires: at, Set: at},
			&ViewSet{Set: at},
			&ViewEnded{Meta: meta},
			&MessageAccepted{Meta: meta},
			&MessageDelivered{Meta: meta},
		} {
			checkEncodeLikeJSON(t, e)
		}
	}
}

// TestReviewEncodeEmpty: integers at their limits, nil and empty slices,
// nil and zero pointers, zero and half-zero users and identities, and the
// Reply fields the fast encoder leaves to encoding/json.
func TestReviewEncodeEmpty(t *testing.T) {
	half := []User{{}, {Domain: "d"}, {Alias: "a"}}
	var events []Event
	for _, n := range []int64{0, 1, -1, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		events = append(events,
			&Subscribe{Lifetime: int(n), Req: Req{DirPos: uint64(n)}},
			&Renew{ID: int32(n), Lifetime: int(n)},
			&Unsubscribe{ID: int32(n)},
			&SubscriptionCreated{ID: int32(n), Lifetime: int(n), Known: int32(n)},
			&SubscriptionRenewed{ID: int32(n), Lifetime: int(n)},
			&SubscriptionEnded{ID: int32(n), Move: uint64(n)},
			&ViewSet{ID: int32(n), Timeout: int(n), Known: int32(n)},
			&ViewEnded{ID: int32(n)},
			&MessageAccepted{HopCount: int(n), Endpoints: int(n), BodySize: int(n)},
			&MessageDelivered{Status: int(n), Delivered: int(n), Failed: int(n)},
			&Notify{HopCount: int(n)},
			&Reply{Status: int(n), RetryAfter: int(n), SubscriptionID: int32(n), Lifetime: int(n), Lease: &Lease{Timeout: int(n), ViewID: int32(n)}, Kept: int(n)},
			&Reply{Kept: int(n)},
			&PropPatch{State: &StateUpdate{Timeout: int(n), ViewID: int32(n)}},
		)
	}
	for _, u := range half {
		for _, scheme := range []string{"", "ntlm"} {
			req := Req{Node: u, FromUser: u, Auth: Identity{Scheme: scheme, User: u}}
			events = append(events,
				&Subscribe{Req: req, CallBackUser: u},
				&SubscriptionCreated{Node: u, Watcher: u, SubscriberUser: u},
				&SubscriptionEnded{Node: u, ByUser: u},
			)
		}
	}
	events = append(events,
		&Notify{}, &Notify{Body: []byte{}}, &Notify{Body: []byte{0, 0xff, '<'}},
		&MessageAccepted{}, &MessageAccepted{Body: []byte{}}, &MessageAccepted{Body: []byte{0xfb, 0xff}},
		&PropPatch{}, &PropPatch{State: &StateUpdate{}}, &PropPatch{Set: []PropValue{}}, &PropPatch{Set: []PropValue{{}}},
		&Reply{}, &Reply{Found: []PropValue{}, Missing: []Prop{}, Forbidden: []Prop{}}, &Reply{Found: []PropValue{{}}, Missing: []Prop{{}}},
		&Reply{Lease: &Lease{}},
		&Reply{Subscriptions: []SubscriptionInfo{{ID: 1}}}, &Reply{Subscriptions: []SubscriptionInfo{}}, &Reply{Listed: true},
		&Reply{ACL: []ACE{{}}}, &Reply{ACL: []ACE{}}, &Reply{HasACL: true}, &Reply{Raw: &RawAnswer{Header: map[string]string{"b": "<", "a": "&"}, Body: []byte("x")}},
		(*Subscribe)(nil), (*SubscriptionCreated)(nil), (*Reply)(nil), (*PropPatch)(nil), (*Renew)(nil), (*Unsubscribe)(nil), (*Notify)(nil),
		(*SubscriptionRenewed)(nil), (*SubscriptionEnded)(nil), (*ViewSet)(nil), (*ViewEnded)(nil), (*MessageAccepted)(nil), (*MessageDelivered)(nil),
	)
	events = append(events, sampleEvents()...)
	for _, e := range events {
		checkEncodeLikeJSON(t, e)
	}
}

// TestReviewRoundTripSamples: what the fast encoder writes of every
// sample event, and each of its keys in upper case, decodes as
// encoding/json decodes it.
func TestReviewRoundTripSamples(t *testing.T) {
	for _, e := range sampleEvents() {
		data, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodeLikeJSON(t, e.Type(), data)
		checkDecodeLikeJSON(t, e.Type(), []byte(strings.ToUpper(string(data))))
	}
}

// TestReviewDecodeIntWidth: an int field is read as wide as int is, as
// encoding/json reads it. The fast decoder read every int as 64 bits and
// truncated it where int has 32 (GOARCH=386, arm): {"lifetime":
// 9223372036854775807} decoded where encoding/json refuses it.
func TestReviewDecodeIntWidth(t *testing.T) {
	fields := map[string][]string{
		TypeSubscriptionCreated: {`"lifetime":%s`},
		TypeSubscriptionRenewed: {`"lifetime":%s`},
		TypeViewSet:             {`"timeout":%s`},
		TypeSubscribe:           {`"lifetime":%s`},
		TypeRenew:               {`"lifetime":%s`},
		TypeNotify:              {`"hop_count":%s`},
		TypePropPatch:           {`"state":{"timeout":%s}`},
		TypeReply:               {`"status":%s`, `"retry_after":%s`, `"lifetime":%s`, `"lease":{"timeout":%s}`},
	}
	for typ, fs := range fields {
		for _, f := range fs {
			for _, n := range []string{"2147483647", "2147483648", "-2147483648", "-2147483649", "4294967296",
				"9223372036854775807", "-9223372036854775808", "9223372036854775808"} {
				checkDecodeLikeJSON(t, typ, []byte("{"+strings.Replace(f, "%s", n, 1)+"}"))
			}
		}
	}
}
