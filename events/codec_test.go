package events

import (
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
		&UserDeparted{Meta: meta, Node: bob, To: "home2", Move: 7, Subs: 2, Views: 1},
		&UserArrived{Meta: meta, Node: bob, From: "home1", Move: 7, Subs: 2, Views: 1},
		&Handoff{Req: req, From: "home1", Move: 7, Subs: []SubState{{ID: 3, Kind: NotifyPragma, CallBack: "http://10.0.0.1:1", Lifetime: 60, Expires: at}},
			Views: []ViewState{{ID: 4, Value: "busy", Default: "offline", Timeout: 60, Expires: at}}, ACL: DefaultACL(NewUser("example.test", "x"), "x"), Props: []PropValue{{Prop: PropMobileState, Value: "1"}}},
		&ACLSet{Meta: meta, Node: bob, ACEs: []ACE{{Principal: "http://x/instmsg/aliases/m", User: NewUser("x", "m"), Credentials: []string{CredAny}, Deny: []string{RightPresence}}}},
		&Lookup{ID: "r2", At: at, Deadline: at, Gateway: "gw1", Client: "1.2.3.4", Method: "SUBSCRIBE", Host: "im.acme.test", Alias: "dave"},
		&Reply{ID: "r1", Status: 207, Href: "http://x/instmsg/aliases/bob", Found: []PropValue{{PropState, "online"}}, Lease: &Lease{"online", "offline", 1200, 3}},
		&SubscriptionCreated{Meta: meta, Node: bob, ID: 1, Kind: NotifyPragma, CallBack: "http://10.0.0.21:3044", Lifetime: 14400, Expires: at.Add(4 * time.Hour)},
		&SubscriptionRenewed{Meta: meta, Node: bob, ID: 1, Lifetime: 60, Expires: at.Add(time.Minute)},
		&SubscriptionEnded{Meta: meta, Node: bob, ID: 1, Reason: EndExpired},
		&ViewSet{Meta: meta, Node: bob, ID: 2, Value: StateOnline, Default: StateOffline, Timeout: 1200, Expires: at.Add(20 * time.Minute), Source: "10.0.0.21"},
		&ViewEnded{Meta: meta, Node: bob, ID: 2, Reason: EndOffline},
		&MessageAccepted{Meta: meta, Node: bob, AckType: "DeepOr", HopCount: 1, Endpoints: 2, Body: []byte("<![CDATA[x]]>")},
		&MessageDelivered{Meta: meta, Node: bob, Status: 200, Delivered: 1, Failed: 1},
		&DomainCreated{Meta: meta, Domain: "example.test", IMHost: "im.example.test", EmailDomains: []string{"example.test"}},
		&HomeServerCreated{Meta: meta, Name: "home1", Host: "home1.example.test", HostsUsers: true},
		&UserEnabled{Meta: meta, User: bob, Home: "home1", DisplayName: "Bob", Email: "bob@example.test"},
		&UserDisabled{Meta: meta, User: bob},
		&DomainDeleted{Meta: meta, Domain: "example.test"},
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
