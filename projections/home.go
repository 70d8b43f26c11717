package projections

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
//	format                               the key layout (homeFormat)
//	u <domain> <alias> s <id>            property Subscription (codec.go)
//	u <domain> <alias> l <id>            login Subscription (codec.go)
//	u <domain> <alias> v <id>            View (codec.go)
//	u <domain> <alias> w <hash> <id>     property Subscription id of a subscriber whose key has that hash (WatchKeys; empty value)
//	u <domain> <alias> n <network> <id>  property Subscription id of another organisation's from that client network, or any ("*") (WatchKeys; empty value)
//	u <domain> <alias> acl               the node's ACL (JSON), when one was written
//	u <domain> <alias> p <ns> <name>     a property its owner set (mobile state, description)
//	u <domain> <alias> departed|arrived  directory sequence of the last move handed over from here, of the latest to arrive here
//	u <domain> <alias> took <home> <move>  a handoff taken here: of that move, from that home server (empty value)
//	u <domain> <alias> took <home>/part<n> <move>  part n of a handoff in parts taken here (HandoffPart; empty value)
//	u <domain> <alias> ended <move> <id> <by>  an end here of subscription id, not here, while u's state was awaited under move, by by (EndedBy; empty value)
//	u <domain> <alias> endedn <move>       how many such ends were recorded under move (EndedCount; 8-byte big-endian)
//	x <unix nanos> <domain> <alias> s|v <id>   expiry index (empty value)
//	b <hash> <domain> <alias> <id>       property Subscription id on u's node of a user of ours whose SubscriberKey has that hash: the subscriber's watches across the nodes (CountWatching; empty value)
type Home struct {
	db     *DB
	home   string
	prefix []byte
	pos    *position
	cache  *userCache
	// next is the next id to allocate as Pebble has it (0: not known),
	// set by whatever commits a new one before its position is published.
	next atomic.Int32
	// afterCommit, when set (tests), runs once a batch is in Pebble,
	// before the cache learns of it and its position is published.
	afterCommit func()
}

// userCache keeps, for the users read, the small parts of their state a
// home node reads on every request about them (logins, views, ACL, mobile
// properties, how many watch them), as Pebble has them. A batch marks
// itself begun before it commits and ended after (before its position is
// published): at the end it forgets the parts it changed, but for the
// watcher counts, which it moves by what it added and removed (in a
// sign-in wave every watched node's watchers change in nearly every
// batch: forgetting them made nearly every count a scan). A part read
// from Pebble is kept only if no batch began or was under way meanwhile.
type userCache struct {
	mu    sync.RWMutex
	gen   uint64 // moves at each batch's beginning and end
	busy  bool   // a batch has begun and not ended
	users map[events.User]*cachedUser
	// stored counts the stores into entries (a part, or a whole entry
	// at once) since they were last copied (compact); seen is what it was
	// at compact's last call, and peak the most made between two calls
	// since they were last copied.
	stored, seen, peak int
	// watching counts, by the hash of a user of ours' SubscriberKey, the
	// subscriber's watches across the nodes (the b keys under the hash:
	// CountWatching), for the subscribers read. A batch moves each count
	// by what it added and removed, as it does the watcher counts; one
	// that reaches 0 is dropped (the subscriber's watches have ended or
	// lapsed, and the next read counts her keys afresh: none).
	watching map[keyHash]int
}

// The parts of a user's state the cache keeps.
const (
	partLogins uint8 = 1 << iota
	partViews
	partACL
	partProps
	partWatchers
	// partDeparted: the last move handed over from here (Departed),
	// which the home node reads for every request (a user handed off
	// ahead of the directory projection waits for it): read from Pebble,
	// a key most users lack, it cost a quarter of the node's decisions'
	// CPU in BenchmarkSignIn.
	partDeparted
)

type cachedUser struct {
	loaded                  uint8
	logins                  []Subscription
	views                   []View
	acl                     []events.ACE
	aclSet                  bool
	mobileState, mobileDesc string
	watchers                int
	departed                uint64
}

func newUserCache() *userCache {
	return &userCache{users: map[events.User]*cachedUser{}, watching: map[keyHash]int{}}
}

// get calls fn with u's entry if it holds part; it returns the generation
// to store a read from Pebble with.
func (c *userCache) get(u events.User, part uint8, fn func(*cachedUser)) (uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.users[u]; e != nil && e.loaded&part != 0 {
		fn(e)
		return c.gen, true
	}
	return c.gen, false
}

// put stores part of u's entry through fn, unless a batch began or ended
// since gen, or is under way.
func (c *userCache) put(u events.User, part uint8, gen uint64, fn func(*cachedUser)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.busy {
		return
	}
	e := c.users[u]
	if e == nil {
		e = &cachedUser{}
		c.users[u] = e
	}
	fn(e)
	e.loaded |= part
	c.stored++
}

// getWatching returns the count of the watches of the subscriber whose
// key has hash by, if the cache holds it, and the generation to store a
// count read from Pebble with.
func (c *userCache) getWatching(by keyHash) (n int, gen uint64, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n, ok = c.watching[by]
	return n, c.gen, ok
}

// putWatching stores n, read from Pebble, as the count of the watches of
// the subscriber whose key has hash by, unless a batch began or ended
// since gen, or is under way (as put).
func (c *userCache) putWatching(by keyHash, gen uint64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.busy {
		return
	}
	c.watching[by] = n
}

// partAll is every part of an entry.
const partAll = partLogins | partViews | partACL | partProps | partWatchers | partDeparted

// absent reports whether the cache has no entry of u's.
func (c *userCache) absent(u events.User) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.users[u] == nil
}

// putAll stores e as u's entry, every part of it (what Pebble holds of
// u's), unless u has an entry, or a batch began or ended since gen, or is
// under way.
func (c *userCache) putAll(u events.User, gen uint64, e cachedUser) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.busy || c.users[u] != nil {
		return
	}
	e.loaded = partAll
	c.users[u] = &e
	c.stored++
}

// compactChunk is how many entries compact copies at a time, under the
// lock: in the load benchmark, 10,000 entries took 12.7 ms in all, about
// 0.3 ms at a time.
const compactChunk = 256

// compact copies every entry and its lists afresh (copyAll) once a wave
// of stores is over: the stores since the last copy are as many as a
// quarter of the entries (and at least least), and those since compact's
// last call are fewer than a tenth of the most made between two of its
// calls since then. A steady flow of stores, however long, is no wave. It
// returns how many entries it copied.
//
// An entry lives as long as its user's state is unchanged, and is made
// in the middle of whatever else the server allocates at the time. After
// a wave of sign-ins (a restart: every user at once), the entries and
// their lists are thus strewn over memory the wave's garbage filled, a
// few to a page, and each page stays while one of them lives. Copied at
// once, they fill pages of their own, and the pages only they held are
// let go. The strings they point to are not copied, and stay where they
// were.
func (c *userCache) compact(least int) int {
	c.mu.Lock()
	recent := c.stored - c.seen
	c.seen = c.stored
	c.peak = max(c.peak, recent)
	if c.stored < max(least, len(c.users)/4, 1) || recent*10 > c.peak {
		c.mu.Unlock()
		return 0
	}
	c.stored, c.seen, c.peak = 0, 0, 0
	c.mu.Unlock()
	return c.copyAll()
}

