package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rvp-im/rvpd/events"
)

// Home is the read model of one home server, built from its fact events:
// the subscriptions and presence views on each of its users' nodes, the
// version (last fact sequence) of each user's aggregate, the next id to
// allocate, and an index of what expires when.
//
// Keys, under "h" 0 <home>:
//
//	pos                                  last applied stream sequence
//	next                                 next subscription/view id (uint32)
//	u <domain> <alias> ver               last fact sequence of the user's subject
//	u <domain> <alias> s <id>            Subscription (JSON)
//	u <domain> <alias> v <id>            View (JSON)
//	u <domain> <alias> acl               the node's ACL (JSON), when one was written
//	u <domain> <alias> p <ns> <name>     a property its owner set (mobile state, description)
//	u <domain> <alias> departed|arrived  directory sequence of the last move handed over from or to here
//	x <unix nanos> <domain> <alias> s|v <id>   expiry index (empty value)
type Home struct {
	db     *DB
	home   string
	prefix []byte
	pos    *position
}

// Subscription is a subscription on a node.
type Subscription struct {
	ID         int32       `json:"id"`
	Node       events.User `json:"node"`
	Kind       string      `json:"kind"`
	CallBack   string      `json:"call_back"`
	Watcher    events.User `json:"watcher,omitzero"`
	Subscriber string      `json:"subscriber,omitempty"`
	// SubscriberUser is the local user who subscribed, if any.
	SubscriberUser events.User `json:"subscriber_user,omitzero"`
	NodeURL        string      `json:"node_url"`
	Lifetime       int         `json:"lifetime"`
	Created        time.Time   `json:"created"`
	Expires        time.Time   `json:"expires"`
	Source         string      `json:"source,omitempty"`
	Credential     string      `json:"credential,omitempty"`
}

// View is one presentity's contribution to a principal's presence.
type View struct {
	ID      int32       `json:"id"`
	Node    events.User `json:"node"`
	Value   string      `json:"value"`
	Default string      `json:"default"`
	Timeout int         `json:"timeout"`
	Set     time.Time   `json:"set"`
	Expires time.Time   `json:"expires"`
	Source  string      `json:"source,omitempty"`
}

// OpenHome returns the projection of home in db.
func OpenHome(db *DB, home string) (*Home, error) {
	h := &Home{db: db, home: home, prefix: prefixOf("h", events.Token(home))}
	pos, err := getUint64(db.pdb, h.key("pos"))
	if err != nil {
		return nil, fmt.Errorf("open home projection %s: %w", home, err)
	}
	h.pos = newPosition(pos)
	return h, nil
}

// Prefix returns the key prefix of the projection, for Dump and Diff.
func (h *Home) Prefix() []byte { return h.prefix }

// Position returns the stream sequence of the last applied fact.
func (h *Home) Position() uint64 { return h.pos.get() }

// WaitFor blocks until the projection has applied seq.
func (h *Home) WaitFor(ctx context.Context, seq uint64) error { return h.pos.waitFor(ctx, seq) }

func (h *Home) key(parts ...string) []byte {
	return append(append([]byte(nil), h.prefix...), key(parts...)...)
}

func userParts(u events.User) []string {
	return []string{"u", events.Token(u.Domain), events.Token(u.Alias)}
}

func (h *Home) userKey(u events.User, parts ...string) []byte {
	return h.key(append(userParts(u), parts...)...)
}

func idKey(id int32) string { return be32(uint32(id)) }

func (h *Home) expiryKey(at time.Time, u events.User, kind string, id int32) []byte {
	return h.key("x", be64(uint64(at.UnixNano())), events.Token(u.Domain), events.Token(u.Alias), kind, idKey(id))
}

// ApplyBatch applies fact messages in one batch with the new position.
func (h *Home) ApplyBatch(msgs []Msg) error {
	b := h.db.pdb.NewIndexedBatch()
	defer b.Close()
	pos := h.Position()
	for _, m := range msgs {
		if m.Seq <= pos {
			continue
		}
		ev, err := events.Decode(m.Type, m.Data)
		if err != nil {
			return fmt.Errorf("home %s seq %d: %w", h.home, m.Seq, err)
		}
		f, ok := ev.(events.Fact)
		if !ok {
			return fmt.Errorf("home %s seq %d: %s is not a fact", h.home, m.Seq, m.Type)
		}
		if err := h.apply(b, f); err != nil {
			return fmt.Errorf("home %s seq %d (%s): %w", h.home, m.Seq, m.Type, err)
		}
		b.Set(h.userKey(f.Subject(), "ver"), []byte(be64(m.Seq)), nil)
		pos = m.Seq
	}
	if pos == h.Position() {
		return nil
	}
	b.Set(h.key("pos"), []byte(be64(pos)), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit home %s batch: %w", h.home, err)
	}
	h.pos.set(pos)
	return nil
}

