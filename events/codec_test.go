package events

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func sampleEvents() []Event {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	req := Req{ID: "r1", At: at, Deadline: at.Add(time.Second), Gateway: "gw1", Client: "10.0.0.21",
		Node: NewUser("example.test", "bob"), NodeURL: "http://im.example.test/instmsg/aliases/bob",
		From: "http://im.example.test/instmsg/aliases/alice", FromUser: NewUser("example.test", "alice"),
		Auth: Identity{Scheme: "none", User: NewUser("example.test", "alice")}}
	meta := req.Meta(at, "home1")
	bob := NewUser("example.test", "bob")
	return []Event{
		&Subscribe{Req: req, NotificationType: NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/alice", Lifetime: 14400},
		&Renew{Req: req, ID: 7, Lifetime: 14400},
		&Unsubscribe{Req: req, ID: 7},
		&ListSubscriptions{Req: req, NotificationType: NotifyPragma},
		&PropFind{Req: req, Props: []Prop{PropDisplayName, {NSRVP, "foo"}}},
		&PropPatch{Req: req, State: &StateUpdate{Value: "busy", Default: "offline", Timeout: 1200, ViewID: 3}, Set: []PropValue{{Prop: PropMobileState, Value: "1"}}},
		&PropertySet{Meta: meta, Node: bob, Value: PropValue{Prop: PropMobileDescription, Value: "+1 555 0100"}},
		&Notify{Req: req, AckType: "DeepOr", HopCount: 1, Body: []byte("<r:notification/>")},
		&ACL{Req: req, Write: true, ACEs: DefaultACL(NewUser("example.test", "bob"), "http://im.example.test/instmsg/aliases/bob")},
		&Relay{Req: req, Body: []byte("<r:notification/>")},
		&UserDeparted{Meta: meta, Node: bob, To: "home2", Move: 7, Subs: 2, Views: 1, Clears: true},
		&UserArrived{Meta: meta, Node: bob, From: "home1", Move: 7, Subs: 2, Views: 1},
		&Handoff{Req: req, From: "home1", Move: 7, Subs: []SubState{{ID: 3, Kind: NotifyPragma, CallBack: "http://10.0.0.1:1", Lifetime: 60, Expires: at, Known: 2}},
			Views: []ViewState{{ID: 4, Value: "busy", Default: "offline", Timeout: 60, Expires: at, Known: 3, Set: at.Add(-time.Hour)}}, ACL: DefaultACL(NewUser("example.test", "x"), "x"), Props: []PropValue{{Prop: PropMobileState, Value: "1"}}, More: true},
		&ACLSet{Meta: meta, Node: bob, ACEs: []ACE{{Principal: "http://x/instmsg/aliases/m", User: NewUser("x", "m"), Credentials: []string{CredAny}, Deny: []string{RightPresence}}}},
		&Lookup{ID: "r2", At: at, Deadline: at, Gateway: "gw1", Client: "1.2.3.4", Method: "SUBSCRIBE", Host: "im.acme.test", Alias: "dave"},
		&Reply{ID: "r1", Status: 207, Href: "http://x/instmsg/aliases/bob", Found: []PropValue{{PropState, "online"}}, Lease: &Lease{"online", "offline", 1200, 3}},
		&SubscriptionCreated{Meta: meta, Node: bob, ID: 1, Kind: NotifyPragma, CallBack: "http://10.0.0.21:3044", Lifetime: 14400, Expires: at.Add(4 * time.Hour), Known: 9,
			Handoff: HandoffOf("home1", bob, 7)},
		&SubscriptionRenewed{Meta: meta, Node: bob, ID: 1, Lifetime: 60, Expires: at.Add(time.Minute)},
		&SubscriptionEnded{Meta: meta, Node: bob, ID: 2, Reason: EndUnsubscribed, Move: 7, By: "http://im.example.test/instmsg/aliases/ben",
			ByUser: NewUser("example.test", "ben")},
		&ViewSet{Meta: meta, Node: bob, ID: 12, Value: StateBusy, Default: StateOffline, Timeout: 1200, Expires: at.Add(20 * time.Minute), Source: "10.0.0.21", Known: 2, Set: at.Add(-time.Minute)},
		&ViewEnded{Meta: meta, Node: bob, ID: 2, Reason: EndOffline},
		&MessageAccepted{Meta: meta, Node: bob, AckType: "DeepOr", HopCount: 1, Endpoints: 2, Body: []byte("<![CDATA[x]]>")},
		&MessageDelivered{Meta: meta, Node: bob, Status: 200, Delivered: 1, Failed: 1},
		&RequestForwarded{Meta: meta, Node: bob, To: "home2", Move: 12},
		&HomeFenced{Meta: meta, Holder: "node-b", Term: 8, Part: 1, Parts: 512},
		&DomainCreated{Meta: meta, Domain: "example.test", IMHost: "im.example.test", EmailDomains: []string{"example.test"}},
		&HomeServerCreated{Meta: meta, Name: "home1", Host: "home1.example.test", HostsUsers: true},
		&UserEnabled{Meta: meta, User: bob, Home: "home1", DisplayName: "Bob", Email: "bob@example.test"},
		&UserDisabled{Meta: meta, User: bob},
		&DomainDeleted{Meta: meta, Domain: "example.test"},
		&DomainHostsSet{Meta: meta, Domain: "example.test", EmailDomains: []string{"example.test", "corp.example.test"}, Hosts: []string{"gw7.example.test"}},
		&HomeServerChanged{Meta: meta, Name: "home1", HostsUsers: false},
		&HomeServerDeleted{Meta: meta, Name: "home1"},
		&RouterCreated{Meta: meta, Name: "router1", Domain: "example.test", Host: "im.example.test"},
		&RouterDeleted{Meta: meta, Name: "router1"},
		&UserMoved{Meta: meta, User: bob, From: "home1", Home: "home2"},
		&PasswordSet{Meta: meta, User: bob, Verifiers: []byte{1, 2, 3}},
		&AdminSet{Meta: meta, Name: "ops", Role: RoleDomain, Domains: []string{"example.test"}, Verifiers: []byte{4}},
		&AdminRemoved{Meta: meta, Name: "ops"},
		&TopologySet{Meta: meta, Inside: []string{"10.0.0.0/8"}},
		&FederationSet{Meta: meta, InternetCapable: true},
		&ClusterCreated{Meta: meta, KeyCheck: "0123456789abcdef", Replicas: 3},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range sampleEvents() {
		data, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(e.Type(), data)
		if err != nil {
			t.Fatalf("decode %s: %v", e.Type(), err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("%s round trip:\n got %#v\nwant %#v", e.Type(), got, e)
		}
		if seen[e.Type()] {
			t.Errorf("type name %s used twice", e.Type())
		}
		seen[e.Type()] = true
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range sampleEvents() {
		data, _ := Encode(e)
		f.Add(e.Type(), data)
	}
	f.Add("nope.v1", []byte("{}"))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		e, err := Decode(typ, data)
		if err != nil {
			return
		}
		if e.Type() != typ {
			t.Fatalf("Decode(%q) returned a %s", typ, e.Type())
		}
		again, err := Encode(e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		// Encoding is a fixed point after one decode (nil and empty slices
		// encode alike, so compare encodings, not values).
		e2, err := Decode(typ, again)
		if err != nil {
			t.Fatalf("decode(encode(decode(x))): %v", err)
		}
		if third, _ := Encode(e2); string(third) != string(again) {
			t.Fatalf("encode(decode(encode(decode(x)))) = %s, want %s", third, again)
		}
	})
}

// FuzzFastDecode: whatever the fast decoder accepts, encoding/json
// decodes to the same value; and it accepts what encoding/json writes of
// the types it knows.
func FuzzFastDecode(f *testing.F) {
	for _, e := range sampleEvents() {
		data, _ := Encode(e)
		f.Add(e.Type(), data)
		if _, ok := fastDecode(e.Type(), data); !ok && fastTypes[e.Type()] {
			f.Fatalf("the fast decoder refuses %s as encoding/json writes it: %s", e.Type(), data)
		}
	}
	f.Add(TypeSubscriptionCreated, []byte(`{"node":{"domain":"a\u00e9\n","alias":"b"},"sub_id":-0,"expires":"2026-01-02T03:04:05.123+01:00" }`))
	f.Add(TypeReply, []byte(`{"id":"x","status":207,"found":[],"lease":{"value":"online"}}`))
	f.Add(TypeNotify, []byte(`{"body":"","dir_pos":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		fast, ok := fastDecode(typ, data)
		if !ok {
			return
		}
		want, err := decodeJSON(typ, data)
		if err != nil {
			t.Fatalf("fast decoder took %s %q, encoding/json refuses it: %v", typ, data, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%s %q:\nfast %#v\njson %#v", typ, data, fast, want)
		}
	})
}

// fastTypes are the types the fast decoder knows.
var fastTypes = map[string]bool{TypeSubscriptionCreated: true, TypeSubscriptionRenewed: true, TypeSubscriptionEnded: true,
	TypeViewSet: true, TypeViewEnded: true, TypeSubscribe: true, TypeRenew: true, TypeUnsubscribe: true, TypePropPatch: true,
	TypeNotify: true, TypeReply: true}

func BenchmarkDecode(b *testing.B) {
	for _, e := range sampleEvents() {
		if !fastTypes[e.Type()] {
			continue
		}
		data, _ := Encode(e)
		b.Run(e.Type()+"/fast", func(b *testing.B) {
			for b.Loop() {
				if _, err := Decode(e.Type(), data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(e.Type()+"/json", func(b *testing.B) {
			for b.Loop() {
				if _, err := decodeJSON(e.Type(), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFastEncode: what the fast encoder writes of the sample events is
// what encoding/json writes, and it writes the types it is for.
func TestFastEncode(t *testing.T) {
	done := map[string]bool{}
	for _, e := range sampleEvents() {
		checkFastEncode(t, e)
		if _, ok := fastEncode(e); ok {
			done[e.Type()] = true
		}
	}
	for _, typ := range []string{TypeSubscribe, TypeSubscriptionCreated, TypeReply, TypePropPatch, TypeRenew, TypeUnsubscribe, TypeNotify,
		TypeSubscriptionRenewed, TypeSubscriptionEnded, TypeViewSet, TypeViewEnded, TypeMessageAccepted, TypeMessageDelivered} {
		if !done[typ] {
			t.Errorf("the fast encoder does not write %s", typ)
		}
	}
}

// TestFastEncodeNil: a nil event of a type the fast encoder writes is
// encoding/json's to write, as null.
func TestFastEncodeNil(t *testing.T) {
	for _, e := range []Event{(*Subscribe)(nil), (*PropPatch)(nil), (*Renew)(nil), (*Notify)(nil), (*ViewSet)(nil), (*Reply)(nil), (*MessageAccepted)(nil)} {
		data, err := Encode(e)
		if err != nil || string(data) != "null" {
			t.Errorf("%T(nil): %q %v, want null", e, data, err)
		}
	}
}

// checkFastEncode fails t when the fast encoder writes e otherwise than
// encoding/json.
func checkFastEncode(t *testing.T, e Event) {
	t.Helper()
	fast, ok := fastEncode(e)
	want, err := json.Marshal(e)
	if !ok {
		return
	}
	if err != nil {
		t.Fatalf("fast encoder wrote %T %s, encoding/json refuses it: %v", e, fast, err)
	}
	if string(fast) != string(want) {
		t.Fatalf("%T:\nfast %s\njson %s", e, fast, want)
	}
}

// FuzzFastEncode: whatever strings, numbers and times the hot events
// hold, the fast encoder writes them as encoding/json does, or leaves them
// to it.
func FuzzFastEncode(f *testing.F) {
	f.Add("alice", "example.test", "http://10.0.0.1:3044/x?<&>", int64(14400), int64(1795000000), int64(123456789), 3600)
	f.Add("a\u00e9\n\"\\\x00\x1f\x7f", "\xff\xfe", "\u2028\u2029\U0001F600", int64(-1), int64(-70000000000), int64(0), -45296)
	f.Add("", "", "", int64(0), int64(253402300800), int64(1), 86399)
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, n, sec, nsec int64, offset int) {
		at := time.Unix(sec, nsec).In(time.FixedZone("z", offset%(100*3600)))
		u := User{Domain: s2, Alias: s1}
		req := Req{ID: s1, At: at, Deadline: at.UTC(), Gateway: s2, Client: s3, Node: u, NodeURL: s3, From: s1,
			FromUser: User{Alias: s3}, Auth: Identity{Scheme: s2, User: u}, DirPos: uint64(n)}
		meta := Meta{At: at, Request: s1, Actor: s2, Auth: s3, Client: s1, Gateway: s2, Home: s3}
		for _, e := range []Event{
			&Subscribe{Req: req, NotificationType: s1, CallBack: s3, CallBackUser: User{Domain: s1}, Lifetime: int(n)},
			&Subscribe{Req: Req{ID: s3, Auth: Identity{Scheme: s1}}},
			&SubscriptionCreated{Meta: meta, Node: u, ID: int32(n), Kind: s1, CallBack: s2, Watcher: User{Alias: s2}, Subscriber: s3,
				SubscriberUser: u, NodeURL: s1, Lifetime: int(n), Expires: at, Source: s2, Credential: s3, Known: int32(n), Handoff: s1},
			&SubscriptionCreated{Meta: Meta{At: at}},
			&Reply{ID: s1, Status: int(n), Error: s2, RetryAfter: int(n), SubscriptionID: int32(n), Lifetime: int(n), Location: s3, Href: s1,
				Found: []PropValue{{Prop{s1, s2}, s3}, {}}, Missing: []Prop{{s2, s3}}, Forbidden: []Prop{{}}, Lease: &Lease{s1, s2, int(n), int32(n)}, Kept: int(n)},
			&Reply{ID: s2, Found: []PropValue{}},
			&PropPatch{Req: req, State: &StateUpdate{Value: s1, Default: s2, Timeout: int(n), ViewID: int32(n)}, Set: []PropValue{{Prop{s1, s2}, s3}, {}}},
			&PropPatch{Req: req, State: &StateUpdate{}, Set: []PropValue{}},
			&PropPatch{Req: Req{ID: s2}},
			&Renew{Req: req, ID: int32(n), Lifetime: int(n)},
			&Unsubscribe{Req: req, ID: int32(n)},
			&Notify{Req: req, AckType: s1, HopCount: int(n), Body: []byte(s3)},
			&Notify{Req: req},
			&Notify{Req: req, Body: []byte{}},
			&SubscriptionRenewed{Meta: meta, Node: u, ID: int32(n), Lifetime: int(n), Expires: at},
			&SubscriptionEnded{Meta: meta, Node: u, ID: int32(n), Reason: s2},
			&SubscriptionEnded{Meta: meta, Node: u, ID: int32(n), Reason: s2, Move: uint64(n), By: s3, ByUser: User{Alias: s1}},
			&ViewSet{Meta: meta, Node: u, ID: int32(n), Value: s1, Default: s2, Timeout: int(n), Expires: at, Source: s3},
			&ViewSet{Meta: meta, Node: u, ID: int32(n), Value: s1, Known: int32(n), Set: at},
			&ViewSet{Meta: Meta{At: at}},
			&ViewEnded{Meta: meta, Node: u, ID: int32(n), Reason: s3},
			&MessageAccepted{Meta: meta, Node: u, AckType: s1, HopCount: int(n), Endpoints: int(n), Body: []byte(s2), BodySize: int(n), BodySHA256: s3},
			&MessageAccepted{Meta: meta, Body: []byte{}},
			&MessageDelivered{Meta: meta, Node: u, Status: int(n), Delivered: int(n), Failed: int(n)},
		} {
			checkFastEncode(t, e)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	for _, e := range sampleEvents() {
		if _, ok := fastEncode(e); !ok {
			continue
		}
		b.Run(e.Type()+"/fast", func(b *testing.B) {
			for b.Loop() {
				if _, err := Encode(e); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(e.Type()+"/json", func(b *testing.B) {
			for b.Loop() {
				if _, err := json.Marshal(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestForwardHeader: a HeaderForward value reads back as written; others
// do not read.
func TestForwardHeader(t *testing.T) {
	if home, move, ok := ParseForwardHeader(ForwardHeader("home2", 12)); !ok || home != "home2" || move != 12 {
		t.Errorf("ForwardHeader(home2, 12) reads back as %q, %d, %v", home, move, ok)
	}
	for _, v := range []string{"", "home2", "12", "12 ", "x home2", "-1 home2"} {
		if _, _, ok := ParseForwardHeader(v); ok {
			t.Errorf("%q read as a forward", v)
		}
	}
}

// TestFastEncodeOneAllocation: the events of a librvp sign-in with a
// buddy list (as rvpd wrote them, a buddy's watch with its Call-Back's
// user) are written in the one buffer the encoder sizes for them. The
// sizes were short of each SUBSCRIBE's request and fact, and of each
// presence set: their buffers grew, a tenth of the bytes rvpd allocated
// signing 6,000 users in.
func TestFastEncodeOneAllocation(t *testing.T) {
	at := time.Date(2026, 12, 7, 22, 3, 5, 236858477, time.UTC)
	user := func(alias string) User { return User{Domain: "example.test", Alias: alias} }
	principal := "http://127.0.0.1:41917/instmsg/aliases/user4"
	req := Req{ID: "946007fa79299f3a63431af0", At: at, Deadline: at.Add(20 * time.Second), Gateway: "gw1", Client: "127.0.0.1",
		Node: user("user4"), NodeURL: principal, From: principal, FromUser: user("user4"),
		Auth: Identity{Scheme: "ntlm", User: user("user4")}, DirPos: 2009}
	meta := Meta{At: at, Request: req.ID, Actor: principal, Auth: "ntlm:user4@example.test", Client: "127.0.0.1", Gateway: "gw1", Home: "home1"}
	buddy := req
	buddy.Node, buddy.NodeURL = user("user10031"), "http://127.0.0.1:41917/instmsg/aliases/user10031"
	for _, e := range []Event{
		&Subscribe{Req: req, NotificationType: NotifyPragma, CallBack: "http://127.0.0.1:44363/user4", Lifetime: 14000},
		&Subscribe{Req: buddy, NotificationType: NotifyPropChange, CallBack: principal, CallBackUser: user("user4"), Lifetime: 14000},
		&SubscriptionCreated{Meta: meta, Node: user("user4"), ID: 1, Kind: NotifyPragma, CallBack: "http://127.0.0.1:44363/user4",
			Subscriber: principal, SubscriberUser: user("user4"), NodeURL: principal, Lifetime: 14000, Expires: at.Add(14000 * time.Second),
			Source: "127.0.0.1", Credential: "ntlm"},
		&SubscriptionCreated{Meta: meta, Node: user("user10031"), ID: 1234567, Kind: NotifyPropChange, CallBack: principal, Watcher: user("user4"),
			Subscriber: principal, SubscriberUser: user("user4"), NodeURL: buddy.NodeURL, Lifetime: 14000, Expires: at.Add(14000 * time.Second),
			Source: "127.0.0.1", Credential: "ntlm"},
		&ViewSet{Meta: meta, Node: user("user4"), ID: 5, Value: "online", Default: "offline", Timeout: 14400, Expires: at.Add(4 * time.Hour), Source: "127.0.0.1"},
		&Reply{ID: req.ID, Status: 200, SubscriptionID: 1234567, Lifetime: 14000},
	} {
		checkFastEncode(t, e)
		if n := testing.AllocsPerRun(20, func() { fastEncode(e) }); n != 1 {
			data, _ := fastEncode(e)
			t.Errorf("%T (%d bytes) encoded in %v allocations, want 1: its buffer was sized too small", e, len(data), n)
		}
	}
}