// copyAll copies every entry, its lists and its ACL's lists, afresh,
// compactChunk entries at a time under the lock, and returns how many it
// copied. An entry is only read or changed under the lock, and its copy
// is equal to it: no read can tell.
func (c *userCache) copyAll() int {
	c.mu.RLock()
	users := slices.Collect(maps.Keys(c.users))
	c.mu.RUnlock()
	copied := 0
	for chunk := range slices.Chunk(users, compactChunk) {
		c.mu.Lock()
		for _, u := range chunk {
			e := c.users[u]
			if e == nil {
				continue
			}
			n := *e
			n.logins, n.views = slices.Clone(e.logins), slices.Clone(e.views)
			n.acl = slices.Clone(e.acl)
			for i := range n.acl {
				a := &n.acl[i]
				a.Credentials, a.Grant, a.Deny = slices.Clone(a.Credentials), slices.Clone(a.Grant), slices.Clone(a.Deny)
			}
			c.users[u] = &n
			copied++
		}
		c.mu.Unlock()
	}
	return copied
}

// begin marks a batch under way, before it commits.
func (c *userCache) begin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.busy = true
}

// end ends the batch begun, once committed: it drops the parts of each
// user the batch changed but for the watcher counts, which it moves by
// watchers (added less removed), when committed, and the subscribers'
// counts of watches, which it moves by watching (by the hash of the
// subscriber's key, added less removed). A batch that failed to commit
// changed nothing, but what it changed is dropped all the same.
func (c *userCache) end(changed map[events.User]uint8, watchers map[events.User]int, watching map[keyHash]int, committed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.busy = false
	for by, d := range watching {
		n, ok := c.watching[by]
		switch {
		case !ok:
		case !committed || n+d <= 0:
			delete(c.watching, by)
		default:
			c.watching[by] = n + d
		}
	}
	for u, parts := range changed {
		e := c.users[u]
		if e == nil {
			continue
		}
		if committed && parts&partWatchers != 0 && e.loaded&partWatchers != 0 {
			e.watchers += watchers[u]
			parts &^= partWatchers
		}
		if e.loaded &^= parts; e.loaded == 0 {
			delete(c.users, u)
			continue
		}
		if parts&partLogins != 0 {
			e.logins = nil
		}
		if parts&partViews != 0 {
			e.views = nil
		}
		if parts&partACL != 0 {
			e.acl = nil
		}
	}
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
	// Known is the id the subscriber's client knows it by, when a
	// handoff gave it another (SubscriptionCreated.Known); 0: ID.
	Known int32 `json:"known_id,omitempty"`
	// Handoff names the handoff that brought it here, "" for one made
	// here (SubscriptionCreated.Handoff).
	Handoff string `json:"handoff,omitempty"`
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
	// Known is the id the presentity's client knows it by, when a handoff
	// gave it another (ViewSet.Known); 0: ID.
	Known int32 `json:"known_id,omitempty"`
}

// homeFormat names the key layout, and the rules of applying facts to it;
// a projection written with another is rebuilt from its stream (Outdated,
// Reset). 8: a view refreshed with the value it holds keeps the time it
// was set (its place among the principal's views). 9: the handoffs taken,
// by home server and move (took), and arrived the latest move of them.
// 10: the parts of a handoff in parts taken, each (took <home>/part<n>).
// 11: a subscription handed over names the handoff that brought it
// (Subscription.Handoff), and the ends here of subscriptions not here yet
// while their node's state was awaited are kept (ended).
// 12: and counted, per user and move (endedn).
// 13: a user of ours' watches indexed by subscriber first, across the
// nodes (b), to bound how many one holds on the home server.
const homeFormat = "13"

// OpenHome returns the projection of home in db.
func OpenHome(db *DB, home string) (*Home, error) {
	h := &Home{db: db, home: home, prefix: prefixOf("h", events.Token(home)), cache: newUserCache()}
	pos, err := getUint64(db.pdb, h.key("pos"))
	if err != nil {
		return nil, fmt.Errorf("open home projection %s: %w", home, err)
	}
	h.pos = newPosition(pos)
	return h, nil
}

// Outdated reports whether the projection was written with another key
// layout than this version's: it must be rebuilt (Reset) before use.
func (h *Home) Outdated() (bool, error) {
	if h.Position() == 0 {
		return false, nil
	}
	v, err := get(h.db.pdb, h.key("format"))
	return string(v) != homeFormat, err
}

// Reset deletes the projection, so that following its stream from the
// start rebuilds it. Nothing may follow or read it meanwhile.
func (h *Home) Reset() error {
	b := h.db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(h.prefix, upperBound(h.prefix), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("reset home projection %s: %w", h.home, err)
	}
	h.pos = newPosition(0)
	h.cache = newUserCache()
	h.next.Store(0)
	return nil
}

// Prefix returns the key prefix of the projection, for Dump and Diff.
func (h *Home) Prefix() []byte { return h.prefix }

// Position returns the stream sequence of the last applied fact.
func (h *Home) Position() uint64 { return h.pos.get() }

// WaitFor blocks until the projection has applied seq.
func (h *Home) WaitFor(ctx context.Context, seq uint64) error { return h.pos.waitFor(ctx, seq) }

// Changed returns a channel closed when the position next advances.
func (h *Home) Changed() <-chan struct{} { return h.pos.changed() }

func (h *Home) key(parts ...string) []byte {
	return append(append([]byte(nil), h.prefix...), key(parts...)...)
}

// appendUserKey appends the key of the part of u's state that parts
// name: h.key("u", Token(domain), Token(alias), parts...).
func (h *Home) appendUserKey(dst []byte, u events.User, parts ...string) []byte {
	dst = append(append(dst, h.prefix...), 'u', 0)
	dst = append(events.AppendToken(dst, u.Domain), 0)
	dst = events.AppendToken(dst, u.Alias)
	for _, p := range parts {
		dst = append(append(dst, 0), p...)
	}
	return dst
}

func (h *Home) userKey(u events.User, parts ...string) []byte {
	return h.appendUserKey(make([]byte, 0, 64), u, parts...)
}

// HandoffPart names part of a handoff in parts from home server from,
// for Took and the key that records it taken: a home server's name with
// the part's number.
func HandoffPart(from string, part int) string { return from + "/part" + strconv.Itoa(part) }

// EndedBy names who ended a subscription (Ended): a local user, or
// another principal by its RVP-From-Principal.
func EndedBy(u events.User, principal string) string {
	if !u.IsZero() {
		return "u:" + u.String()
	}
	return "p:" + principal
}

// endedKey is the key that records an end of u's subscription id by by,
// not here, while u's state was awaited under move.
func (h *Home) endedKey(u events.User, move uint64, id int32, by string) []byte {
	return h.userKey(u, "ended", strconv.FormatUint(move, 10), strconv.FormatInt(int64(id), 10), events.Token(by))
}

// endedCountKey is the key that counts the ends recorded of u's
// subscriptions not here under move (endedKey).
func (h *Home) endedCountKey(u events.User, move uint64) []byte {
	return h.userKey(u, "endedn", strconv.FormatUint(move, 10))
}

// tookKey is the key that records the handoff of u's move from home
// server from as taken.
func (h *Home) tookKey(u events.User, from string, move uint64) []byte {
	return h.userKey(u, "took", events.Token(from), strconv.FormatUint(move, 10))
}