func (h *Home) apply(b *pebble.Batch, f events.Fact) error {
	switch e := f.(type) {
	case *events.SubscriptionCreated:
		s := Subscription{ID: e.ID, Node: e.Node, Kind: e.Kind, CallBack: e.CallBack, Watcher: e.Watcher, Subscriber: e.Subscriber,
			NodeURL: e.NodeURL, Lifetime: e.Lifetime, Created: e.At, Expires: e.Expires, Source: e.Source, Credential: e.Credential,
			SubscriberUser: e.SubscriberUser}
		if err := h.putSub(b, nil, &s); err != nil {
			return err
		}
		return h.bumpNext(b, e.ID)
	case *events.SubscriptionRenewed:
		old, err := h.sub(b, e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		s := *old
		s.Lifetime, s.Expires = e.Lifetime, e.Expires
		return h.putSub(b, old, &s)
	case *events.SubscriptionEnded:
		old, err := h.sub(b, e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		b.Delete(h.userKey(e.Node, "s", idKey(e.ID)), nil)
		b.Delete(h.expiryKey(old.Expires, e.Node, "s", e.ID), nil)
		return nil
	case *events.ViewSet:
		old, err := h.view(b, e.Node, e.ID)
		if err != nil {
			return err
		}
		if old != nil && !old.Expires.IsZero() {
			b.Delete(h.expiryKey(old.Expires, e.Node, "v", e.ID), nil)
		}
		v := View{ID: e.ID, Node: e.Node, Value: e.Value, Default: e.Default, Timeout: e.Timeout, Set: e.At, Expires: e.Expires, Source: e.Source}
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Set(h.userKey(e.Node, "v", idKey(e.ID)), data, nil)
		if !v.Expires.IsZero() {
			b.Set(h.expiryKey(v.Expires, e.Node, "v", e.ID), nil, nil)
		}
		return h.bumpNext(b, e.ID)
	case *events.ViewEnded:
		old, err := h.view(b, e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		b.Delete(h.userKey(e.Node, "v", idKey(e.ID)), nil)
		if !old.Expires.IsZero() {
			b.Delete(h.expiryKey(old.Expires, e.Node, "v", e.ID), nil)
		}
		return nil
	case *events.ACLSet:
		data, err := json.Marshal(e.ACEs)
		if err != nil {
			return err
		}
		return b.Set(h.userKey(e.Node, "acl"), data, nil)
	case *events.PropertySet:
		return b.Set(h.userKey(e.Node, "p", events.Token(e.Value.Space), events.Token(e.Value.Local)), []byte(e.Value.Value), nil)
	case *events.UserDeparted:
		return b.Set(h.userKey(e.Node, "departed"), []byte(be64(e.Move)), nil)
	case *events.UserArrived:
		return b.Set(h.userKey(e.Node, "arrived"), []byte(be64(e.Move)), nil)
	case *events.MessageAccepted, *events.MessageDelivered:
		// History only: the stream is their record.
		return nil
	default:
		return fmt.Errorf("no apply rule for %s", f.Type())
	}
}

func (h *Home) putSub(b *pebble.Batch, old, s *Subscription) error {
	if old != nil {
		b.Delete(h.expiryKey(old.Expires, old.Node, "s", old.ID), nil)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	b.Set(h.userKey(s.Node, "s", idKey(s.ID)), data, nil)
	b.Set(h.expiryKey(s.Expires, s.Node, "s", s.ID), nil, nil)
	return nil
}

func (h *Home) bumpNext(b *pebble.Batch, id int32) error {
	next, err := h.nextID(b)
	if err != nil {
		return err
	}
	if id >= next {
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], uint32(id)+1)
		b.Set(h.key("next"), v[:], nil)
	}
	return nil
}

func (h *Home) nextID(r reader) (int32, error) {
	v, err := get(r, h.key("next"))
	if err != nil {
		return 0, err
	}
	if len(v) != 4 {
		return 1, nil
	}
	return int32(binary.BigEndian.Uint32(v)), nil
}

// NextID returns the lowest id not yet allocated to a subscription or view
// of this home server. Ids are positive and never reused.
func (h *Home) NextID() (int32, error) { return h.nextID(h.db.pdb) }

// Version returns the sequence of the last fact of u's aggregate, 0 when
// it has none: the expected last subject sequence of the next append.
func (h *Home) Version(u events.User) (uint64, error) {
	return getUint64(h.db.pdb, h.userKey(u, "ver"))
}

func (h *Home) sub(r reader, u events.User, id int32) (*Subscription, error) {
	v, err := get(r, h.userKey(u, "s", idKey(id)))
	if err != nil || v == nil {
		return nil, err
	}
	var s Subscription
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("subscription %d of %s: %w", id, u, err)
	}
	return &s, nil
}

func (h *Home) view(r reader, u events.User, id int32) (*View, error) {
	v, err := get(r, h.userKey(u, "v", idKey(id)))
	if err != nil || v == nil {
		return nil, err
	}
	var vw View
	if err := json.Unmarshal(v, &vw); err != nil {
		return nil, fmt.Errorf("view %d of %s: %w", id, u, err)
	}
	return &vw, nil
}

// Subscription returns subscription id on u's node, or nil.
func (h *Home) Subscription(u events.User, id int32) (*Subscription, error) {
	return h.sub(h.db.pdb, u, id)
}

// Subscriptions returns the subscriptions on u's node, by id.
func (h *Home) Subscriptions(u events.User) ([]Subscription, error) {
	var out []Subscription
	err := scan(h.db.pdb, prefixOf(string(h.userKey(u, "s"))), func(_, v []byte) error {
		var s Subscription
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("subscription of %s: %w", u, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// Views returns the presence views of u, by id.
func (h *Home) Views(u events.User) ([]View, error) {
	var out []View
	err := scan(h.db.pdb, prefixOf(string(h.userKey(u, "v"))), func(_, v []byte) error {
		var vw View
		if err := json.Unmarshal(v, &vw); err != nil {
			return fmt.Errorf("view of %s: %w", u, err)
		}
		out = append(out, vw)
		return nil
	})
	return out, err
}

// Property returns the value of a property u's owner set, "" when none.
func (h *Home) Property(u events.User, p events.Prop) (string, error) {
	v, err := get(h.db.pdb, h.userKey(u, "p", events.Token(p.Space), events.Token(p.Local)))
	return string(v), err
}

// ACL returns the ACL written for u's node, or nil and false when none
// was: the node then has the default ACL.
func (h *Home) ACL(u events.User) ([]events.ACE, bool, error) {
	v, err := get(h.db.pdb, h.userKey(u, "acl"))
	if err != nil || v == nil {
		return nil, false, err
	}
	var aces []events.ACE
	if err := json.Unmarshal(v, &aces); err != nil {
		return nil, false, fmt.Errorf("ACL of %s: %w", u, err)
	}
	return aces, true, nil
}

// Departed returns the directory sequence of the last move whose state u
// handed over from here; 0 if none.
func (h *Home) Departed(u events.User) (uint64, error) {
	return getUint64(h.db.pdb, h.userKey(u, "departed"))
}

// Arrived returns the directory sequence of the last move whose state
// arrived here for u; 0 if none.
func (h *Home) Arrived(u events.User) (uint64, error) {
	return getUint64(h.db.pdb, h.userKey(u, "arrived"))
}

// Users returns every user the projection holds state for.
func (h *Home) Users() ([]events.User, error) {
	seen := map[events.User]bool{}
	var out []events.User
	p := prefixOf(string(h.key("u")))
	err := scan(h.db.pdb, p, func(k, _ []byte) error {
		parts := bytes.SplitN(k[len(p):], []byte{0}, 3)
		if len(parts) < 3 {
			return nil
		}
		dom, err1 := events.Untoken(string(parts[0]))
		alias, err2 := events.Untoken(string(parts[1]))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("malformed key %q", k)
		}
		u := events.User{Domain: dom, Alias: alias}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// Due is a subscription ("s") or view ("v") whose time has come.
type Due struct {
	At   time.Time
	User events.User
	Kind string
	ID   int32
}

// DueBy returns up to max subscriptions and views that expire at or before
// t, earliest first.
func (h *Home) DueBy(t time.Time, max int) ([]Due, error) {
	lo := prefixOf(string(h.key("x")))
	hi := append(bytes.Clone(lo), be64(uint64(t.UnixNano())+1)...)
	it, err := h.db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Due
	for it.First(); it.Valid() && len(out) < max; it.Next() {
		rest := it.Key()[len(lo):]
		// <be64 nanos> 0 <domain> 0 <alias> 0 <kind> 0 <be32 id>
		if len(rest) < 8+1 {
			return nil, fmt.Errorf("malformed expiry key %q", it.Key())
		}
		at := time.Unix(0, int64(binary.BigEndian.Uint64(rest[:8]))).UTC()
		parts := splitKey(rest[9:])
		if len(parts) != 4 || len(parts[3]) != 4 {
			return nil, fmt.Errorf("malformed expiry key %q", it.Key())
		}
		dom, err1 := events.Untoken(parts[0])
		alias, err2 := events.Untoken(parts[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed expiry key %q", it.Key())
		}
		out = append(out, Due{At: at, User: events.User{Domain: dom, Alias: alias}, Kind: parts[2],
			ID: int32(binary.BigEndian.Uint32([]byte(parts[3])))})
	}
	return out, it.Error()
}

// splitKey splits a key tail at 0 separators; the last component may be a
// fixed-width binary id containing any byte, so it is taken whole.
func splitKey(b []byte) []string {
	var out []string
	for i := 0; i < 3; i++ {
		j := bytes.IndexByte(b, 0)
		if j < 0 {
			return append(out, string(b))
		}
		out = append(out, string(b[:j]))
		b = b[j+1:]
	}
	return append(out, string(b))
}