// appendItemKey appends the key of u's subscription ("s", "l") or view
// ("v") id.
func (h *Home) appendItemKey(dst []byte, u events.User, kind string, id int32) []byte {
	return binary.BigEndian.AppendUint32(append(h.appendUserKey(dst, u, kind), 0), uint32(id))
}

// appendExpiryKey appends the key of the expiry index entry of u's
// subscription ("s") or view ("v") id: h.key("x", be64(nanos),
// Token(domain), Token(alias), kind, be32(id)).
func (h *Home) appendExpiryKey(dst []byte, at time.Time, u events.User, kind string, id int32) []byte {
	dst = append(append(dst, h.prefix...), 'x', 0)
	dst = append(binary.BigEndian.AppendUint64(dst, uint64(at.UnixNano())), 0)
	dst = append(events.AppendToken(dst, u.Domain), 0)
	dst = append(events.AppendToken(dst, u.Alias), 0)
	dst = append(append(dst, kind...), 0)
	return binary.BigEndian.AppendUint32(dst, uint32(id))
}

// subKind is the key letter of a subscription: logins ("l") apart from
// property subscriptions ("s"), since delivery reads only the logins.
func subKind(kind string) string {
	if kind == events.NotifyPragma {
		return "l"
	}
	return "s"
}

// SeqFact is a fact and its sequence in the home server's stream.
type SeqFact struct {
	Seq  uint64
	Fact events.Fact
}

// ApplyBatch applies fact messages in one batch with the new position.
func (h *Home) ApplyBatch(msgs []Msg) error {
	facts := make([]SeqFact, 0, len(msgs))
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
		facts = append(facts, SeqFact{Seq: m.Seq, Fact: f})
	}
	return h.ApplyFacts(facts)
}

// ApplyFacts applies facts (in stream order) in one batch with the new
// position; those at or below the position are skipped. A home node
// applies the facts it published, once acknowledged, so: what it applies
// is what the stream holds, without reading it back.
func (h *Home) ApplyFacts(facts []SeqFact) error {
	b := h.db.pdb.NewIndexedBatch()
	defer b.Close()
	st := &pebbleHome{h: h, r: b, b: b, changed: map[events.User]uint8{}}
	pos := h.Position()
	first := pos == 0
	for _, sf := range facts {
		if sf.Seq <= pos {
			continue
		}
		if err := applyFact(st, sf.Fact); err != nil {
			return fmt.Errorf("home %s seq %d (%s): %w", h.home, sf.Seq, sf.Fact.Type(), err)
		}
		pos = sf.Seq
	}
	if pos == h.Position() {
		return nil
	}
	if first {
		b.Set(h.key("format"), []byte(homeFormat), nil)
	}
	b.Set(h.key("pos"), []byte(be64(pos)), nil)
	if err := h.commit(b, st); err != nil {
		return fmt.Errorf("commit home %s batch: %w", h.home, err)
	}
	h.pos.set(pos)
	return nil
}

// commit commits b, written through st, and takes note of what it
// changed before its position is published: the next id first, then
// the cached parts of users' state. A count of watchers read with a next
// id from before the batch must not include it (Overlay.baseWatchers
// takes ids at or past the next id as not counted): the next id moves
// before the batch is in Pebble, where a read that misses the cache
// counts at once, and moves back if the batch fails. (A next id ahead of
// Pebble's for a moment costs nothing: an overlay with ids past it
// counts them by a scan.)
func (h *Home) commit(b *pebble.Batch, st *pebbleHome) error {
	if st.nextSet {
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], uint32(st.next))
		if err := b.Set(h.key("next"), v[:], nil); err != nil {
			return err
		}
	}
	prev := h.next.Load()
	if st.next > 0 {
		h.next.Store(st.next)
	}
	h.cache.begin()
	err := commitSorted(h.db.pdb, b, pebble.NoSync)
	if err == nil && h.afterCommit != nil {
		h.afterCommit()
	}
	if err != nil && st.next > 0 {
		h.next.CompareAndSwap(st.next, prev)
	}
	h.cache.end(st.changed, st.watchers, st.watching, err == nil)
	return err
}

// HomeReader reads a home server's state: what its facts made of the
// nodes of its users. The Pebble projection (Home) and the in-memory
// Overlay of facts not applied yet both offer it.
type HomeReader interface {
	// Subscription returns subscription id on u's node, or nil.
	Subscription(u events.User, id int32) (*Subscription, error)
	// Subscriptions returns every subscription on u's node, by id.
	Subscriptions(u events.User) ([]Subscription, error)
	// Logins returns the login subscriptions (pragma/notify) on u's node,
	// by id: where its clients receive what is sent to it.
	Logins(u events.User) ([]Subscription, error)
	// Watchers returns the property subscriptions (update/propchange) on
	// u's node, by id: who watches its presence.
	Watchers(u events.User) ([]Subscription, error)
	// CountWatchers returns how many property subscriptions there are on
	// u's node, but for the ids except reports (nil: none), without
	// reading them.
	CountWatchers(u events.User, except func(id int32) bool) (int, error)
	// WatchersBy returns the property subscriptions on u's node counted
	// under key (SubscriberKey, NetworkKey), by id, reading those only.
	WatchersBy(u events.User, key string) ([]Subscription, error)
	// CountWatchersBy returns how many property subscriptions on u's node
	// are counted under key, but for the ids except reports (nil: none),
	// without reading them. For a network's key the count is exact; for a
	// subscriber's, the projection's may include another subscriber's of
	// the same 64-bit hash (appendWatchPrefix): the home node counts
	// networks only.
	CountWatchersBy(u events.User, key string, except func(id int32) bool) (int, error)
	// CountWatching returns how many property subscriptions, on every
	// node of the home server, are counted under key, a user of ours'
	// SubscriberKey (0 for another's), but for those except reports (nil:
	// none), without reading them. It may stop counting at upTo (0:
	// never): a count of upTo or more says there are at least upTo. The
	// projection's count may include another subscriber's of the same
	// 64-bit hash (appendWatchingPrefix).
	CountWatching(key string, upTo int, except func(u events.User, id int32) bool) (int, error)
	// View returns u's presence view id, or nil.
	View(u events.User, id int32) (*View, error)
	// Views returns the presence views of u, by id.
	Views(u events.User) ([]View, error)
	// ACL returns the ACL written for u's node, or nil and false when none
	// was: the node then has the default ACL.
	ACL(u events.User) ([]events.ACE, bool, error)
	// Property returns the value of a property u's owner set, "" when none.
	Property(u events.User, p events.Prop) (string, error)
	// NextID returns the lowest id not yet allocated to a subscription or
	// view of the home server. Ids are positive and never reused.
	NextID() (int32, error)
	// Departed and Arrived return the directory sequence of the last move
	// whose state u handed over from here, or of the latest whose state
	// arrived here; 0 if none.
	Departed(u events.User) (uint64, error)
	Arrived(u events.User) (uint64, error)
	// Took reports whether u's state handed over from home server from
	// under move was taken here (from: HandoffPart for a part of it).
	Took(u events.User, from string, move uint64) (bool, error)
	// Ended reports whether u's subscription id was ended here by by
	// (EndedBy) while it was not here, u's state awaited from its former
	// home server under move (SubscriptionEnded.Move).
	Ended(u events.User, move uint64, id int32, by string) (bool, error)
	// EndedCount returns how many ends of subscriptions not here were
	// recorded for u under move (SubscriptionEnded.Move): the home node
	// records a bounded number per user and move.
	EndedCount(u events.User, move uint64) (int, error)
}

// homeStore is what applying a fact reads and changes; its reads see its
// writes.
type homeStore interface {
	HomeReader
	putSub(old, s *Subscription) error
	delSub(s *Subscription) error
	putView(old, v *View) error
	delView(v *View) error
	setACL(u events.User, aces []events.ACE) error
	delACL(u events.User) error
	setProperty(u events.User, p events.Prop, value string) error
	setDeparted(u events.User, move uint64) error
	setArrived(u events.User, move uint64) error
	setTook(u events.User, from string, move uint64) error
	setEnded(u events.User, move uint64, id int32, by string) error
	setEndedCount(u events.User, move uint64, n int) error
	setNextID(id int32) error
}

// applyFact is the one set of rules by which a fact changes a home
// server's state, in Pebble and in memory alike.
func applyFact(st homeStore, f events.Fact) error {
	switch e := f.(type) {
	case *events.SubscriptionCreated:
		s := Subscription{ID: e.ID, Node: e.Node, Kind: e.Kind, CallBack: e.CallBack, Watcher: e.Watcher, Subscriber: e.Subscriber,
			NodeURL: e.NodeURL, Lifetime: e.Lifetime, Created: e.At, Expires: e.Expires, Source: e.Source, Credential: e.Credential,
			SubscriberUser: e.SubscriberUser, Known: e.Known, Handoff: e.Handoff}
		fresh, err := freshID(st, e.ID)
		if err != nil {
			return err
		}
		var old *Subscription
		if !fresh {
			if old, err = st.Subscription(e.Node, e.ID); err != nil {
				return err
			}
		}
		if err := st.putSub(old, &s); err != nil {
			return err
		}
		if fresh {
			return st.setNextID(e.ID + 1)
		}
		return nil
	case *events.SubscriptionRenewed:
		old, err := st.Subscription(e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		s := *old
		s.Lifetime, s.Expires = e.Lifetime, e.Expires
		return st.putSub(old, &s)
	case *events.SubscriptionEnded:
		// One not here, its node's state awaited: recorded ended by
		// each name of its requester (Ended).
		if e.Move != 0 && !e.ByUser.IsZero() {
			if err := st.setEnded(e.Node, e.Move, e.ID, EndedBy(e.ByUser, "")); err != nil {
				return err
			}
		}
		if e.Move != 0 && e.By != "" {
			if err := st.setEnded(e.Node, e.Move, e.ID, EndedBy(events.User{}, e.By)); err != nil {
				return err
			}
		}
		if e.Move != 0 && (!e.ByUser.IsZero() || e.By != "") {
			n, err := st.EndedCount(e.Node, e.Move)
			if err != nil {
				return err
			}
			if err := st.setEndedCount(e.Node, e.Move, n+1); err != nil {
				return err
			}
		}
		if e.Move != 0 {
			// Of one on its way, not of one here: the id here, if any,
			// is another's (the home servers allocate ids each on its
			// own).
			return nil
		}
		old, err := st.Subscription(e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		return st.delSub(old)
	case *events.ViewSet:
		fresh, err := freshID(st, e.ID)
		if err != nil {
			return err
		}
		var old *View
		if !fresh {
			if old, err = st.View(e.Node, e.ID); err != nil {
				return err
			}
		}
		v := View{ID: e.ID, Node: e.Node, Value: e.Value, Default: e.Default, Timeout: e.Timeout, Set: e.At, Expires: e.Expires, Source: e.Source,
			Known: e.Known}
		if !e.Set.IsZero() {
			v.Set = e.Set // handed over: set on its former home server
		}
		if old != nil && old.Value == e.Value {
			// A lease refreshed with the state it holds sets no state: the
			// view keeps its place among the principal's views (the
			// effective state is the one set last, digest §3.5.4), and a
			// refresh does not flip what watchers see (S§5.5.2).
			v.Set = old.Set
		}
		if err := st.putView(old, &v); err != nil {
			return err
		}
		if fresh {
			return st.setNextID(e.ID + 1)
		}
		return nil
	case *events.ViewEnded:
		old, err := st.View(e.Node, e.ID)
		if err != nil || old == nil {
			return err
		}
		return st.delView(old)
	case *events.ACLSet:
		return st.setACL(e.Node, e.ACEs)
	case *events.PropertySet:
		return st.setProperty(e.Node, e.Value.Prop, e.Value.Value)
	case *events.UserDeparted:
		if e.Clears {
			if err := st.delACL(e.Node); err != nil {
				return err
			}
			for _, p := range []events.Prop{events.PropMobileState, events.PropMobileDescription} {
				if err := st.setProperty(e.Node, p, ""); err != nil {
					return err
				}
			}
		}
		return st.setDeparted(e.Node, e.Move)
	case *events.UserArrived:
		if e.Part != 0 {
			// A part of a handoff in parts: the move is taken with the
			// last.
			return st.setTook(e.Node, HandoffPart(e.From, e.Part), e.Move)
		}
		// A handoff from a home server the user left earlier may come
		// after one of a later move (it was down, or slow): the latest
		// move stays the one that arrived.
		if e.Move != 0 {
			if err := st.setTook(e.Node, e.From, e.Move); err != nil {
				return err
			}
		}
		if done, err := st.Arrived(e.Node); err != nil || done > e.Move {
			return err
		}
		return st.setArrived(e.Node, e.Move)
	case *events.MessageAccepted, *events.MessageDelivered, *events.RequestForwarded, *events.HomeFenced:
		// History only: the stream is their record.
		return nil
	default:
		return fmt.Errorf("no apply rule for %s", f.Type())
	}
}

// freshID reports whether id is at or past the next id to allocate: no
// subscription or view has it, since every one created moves the next
// id past its own. (A create reads no old record then: most of applying
// one, in the sign-in profile and in a rebuild, was Pebble point reads
// that missed.)
func freshID(st homeStore, id int32) (bool, error) {
	next, err := st.NextID()
	return id >= next, err
}

// pebbleHome reads the projection through r (the DB, or an indexed batch
// that sees its own writes) and writes into b.
type pebbleHome struct {
	h       *Home
	r       reader
	b       *pebble.Batch         // nil: read only
	changed map[events.User]uint8 // the cached parts of users' state the batch changes
	// watchers counts, by user, the watchers the batch adds less those it
	// removes; watching, by the hash of a user of ours' SubscriberKey, the
	// watches of that subscriber it adds less those it removes (its b
	// keys).
	watchers map[events.User]int
	watching map[keyHash]int
	// next is the next id once read or written through this value (0:
	// not yet): only its batch writes it. nextSet: it was written, and the
	// batch holds it once committed (Home.commit), not at every id.
	next    int32
	nextSet bool
	kb      []byte // scratch for keys and values (a batch copies what it is given)
	vb      []byte
}

func (p *pebbleHome) Subscription(u events.User, id int32) (*Subscription, error) {
	for _, kind := range []string{"s", "l"} {
		p.kb = p.h.appendItemKey(p.kb[:0], u, kind, id)
		if s, err := getValue(p.r, p.kb, decodeSub); err != nil || s != nil {
			return s, err
		}
	}
	return nil, nil
}

func (p *pebbleHome) Subscriptions(u events.User) ([]Subscription, error) {
	logins, err := p.Logins(u)
	if err != nil {
		return nil, err
	}
	watchers, err := p.Watchers(u)
	if err != nil {
		return nil, err
	}
	out := append(logins, watchers...)
	slices.SortFunc(out, func(a, b Subscription) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// whole reads every part of u's state the user cache keeps with one look
// under u's key prefix (its ACL, logins, mobile properties, watchers and
// views, in key order, past its moves), each part as its own read gives
// it.
func (p *pebbleHome) whole(u events.User) (cachedUser, error) {
	var e cachedUser
	pfx := prefixOf(string(p.h.userKey(u)))
	it, err := p.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: upperBound(pfx)})
	if err != nil {
		return e, err
	}
	for it.First(); it.Valid() && err == nil; it.Next() {
		k := it.Key()[len(pfx):]
		var kind byte // of a subscription or view: its letter, then 0
		if len(k) > 1 && k[1] == 0 {
			kind = k[0]
		}
		switch {
		case kind == 's':
			e.watchers++
		case kind == 'l':
			var s Subscription
			if err = decodeSub(it.Value(), &s); err == nil {
				e.logins = append(e.logins, s)
			}
		case kind == 'v':
			var v View
			if err = decodeView(it.Value(), &v); err == nil {
				e.views = append(e.views, v)
			}
		case string(k) == "acl":
			if err = json.Unmarshal(it.Value(), &e.acl); err == nil {
				e.aclSet = true
			}
		case string(k) == "departed":
			if len(it.Value()) != 8 {
				err = fmt.Errorf("want 8 bytes, have %d", len(it.Value()))
			} else {
				e.departed = binary.BigEndian.Uint64(it.Value())
			}
		case string(k) == mobileStateKey:
			e.mobileState = string(it.Value())
		case string(k) == mobileDescKey:
			e.mobileDesc = string(it.Value())
		}
		if err != nil {
			err = fmt.Errorf("decode %q: %w", it.Key(), err)
		}
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return e, err
}

// The keys of the mobile properties under a user's prefix.
var (
	mobileStateKey = string(key("p", events.Token(events.PropMobileState.Space), events.Token(events.PropMobileState.Local)))
	mobileDescKey  = string(key("p", events.Token(events.PropMobileDescription.Space), events.Token(events.PropMobileDescription.Local)))
)

func (p *pebbleHome) Logins(u events.User) ([]Subscription, error) {
	return scanValues(p.r, prefixOf(string(p.h.userKey(u, "l"))), decodeSub)
}

func (p *pebbleHome) Watchers(u events.User) ([]Subscription, error) {
	return scanValues(p.r, prefixOf(string(p.h.userKey(u, "s"))), decodeSub)
}

func (p *pebbleHome) CountWatchers(u events.User, except func(id int32) bool) (int, error) {
	n := 0
	pfx := prefixOf(string(p.h.userKey(u, "s")))
	it, err := p.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: upperBound(pfx)})
	if err != nil {
		return 0, err
	}
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); except != nil && len(k) == len(pfx)+4 && except(int32(binary.BigEndian.Uint32(k[len(pfx):]))) {
			continue
		}
		n++
	}
	return n, it.Close()
}

func (p *pebbleHome) WatchersBy(u events.User, key string) ([]Subscription, error) {
	var ids []int32
	if _, err := p.watchIndex(u, key, func(id int32) bool { ids = append(ids, id); return false }); err != nil {
		return nil, err
	}
	var out []Subscription
	for _, id := range ids {
		p.kb = p.h.appendItemKey(p.kb[:0], u, "s", id)
		s, err := getValue(p.r, p.kb, decodeSub)
		if err != nil {
			return nil, err
		}
		if s != nil && slices.Contains(WatchKeys(s), key) { // not another key of the same hash
			out = append(out, *s)
		}
	}
	return out, nil
}

func (p *pebbleHome) CountWatchersBy(u events.User, key string, except func(id int32) bool) (int, error) {
	return p.watchIndex(u, key, except)
}

func (p *pebbleHome) CountWatching(key string, upTo int, except func(u events.User, id int32) bool) (int, error) {
	if !strings.HasPrefix(key, userPrefix) {
		return 0, nil // only our users' are indexed across the nodes
	}
	return p.countWatching(newKeyHash().add(key), upTo, except)
}

// countWatching counts the b keys under hash by, as CountWatching.
func (p *pebbleHome) countWatching(by keyHash, upTo int, except func(u events.User, id int32) bool) (int, error) {
	pfx := p.h.appendWatchingPrefix(nil, by)
	it, err := p.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: upperBound(pfx)})
	if err != nil {
		return 0, err
	}
	n := 0
	for it.First(); it.Valid() && (upTo <= 0 || n < upTo); it.Next() {
		if except != nil {
			// <domain> 0 <alias> 0 <be32 id>
			rest := it.Key()[len(pfx):]
			d := bytes.IndexByte(rest, 0)
			if d < 0 || len(rest) < d+1+4+1 || rest[len(rest)-5] != 0 {
				it.Close()
				return 0, fmt.Errorf("malformed watching key %q", it.Key())
			}
			dom, err1 := events.Untoken(string(rest[:d]))
			alias, err2 := events.Untoken(string(rest[d+1 : len(rest)-5]))
			if err1 != nil || err2 != nil {
				it.Close()
				return 0, fmt.Errorf("malformed watching key %q", it.Key())
			}
			if except(events.User{Domain: dom, Alias: alias}, int32(binary.BigEndian.Uint32(rest[len(rest)-4:]))) {
				continue
			}
		}
		n++
	}
	return n, it.Close()
}

// watchIndex counts the ids listed in u's index under key, each passed
// to skip first (nil: none skipped), and not counted when it says so.
func (p *pebbleHome) watchIndex(u events.User, key string, skip func(id int32) bool) (int, error) {
	pfx := p.h.appendWatchPrefix(nil, u, key)
	it, err := p.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: upperBound(pfx)})
	if err != nil {
		return 0, err
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != len(pfx)+4 {
			continue
		}
		if skip != nil && skip(int32(binary.BigEndian.Uint32(k[len(pfx):]))) {
			continue
		}
		n++
	}
	return n, it.Close()
}

func (p *pebbleHome) View(u events.User, id int32) (*View, error) {
	p.kb = p.h.appendItemKey(p.kb[:0], u, "v", id)
	return getValue(p.r, p.kb, decodeView)
}

func (p *pebbleHome) Views(u events.User) ([]View, error) {
	return scanValues(p.r, prefixOf(string(p.h.userKey(u, "v"))), decodeView)
}

func (p *pebbleHome) ACL(u events.User) ([]events.ACE, bool, error) {
	v, err := get(p.r, p.h.userKey(u, "acl"))
	if err != nil || v == nil {
		return nil, false, err
	}
	var aces []events.ACE
	if err := json.Unmarshal(v, &aces); err != nil {
		return nil, false, fmt.Errorf("ACL of %s: %w", u, err)
	}
	return aces, true, nil
}

func (p *pebbleHome) Property(u events.User, pr events.Prop) (string, error) {
	v, err := get(p.r, p.h.userKey(u, "p", events.Token(pr.Space), events.Token(pr.Local)))
	return string(v), err
}

func (p *pebbleHome) NextID() (int32, error) {
	if p.next > 0 {
		return p.next, nil
	}
	v, err := get(p.r, p.h.key("next"))
	if err != nil {
		return 0, err
	}
	next := int32(1)
	if len(v) == 4 {
		next = int32(binary.BigEndian.Uint32(v))
	}
	if p.b != nil {
		p.next = next
	}
	return next, nil
}

func (p *pebbleHome) Departed(u events.User) (uint64, error) {
	return getUint64(p.r, p.h.userKey(u, "departed"))
}

func (p *pebbleHome) Arrived(u events.User) (uint64, error) {
	return getUint64(p.r, p.h.userKey(u, "arrived"))
}

func (p *pebbleHome) Took(u events.User, from string, move uint64) (bool, error) {
	return with(p.r, p.h.tookKey(u, from, move), func([]byte) error { return nil })
}

func (p *pebbleHome) Ended(u events.User, move uint64, id int32, by string) (bool, error) {
	return with(p.r, p.h.endedKey(u, move, id, by), func([]byte) error { return nil })
}

func (p *pebbleHome) EndedCount(u events.User, move uint64) (int, error) {
	n, err := getUint64(p.r, p.h.endedCountKey(u, move))
	return int(n), err
}

// change notes that the batch changes part of u's state.
func (p *pebbleHome) change(u events.User, part uint8) {
	if p.changed != nil {
		p.changed[u] |= part
	}
}

func subPart(kind string) uint8 {
	if kind == events.NotifyPragma {
		return partLogins
	}
	return partWatchers
}

// watch notes a watcher of u added (1) or removed (-1) by the batch.
func (p *pebbleHome) watch(u events.User, kind string, n int) {
	if subPart(kind) != partWatchers || p.changed == nil {
		return
	}
	if p.watchers == nil {
		p.watchers = map[events.User]int{}
	}
	p.watchers[u] += n
}

func (p *pebbleHome) putSub(old, s *Subscription) error {
	p.change(s.Node, subPart(s.Kind))
	p.watch(s.Node, s.Kind, 1)
	if old != nil {
		if err := p.delSub(old); err != nil {
			return err
		}
	}
	p.kb = p.h.appendItemKey(p.kb[:0], s.Node, subKind(s.Kind), s.ID)
	p.vb = appendSub(p.vb[:0], s)
	p.b.Set(p.kb, p.vb, nil)
	p.kb = p.h.appendExpiryKey(p.kb[:0], s.Expires, s.Node, "s", s.ID)
	p.b.Set(p.kb, nil, nil)
	p.index(s, false)
	return nil
}

func (p *pebbleHome) delSub(s *Subscription) error {
	p.change(s.Node, subPart(s.Kind))
	p.watch(s.Node, s.Kind, -1)
	p.kb = p.h.appendItemKey(p.kb[:0], s.Node, subKind(s.Kind), s.ID)
	p.b.Delete(p.kb, nil)
	p.kb = p.h.appendExpiryKey(p.kb[:0], s.Expires, s.Node, "s", s.ID)
	p.b.Delete(p.kb, nil)
	p.index(s, true)
	return nil
}

// WatchKeys returns the keys property subscription s is counted under
// (none for a login): a user of ours by itself and the watcher it
// subscribes for; another organisation's principal by its URL, with every
// other organisation's (ForeignKey), and by the client network it
// subscribed from (events.SenderNetwork of its Source) with every other
// principal subscribing from there. The home node bounds the
// subscriptions one subscriber, and one network, holds on a node by them;
// the index lets it read those alone, not every watcher of a node that has
// thousands.
func WatchKeys(s *Subscription) []string {
	if subKind(s.Kind) != "s" {
		return nil
	}
	by := SubscriberKey(s.SubscriberUser, s.Watcher, s.Subscriber)
	switch {
	case !s.SubscriberUser.IsZero():
		return []string{by}
	case s.Source == "":
		return []string{by, ForeignKey}
	}
	return []string{by, ForeignKey, NetworkKey(events.SenderNetwork(s.Source))}
}

// SubscriberKey is the key the property subscriptions of one subscriber
// are counted under (WatchKeys): subscriberUser, a user of ours, for
// watcher; else the principal subscriber (another organisation's).
func SubscriberKey(subscriberUser, watcher events.User, subscriber string) string {
	if !subscriberUser.IsZero() {
		return userPrefix + subscriberUser.String() + " " + watcher.String()
	}
	return principalPrefix + subscriber
}

// NetworkKey is the key the property subscriptions of other
// organisations' principals from one client network (events.SenderNetwork)
// are counted under together (WatchKeys).
func NetworkKey(network string) string { return networkPrefix + network }

// ForeignKey is the key every property subscription of another
// organisation's principal is counted under (WatchKeys): a network's key
// that no client address renders as.
const ForeignKey = networkPrefix + "*"

// The beginnings of the index's keys.
const (
	userPrefix      = "user "
	principalPrefix = "principal "
	networkPrefix   = "network "
)

// index writes s's entries in the index of WatchKeys(s), or deletes them.
func (p *pebbleHome) index(s *Subscription, del bool) {
	if subKind(s.Kind) != "s" {
		return
	}
	write := func() {
		p.kb = binary.BigEndian.AppendUint32(p.kb, uint32(s.ID))
		if del {
			p.b.Delete(p.kb, nil)
		} else {
			p.b.Set(p.kb, nil, nil)
		}
	}
	if !s.SubscriberUser.IsZero() {
		// A user of ours: its one key, hashed without being made (a
		// sign-in wave writes one for each of its watches).
		by := newKeyHash().add(userPrefix).addUser(s.SubscriberUser).add(" ").addUser(s.Watcher)
		p.kb = p.h.appendHashPrefix(p.kb[:0], s.Node, by)
		write()
		// And by subscriber first, across the nodes (CountWatching),
		// counted for the cache: putSub and delSub, which alone write
		// and delete these keys, write one only where the record was not,
		// and delete one only where it was.
		p.kb = p.h.appendWatchingKey(p.kb[:0], by, s.Node)
		write()
		if p.changed != nil {
			if p.watching == nil {
				p.watching = map[keyHash]int{}
			}
			if del {
				p.watching[by]--
			} else {
				p.watching[by]++
			}
		}
		return
	}
	for _, k := range WatchKeys(s) {
		p.kb = p.h.appendWatchPrefix(p.kb[:0], s.Node, k)
		write()
	}
}

// appendWatchPrefix appends the prefix of the keys of u's property
// subscriptions counted under key. A network's key is written as it is,
// under "n" (few subscriptions have one, and a network is not a text a
// client chooses). A subscriber's is written as its hash, under "w": 8
// bytes rather than the 40 of a user's key, as a sign-in wave writes one
// for each watch. Two subscribers of one node could share a hash:
// WatchersBy reads each subscription it lists and keeps key's alone.
func (h *Home) appendWatchPrefix(dst []byte, u events.User, key string) []byte {
	if network, ok := strings.CutPrefix(key, networkPrefix); ok {
		dst = append(h.appendUserKey(dst, u, "n"), 0)
		return append(events.AppendToken(dst, network), 0)
	}
	return h.appendHashPrefix(dst, u, newKeyHash().add(key))
}

func (h *Home) appendHashPrefix(dst []byte, u events.User, k keyHash) []byte {
	return binary.BigEndian.AppendUint64(append(h.appendUserKey(dst, u, "w"), 0), uint64(k))
}

// appendWatchingPrefix appends the prefix of the keys of the property
// subscriptions, on every node, of the user of ours whose SubscriberKey
// has hash by: b <hash>.
func (h *Home) appendWatchingPrefix(dst []byte, by keyHash) []byte {
	return binary.BigEndian.AppendUint64(append(append(dst, h.prefix...), 'b', 0), uint64(by))
}

// appendWatchingKey appends the prefix of the keys, of by's property
// subscriptions on u's node (the id follows): b <hash> <domain> 0 <alias> 0.
func (h *Home) appendWatchingKey(dst []byte, by keyHash, u events.User) []byte {
	dst = append(events.AppendToken(h.appendWatchingPrefix(dst, by), u.Domain), 0)
	return append(events.AppendToken(dst, u.Alias), 0)
}

// keyHash is a key's 64-bit FNV-1a hash, made piece by piece.
type keyHash uint64

func newKeyHash() keyHash { return 14695981039346656037 }

func (k keyHash) add(s string) keyHash {
	for i := 0; i < len(s); i++ {
		k ^= keyHash(s[i])
		k *= 1099511628211
	}
	return k
}

// addUser adds u.String().
func (k keyHash) addUser(u events.User) keyHash {
	if u.IsZero() {
		return k
	}
	return k.add(u.Alias).add("@").add(u.Domain)
}

func (p *pebbleHome) putView(old, v *View) error {
	p.change(v.Node, partViews)
	if old != nil && !old.Expires.IsZero() {
		p.kb = p.h.appendExpiryKey(p.kb[:0], old.Expires, old.Node, "v", old.ID)
		p.b.Delete(p.kb, nil)
	}
	p.kb = p.h.appendItemKey(p.kb[:0], v.Node, "v", v.ID)
	p.vb = appendView(p.vb[:0], v)
	p.b.Set(p.kb, p.vb, nil)
	if !v.Expires.IsZero() {
		p.kb = p.h.appendExpiryKey(p.kb[:0], v.Expires, v.Node, "v", v.ID)
		p.b.Set(p.kb, nil, nil)
	}
	return nil
}

func (p *pebbleHome) delView(v *View) error {
	p.change(v.Node, partViews)
	p.kb = p.h.appendItemKey(p.kb[:0], v.Node, "v", v.ID)
	p.b.Delete(p.kb, nil)
	if !v.Expires.IsZero() {
		p.kb = p.h.appendExpiryKey(p.kb[:0], v.Expires, v.Node, "v", v.ID)
		p.b.Delete(p.kb, nil)
	}
	return nil
}

func (p *pebbleHome) setACL(u events.User, aces []events.ACE) error {
	p.change(u, partACL)
	data, err := json.Marshal(aces)
	if err != nil {
		return err
	}
	return p.b.Set(p.h.userKey(u, "acl"), data, nil)
}

func (p *pebbleHome) delACL(u events.User) error {
	p.change(u, partACL)
	return p.b.Delete(p.h.userKey(u, "acl"), nil)
}

func (p *pebbleHome) setProperty(u events.User, pr events.Prop, value string) error {
	p.change(u, partProps)
	return p.b.Set(p.h.userKey(u, "p", events.Token(pr.Space), events.Token(pr.Local)), []byte(value), nil)
}

func (p *pebbleHome) setDeparted(u events.User, move uint64) error {
	p.change(u, partDeparted)
	return p.b.Set(p.h.userKey(u, "departed"), []byte(be64(move)), nil)
}

func (p *pebbleHome) setArrived(u events.User, move uint64) error {
	return p.b.Set(p.h.userKey(u, "arrived"), []byte(be64(move)), nil)
}

func (p *pebbleHome) setTook(u events.User, from string, move uint64) error {
	return p.b.Set(p.h.tookKey(u, from, move), []byte{}, nil)
}

func (p *pebbleHome) setEnded(u events.User, move uint64, id int32, by string) error {
	return p.b.Set(p.h.endedKey(u, move, id, by), []byte{}, nil)
}

func (p *pebbleHome) setEndedCount(u events.User, move uint64, n int) error {
	return p.b.Set(p.h.endedCountKey(u, move), []byte(be64(uint64(n))), nil)
}

func (p *pebbleHome) setNextID(id int32) error {
	p.next, p.nextSet = id, true
	return nil
}

func getValue[T any](r reader, k []byte, decode func([]byte, *T) error) (*T, error) {
	var out T
	found, err := with(r, k, func(v []byte) error {
		if err := decode(v, &out); err != nil {
			return fmt.Errorf("decode %q: %w", k, err)
		}
		return nil
	})
	if !found || err != nil {
		return nil, err
	}
	return &out, nil
}

func scanValues[T any](r reader, p []byte, decode func([]byte, *T) error) ([]T, error) {
	var out []T
	err := scan(r, p, func(k, v []byte) error {
		var x T
		if err := decode(v, &x); err != nil {
			return fmt.Errorf("decode %q: %w", k, err)
		}
		out = append(out, x)
		return nil
	})
	return out, err
}

func (h *Home) read() *pebbleHome { return &pebbleHome{h: h, r: h.db.pdb} }

// The Home's reads are HomeReader's, on the store as it is, the small
// parts of a user's state through the cache.

func (h *Home) Subscription(u events.User, id int32) (*Subscription, error) {
	return h.read().Subscription(u, id)
}
func (h *Home) Subscriptions(u events.User) ([]Subscription, error) { return h.read().Subscriptions(u) }
func (h *Home) View(u events.User, id int32) (*View, error)         { return h.read().View(u, id) }
func (h *Home) WatchersBy(u events.User, key string) ([]Subscription, error) {
	return h.read().WatchersBy(u, key)
}
func (h *Home) CountWatchersBy(u events.User, key string, except func(id int32) bool) (int, error) {
	return h.read().CountWatchersBy(u, key, except)
}

// CountWatching counts through the cache when nothing is left out: a
// subscriber's count is read from Pebble (her keys counted, all of them)
// only when the cache has none, and batches keep it.
func (h *Home) CountWatching(key string, upTo int, except func(u events.User, id int32) bool) (int, error) {
	if except != nil || !strings.HasPrefix(key, userPrefix) {
		return h.read().CountWatching(key, upTo, except)
	}
	by := newKeyHash().add(key)
	n, gen, ok := h.cache.getWatching(by)
	if ok {
		return n, nil
	}
	n, err := h.read().countWatching(by, 0, nil)
	if err == nil {
		h.cache.putWatching(by, gen, n)
	}
	return n, err
}

// NextID reads the next id through Home.next, once known.
func (h *Home) NextID() (int32, error) {
	if next := h.next.Load(); next > 0 {
		return next, nil
	}
	next, err := h.read().NextID()
	if err == nil {
		// Only the first read stores it: after that, commits keep it.
		h.next.CompareAndSwap(0, next)
	}
	return next, err
}

// first reads, when the cache has no entry of u's, every part of u's
// state it keeps with one look into Pebble (pebbleHome.whole), and caches it
// (unless a batch began or ended since gen: the cache's put). A first
// read of a user, as in a wave of sign-ins after a restart, is one seek
// rather than one for each part. ok is false when u has an entry (with
// other parts) or the look failed: the caller reads its part alone.
func (h *Home) first(u events.User, gen uint64) (e cachedUser, ok bool) {
	if !h.cache.absent(u) {
		return e, false
	}
	e, err := h.read().whole(u)
	if err != nil {
		return e, false // read part by part, errors and all
	}
	h.cache.putAll(u, gen, e)
	return e, true
}

// Watchers skips the scan when the cache counts none.
func (h *Home) Watchers(u events.User) ([]Subscription, error) {
	var n int
	gen, ok := h.cache.get(u, partWatchers, func(e *cachedUser) { n = e.watchers })
	if !ok {
		var e cachedUser
		e, ok = h.first(u, gen)
		n = e.watchers
	}
	if ok && n == 0 {
		return nil, nil
	}
	return h.read().Watchers(u)
}

func (h *Home) Logins(u events.User) ([]Subscription, error) {
	var l []Subscription
	gen, ok := h.cache.get(u, partLogins, func(e *cachedUser) { l = slices.Clone(e.logins) })
	if ok {
		return l, nil
	}
	if e, ok := h.first(u, gen); ok {
		return slices.Clone(e.logins), nil
	}
	l, err := h.read().Logins(u)
	if err == nil {
		h.cache.put(u, partLogins, gen, func(e *cachedUser) { e.logins = slices.Clone(l) })
	}
	return l, err
}

func (h *Home) Views(u events.User) ([]View, error) {
	var v []View
	gen, ok := h.cache.get(u, partViews, func(e *cachedUser) { v = slices.Clone(e.views) })
	if ok {
		return v, nil
	}
	if e, ok := h.first(u, gen); ok {
		return slices.Clone(e.views), nil
	}
	v, err := h.read().Views(u)
	if err == nil {
		h.cache.put(u, partViews, gen, func(e *cachedUser) { e.views = slices.Clone(v) })
	}
	return v, err
}

func (h *Home) ACL(u events.User) ([]events.ACE, bool, error) {
	var aces []events.ACE
	var set bool
	gen, ok := h.cache.get(u, partACL, func(e *cachedUser) { aces, set = slices.Clone(e.acl), e.aclSet })
	if ok {
		return aces, set, nil
	}
	if e, ok := h.first(u, gen); ok {
		return slices.Clone(e.acl), e.aclSet, nil
	}
	aces, set, err := h.read().ACL(u)
	if err == nil {
		h.cache.put(u, partACL, gen, func(e *cachedUser) { e.acl, e.aclSet = slices.Clone(aces), set })
	}
	return aces, set, err
}

func (h *Home) Property(u events.User, p events.Prop) (string, error) {
	if p != events.PropMobileState && p != events.PropMobileDescription {
		return h.read().Property(u, p)
	}
	var st, desc string
	gen, ok := h.cache.get(u, partProps, func(e *cachedUser) { st, desc = e.mobileState, e.mobileDesc })
	if !ok {
		var e cachedUser
		if e, ok = h.first(u, gen); ok {
			st, desc = e.mobileState, e.mobileDesc
		}
	}
	if !ok {
		var err error
		if st, err = h.read().Property(u, events.PropMobileState); err != nil {
			return "", err
		}
		if desc, err = h.read().Property(u, events.PropMobileDescription); err != nil {
			return "", err
		}
		h.cache.put(u, partProps, gen, func(e *cachedUser) { e.mobileState, e.mobileDesc = st, desc })
	}
	if p == events.PropMobileState {
		return st, nil
	}
	return desc, nil
}

// CountWatchers counts through the cache when nothing is left out.
func (h *Home) CountWatchers(u events.User, except func(int32) bool) (int, error) {
	if except != nil {
		return h.read().CountWatchers(u, except)
	}
	var n int
	gen, ok := h.cache.get(u, partWatchers, func(e *cachedUser) { n = e.watchers })
	if ok {
		return n, nil
	}
	if e, ok := h.first(u, gen); ok {
		return e.watchers, nil
	}
	n, err := h.read().CountWatchers(u, nil)
	if err == nil {
		h.cache.put(u, partWatchers, gen, func(e *cachedUser) { e.watchers = n })
	}
	return n, err
}

// Departed is read for every request (the home node's check for a user
// handed off ahead of its directory): kept in the user cache.
func (h *Home) Departed(u events.User) (uint64, error) {
	var d uint64
	gen, ok := h.cache.get(u, partDeparted, func(e *cachedUser) { d = e.departed })
	if ok {
		return d, nil
	}
	if e, ok := h.first(u, gen); ok {
		return e.departed, nil
	}
	d, err := h.read().Departed(u)
	if err == nil {
		h.cache.put(u, partDeparted, gen, func(e *cachedUser) { e.departed = d })
	}
	return d, err
}

func (h *Home) Arrived(u events.User) (uint64, error) { return h.read().Arrived(u) }
func (h *Home) Took(u events.User, from string, move uint64) (bool, error) {
	return h.read().Took(u, from, move)
}
func (h *Home) Ended(u events.User, move uint64, id int32, by string) (bool, error) {
	return h.read().Ended(u, move, id, by)
}
func (h *Home) EndedCount(u events.User, move uint64) (int, error) {
	return h.read().EndedCount(u, move)
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

// CompactCache copies the entries of the cache of users' state afresh
// once a wave of sign-ins is over, so that the memory they hold is not
// spread thin (see userCache.compact); it returns how many it copied, 0
// when it did not. It is for a loop calling it every few seconds: it
// tells a wave's end by the calls, and takes the cache's lock for about
// 0.3 ms at a time.
func (h *Home) CompactCache() int { return h.cache.compact(compactLeast) }

// compactLeast is how many parts must have been stored since the last
// compaction for the next: a few hundred users signing in are not worth
// copying every entry for.
const compactLeast = 1000

// Counts returns how many users have a login subscription (are signed
// in) and how many subscriptions there are, logins and property
// subscriptions, in one scan of the users' keys: for the metrics, every
// few seconds.
func (h *Home) Counts() (online, subs int, err error) {
	p := prefixOf(string(h.key("u")))
	var last []byte // the user of the last login counted
	err = scan(h.db.pdb, p, func(k, _ []byte) error {
		// <domain> 0 <alias> 0 <kind> 0 ..., read without allocating:
		// every key of every user is read.
		rest := k[len(p):]
		d := bytes.IndexByte(rest, 0)
		if d < 0 {
			return nil
		}
		a := bytes.IndexByte(rest[d+1:], 0)
		if a < 0 {
			return nil
		}
		user, kind := rest[:d+1+a], rest[d+1+a+1:]
		if len(kind) < 2 || kind[1] != 0 {
			return nil
		}
		switch kind[0] {
		case 'l':
			subs++
			if !bytes.Equal(user, last) {
				online++
				last = append(last[:0], user...)
			}
		case 's':
			subs++
		}
		return nil
	})
	return online, subs, err
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
