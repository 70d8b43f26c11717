package projections

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/rvp-im/rvpd/events"
)

// Overlay is a home server's state with facts applied in memory over a
// HomeReader (the Pebble projection, or nothing): what a home node
// decides against while its facts are on their way through the stream
// into the projection. Facts are applied with the same rules as in
// Pebble; each change is tagged with the stream sequence of its fact and
// forgotten once the projection has applied that sequence (Forget), or
// dropped with all the others when they may never have been stored
// (Drop).
//
// Over nothing (NewOverlay(nil)) it is a map-backed home state: the
// state decisions are tested against.
//
// An Overlay is not safe for concurrent use.
type Overlay struct {
	base HomeReader

	subs     map[itemKey]entry[Subscription]
	views    map[itemKey]entry[View]
	userSubs map[events.User]map[int32]struct{} // ids with an entry in subs
	userVws  map[events.User]map[int32]struct{} // ids with an entry in views
	// watching holds, by the hash of a user of ours' SubscriberKey, the
	// property subscriptions of that subscriber with an entry in subs
	// (and perhaps some forgotten since: CountWatching reads subs).
	watching map[keyHash]map[itemKey]struct{}
	acls     map[events.User]entry[[]events.ACE]
	props    map[propKey]entry[string]
	departed map[events.User]entry[uint64]
	arrived  map[events.User]entry[uint64]
	took     map[tookKey]entry[bool]
	ended    map[endedKey]entry[bool]
	endedN   map[moveKey]entry[int]
	next     entry[int32]

	seq     uint64    // the sequence the fact being applied is tagged with
	written []written // changes in sequence order, for Forget
}

type itemKey struct {
	u  events.User
	id int32
}

type propKey struct {
	u events.User
	p events.Prop
}

// tookKey names a handoff: the home server it came from and its move.
type tookKey struct {
	u    events.User
	from string
	move uint64
}

// endedKey names an end of a subscription not here (Ended).
type endedKey struct {
	u    events.User
	move uint64
	id   int32
	by   string
}

// moveKey names a user's move (EndedCount).
type moveKey struct {
	u    events.User
	move uint64
}

type entry[T any] struct {
	val  T
	gone bool // deleted
	seq  uint64
	set  bool
}

// written names one change, for Forget.
type written struct {
	seq  uint64
	kind byte // 's' sub, 'v' view, 'a' ACL, 'p' property, 'd' departed, 'r' arrived, 't' took, 'e' ended, 'c' ended count, 'n' next id
	u    events.User
	id   int32
	p    events.Prop
	took tookKey
	end  endedKey
	mv   moveKey
	// by and byOld: of a subscription of a user of ours, and of the one
	// it replaced, the hash of its subscriber's key (watching); else 0.
	by, byOld keyHash
}

// NewOverlay returns an empty overlay over base (nil: over nothing).
func NewOverlay(base HomeReader) *Overlay {
	o := &Overlay{base: base}
	o.Drop()
	return o
}

// Drop forgets every fact applied. (The maps are made when first
// written: an overlay that a decision makes to see its own facts, and
// throws away, costs little.)
func (o *Overlay) Drop() {
	o.subs, o.views = nil, nil
	o.userSubs, o.userVws = nil, nil
	o.watching = nil
	o.acls, o.props = nil, nil
	o.departed, o.arrived, o.took, o.ended, o.endedN = nil, nil, nil, nil, nil
	o.next = entry[int32]{}
	o.written = nil
}

// set stores v at k in *m, making the map if need be.
func set[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}

// Len returns how many keys the overlay holds changes of.
func (o *Overlay) Len() int {
	n := len(o.subs) + len(o.views) + len(o.acls) + len(o.props) + len(o.departed) + len(o.arrived) + len(o.took) + len(o.ended) + len(o.endedN)
	if o.next.set {
		n++
	}
	return n
}

// Apply applies f, tagged with its stream sequence seq (0 for a fact
// that is never forgotten: an overlay that is thrown away whole).
func (o *Overlay) Apply(seq uint64, f events.Fact) error {
	o.seq = seq
	return applyFact(o, f)
}

// Forget forgets the changes of the facts at or below pos: the
// projection under the overlay has applied them.
func (o *Overlay) Forget(pos uint64) {
	i := 0
	for ; i < len(o.written) && o.written[i].seq != 0 && o.written[i].seq <= pos; i++ {
		w := o.written[i]
		switch w.kind {
		case 's':
			if e := o.subs[itemKey{w.u, w.id}]; e.seq <= pos {
				delete(o.subs, itemKey{w.u, w.id})
				forgetID(o.userSubs, w.u, w.id)
				o.unwatch(w.by, itemKey{w.u, w.id})
				o.unwatch(w.byOld, itemKey{w.u, w.id})
			}
		case 'v':
			if e := o.views[itemKey{w.u, w.id}]; e.seq <= pos {
				delete(o.views, itemKey{w.u, w.id})
				forgetID(o.userVws, w.u, w.id)
			}
		case 'a':
			forgetIf(o.acls, w.u, pos)
		case 'p':
			forgetIf(o.props, propKey{w.u, w.p}, pos)
		case 'd':
			forgetIf(o.departed, w.u, pos)
		case 'r':
			forgetIf(o.arrived, w.u, pos)
		case 't':
			forgetIf(o.took, w.took, pos)
		case 'e':
			forgetIf(o.ended, w.end, pos)
		case 'c':
			forgetIf(o.endedN, w.mv, pos)
		case 'n':
			if o.next.seq <= pos {
				o.next = entry[int32]{}
			}
		}
	}
	if i > 0 {
		o.written = slices.Delete(o.written, 0, i)
	}
}

func forgetIf[K comparable, T any](m map[K]entry[T], k K, pos uint64) {
	if e, ok := m[k]; ok && e.seq <= pos {
		delete(m, k)
	}
}

func forgetID(m map[events.User]map[int32]struct{}, u events.User, id int32) {
	if ids := m[u]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(m, u)
		}
	}
}

func (o *Overlay) note(kind byte, u events.User, id int32, p events.Prop) {
	o.written = append(o.written, written{seq: o.seq, kind: kind, u: u, id: id, p: p})
}

// Reads: the overlay's entry when it has one, else the base's.

func (o *Overlay) Subscription(u events.User, id int32) (*Subscription, error) {
	if e, ok := o.subs[itemKey{u, id}]; ok {
		if e.gone {
			return nil, nil
		}
		s := e.val
		return &s, nil
	}
	if o.base == nil {
		return nil, nil
	}
	return o.base.Subscription(u, id)
}

func (o *Overlay) Subscriptions(u events.User) ([]Subscription, error) {
	return o.subsWhere(u, func(*Subscription) bool { return true }, func(b HomeReader) ([]Subscription, error) { return b.Subscriptions(u) })
}

func (o *Overlay) Logins(u events.User) ([]Subscription, error) {
	return o.subsWhere(u, isKind("l"), func(b HomeReader) ([]Subscription, error) { return b.Logins(u) })
}

func (o *Overlay) Watchers(u events.User) ([]Subscription, error) {
	return o.subsWhere(u, isKind("s"), func(b HomeReader) ([]Subscription, error) { return b.Watchers(u) })
}

func (o *Overlay) WatchersBy(u events.User, key string) ([]Subscription, error) {
	return o.subsWhere(u, countedBy(key), func(b HomeReader) ([]Subscription, error) { return b.WatchersBy(u, key) })
}

func (o *Overlay) CountWatchersBy(u events.User, key string, except func(id int32) bool) (int, error) {
	ids := o.userSubs[u]
	n := 0
	if o.base != nil {
		var err error
		// The base's, but for the ids the overlay has, in one read.
		n, err = o.base.CountWatchersBy(u, key, func(id int32) bool {
			_, mine := ids[id]
			return mine || (except != nil && except(id))
		})
		if err != nil {
			return 0, err
		}
	}
	counted := countedBy(key)
	for id := range ids {
		if e := o.subs[itemKey{u, id}]; !e.gone && (except == nil || !except(id)) && counted(&e.val) {
			n++
		}
	}
	return n, nil
}

func (o *Overlay) CountWatching(key string, upTo int, except func(u events.User, id int32) bool) (int, error) {
	if !strings.HasPrefix(key, userPrefix) {
		return 0, nil
	}
	// The overlay's subscriptions of the subscriber, listed under her
	// key's hash with those their writes replaced (and perhaps some
	// forgotten since, then the base's: not in subs).
	items := o.watching[newKeyHash().add(key)]
	n := 0
	for k := range items {
		if e, ok := o.subs[k]; ok && !e.gone && (except == nil || !except(k.u, k.id)) && isKeyOf(key, &e.val) {
			n++
		}
	}
	if o.base == nil {
		return n, nil
	}
	if len(items) > 0 && except == nil {
		// New subscriptions in flight (a sign-in's watches) are not in the
		// base: their ids are at or past its next id, read after the
		// count (the base only moves forward). Then the base has none of
		// the subscriber's that the overlay has changed, and its count
		// serves as it is (cached, for the projection), with no scan.
		b, err := o.base.CountWatching(key, upTo, nil)
		if err != nil {
			return 0, err
		}
		next, err := o.base.NextID()
		if err != nil {
			return 0, err
		}
		fresh := true
		for k := range items {
			if _, ok := o.subs[k]; ok && k.id < next {
				fresh = false
				break
			}
		}
		if fresh {
			return b + n, nil
		}
	}
	// The base's but for those the overlay has changed: their overlay's
	// versions are counted above.
	skip := except
	if len(items) > 0 {
		skip = func(u events.User, id int32) bool {
			_, mine := o.subs[itemKey{u, id}]
			return mine || (except != nil && except(u, id))
		}
	}
	b, err := o.base.CountWatching(key, upTo, skip)
	if err != nil {
		return 0, err
	}
	return b + n, nil
}

// isKeyOf reports whether s is a user of ours' watch (not a login) of
// SubscriberKey key, without making the key: whether WatchKeys(s) is key.
func isKeyOf(key string, s *Subscription) bool {
	if subKind(s.Kind) != "s" || s.SubscriberUser.IsZero() {
		return false
	}
	rest, ok := strings.CutPrefix(key, userPrefix)
	if rest, ok = cutUser(rest, ok, s.SubscriberUser); ok {
		rest, ok = strings.CutPrefix(rest, " ")
	}
	rest, ok = cutUser(rest, ok, s.Watcher)
	return ok && rest == ""
}

// cutUser cuts u.String() from the front of s, if ok.
func cutUser(s string, ok bool, u events.User) (string, bool) {
	if !ok || u.IsZero() {
		return s, ok
	}
	if s, ok = strings.CutPrefix(s, u.Alias); ok {
		if s, ok = strings.CutPrefix(s, "@"); ok {
			s, ok = strings.CutPrefix(s, u.Domain)
		}
	}
	return s, ok
}

// isKind returns whether a subscription's key letter is kind.
func isKind(kind string) func(*Subscription) bool {
	return func(s *Subscription) bool { return subKind(s.Kind) == kind }
}

// countedBy returns whether a subscription is counted under key
// (WatchKeys).
func countedBy(key string) func(*Subscription) bool {
	return func(s *Subscription) bool { return slices.Contains(WatchKeys(s), key) }
}

// subsWhere merges the base's subscriptions of u (read by fromBase) with
// the overlay's that match.
func (o *Overlay) subsWhere(u events.User, match func(*Subscription) bool, fromBase func(HomeReader) ([]Subscription, error)) ([]Subscription, error) {
	var base []Subscription
	if o.base != nil {
		var err error
		if base, err = fromBase(o.base); err != nil {
			return nil, err
		}
	}
	ids := o.userSubs[u]
	if len(ids) == 0 {
		return base, nil
	}
	out := base[:0:0]
	for _, s := range base {
		if _, ok := ids[s.ID]; !ok {
			out = append(out, s)
		}
	}
	for id := range ids {
		if e := o.subs[itemKey{u, id}]; !e.gone && match(&e.val) {
			out = append(out, e.val)
		}
	}
	slices.SortFunc(out, func(a, b Subscription) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (o *Overlay) CountWatchers(u events.User, except func(int32) bool) (int, error) {
	// The base's, but for the ids the overlay has (as subsWhere merges:
	// one read of the base, whatever it applies meanwhile), and the
	// overlay's.
	ids := o.userSubs[u]
	n := 0
	if o.base != nil {
		var err error
		if n, err = o.baseWatchers(u, ids, except); err != nil {
			return 0, err
		}
	}
	for id := range ids {
		if except != nil && except(id) {
			continue
		}
		if e := o.subs[itemKey{u, id}]; !e.gone && subKind(e.val.Kind) == "s" {
			n++
		}
	}
	return n, nil
}

// baseWatchers counts the base's watchers of u but for ids and those
// except reports.
func (o *Overlay) baseWatchers(u events.User, ids map[int32]struct{}, except func(int32) bool) (int, error) {
	if len(ids) == 0 {
		return o.base.CountWatchers(u, except)
	}
	if except == nil {
		// New subscriptions in flight (the usual case: a sign-in's watches)
		// are not in the base: their ids are at or past its next id. Then
		// the base's count serves as it is (cached), with no scan. The
		// count is read first: the base only moves forward, so ids past
		// the next id read after it were not in it when it was counted.
		n, err := o.base.CountWatchers(u, nil)
		if err != nil {
			return 0, err
		}
		next, err := o.base.NextID()
		if err != nil {
			return 0, err
		}
		fresh := true
		for id := range ids {
			fresh = fresh && id >= next
		}
		if fresh {
			return n, nil
		}
	}
	return o.base.CountWatchers(u, func(id int32) bool {
		_, mine := ids[id]
		return mine || (except != nil && except(id))
	})
}

func (o *Overlay) View(u events.User, id int32) (*View, error) {
	if e, ok := o.views[itemKey{u, id}]; ok {
		if e.gone {
			return nil, nil
		}
		v := e.val
		return &v, nil
	}
	if o.base == nil {
		return nil, nil
	}
	return o.base.View(u, id)
}

func (o *Overlay) Views(u events.User) ([]View, error) {
	var base []View
	if o.base != nil {
		var err error
		if base, err = o.base.Views(u); err != nil {
			return nil, err
		}
	}
	ids := o.userVws[u]
	if len(ids) == 0 {
		return base, nil
	}
	out := base[:0:0]
	for _, v := range base {
		if _, ok := ids[v.ID]; !ok {
			out = append(out, v)
		}
	}
	for id := range ids {
		if e := o.views[itemKey{u, id}]; !e.gone {
			out = append(out, e.val)
		}
	}
	slices.SortFunc(out, func(a, b View) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (o *Overlay) ACL(u events.User) ([]events.ACE, bool, error) {
	if e, ok := o.acls[u]; ok {
		return slices.Clone(e.val), !e.gone, nil
	}
	if o.base == nil {
		return nil, false, nil
	}
	return o.base.ACL(u)
}

func (o *Overlay) Property(u events.User, p events.Prop) (string, error) {
	if e, ok := o.props[propKey{u, p}]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return "", nil
	}
	return o.base.Property(u, p)
}

func (o *Overlay) NextID() (int32, error) {
	if o.next.set {
		return o.next.val, nil
	}
	if o.base == nil {
		return 1, nil
	}
	return o.base.NextID()
}

func (o *Overlay) Departed(u events.User) (uint64, error) {
	if e, ok := o.departed[u]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return 0, nil
	}
	return o.base.Departed(u)
}

func (o *Overlay) Arrived(u events.User) (uint64, error) {
	if e, ok := o.arrived[u]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return 0, nil
	}
	return o.base.Arrived(u)
}

func (o *Overlay) Took(u events.User, from string, move uint64) (bool, error) {
	if e, ok := o.took[tookKey{u, from, move}]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return false, nil
	}
	return o.base.Took(u, from, move)
}

func (o *Overlay) Ended(u events.User, move uint64, id int32, by string) (bool, error) {
	if e, ok := o.ended[endedKey{u, move, id, by}]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return false, nil
	}
	return o.base.Ended(u, move, id, by)
}

func (o *Overlay) EndedCount(u events.User, move uint64) (int, error) {
	if e, ok := o.endedN[moveKey{u, move}]; ok {
		return e.val, nil
	}
	if o.base == nil {
		return 0, nil
	}
	return o.base.EndedCount(u, move)
}

// Writes, for applyFact.

func (o *Overlay) putSub(old, s *Subscription) error {
	k := itemKey{s.Node, s.ID}
	set(&o.subs, k, entry[Subscription]{val: *s, seq: o.seq, set: true})
	addID(&o.userSubs, s.Node, s.ID)
	o.noteSub(old, s)
	return nil
}

func (o *Overlay) delSub(s *Subscription) error {
	k := itemKey{s.Node, s.ID}
	set(&o.subs, k, entry[Subscription]{val: Subscription{Kind: s.Kind}, gone: true, seq: o.seq, set: true})
	addID(&o.userSubs, s.Node, s.ID)
	o.noteSub(nil, s)
	return nil
}

// noteSub notes a change of subscription s (old: the one it replaces,
// if any), listed under the key of its subscriber, and of old's, if a
// user of ours' watch (watching): the base's of that subscriber are
// counted without it.
func (o *Overlay) noteSub(old, s *Subscription) {
	w := written{seq: o.seq, kind: 's', u: s.Node, id: s.ID, by: o.watch(s)}
	if old != nil {
		w.byOld = o.watch(old)
	}
	o.written = append(o.written, w)
}

// watch lists s under its subscriber's key in watching if it is a user
// of ours' watch, and returns the key's hash (0: none).
func (o *Overlay) watch(s *Subscription) keyHash {
	if subKind(s.Kind) != "s" || s.SubscriberUser.IsZero() {
		return 0
	}
	by := newKeyHash().add(userPrefix).addUser(s.SubscriberUser).add(" ").addUser(s.Watcher)
	items := o.watching[by]
	if items == nil {
		items = map[itemKey]struct{}{}
		set(&o.watching, by, items)
	}
	items[itemKey{s.Node, s.ID}] = struct{}{}
	return by
}

// unwatch takes the item k off the list of key hash by (0: none).
func (o *Overlay) unwatch(by keyHash, k itemKey) {
	if items := o.watching[by]; by != 0 && items != nil {
		delete(items, k)
		if len(items) == 0 {
			delete(o.watching, by)
		}
	}
}

func (o *Overlay) putView(_, v *View) error {
	set(&o.views, itemKey{v.Node, v.ID}, entry[View]{val: *v, seq: o.seq, set: true})
	addID(&o.userVws, v.Node, v.ID)
	o.note('v', v.Node, v.ID, events.Prop{})
	return nil
}

func (o *Overlay) delView(v *View) error {
	set(&o.views, itemKey{v.Node, v.ID}, entry[View]{gone: true, seq: o.seq, set: true})
	addID(&o.userVws, v.Node, v.ID)
	o.note('v', v.Node, v.ID, events.Prop{})
	return nil
}

func (o *Overlay) setACL(u events.User, aces []events.ACE) error {
	set(&o.acls, u, entry[[]events.ACE]{val: slices.Clone(aces), seq: o.seq, set: true})
	o.note('a', u, 0, events.Prop{})
	return nil
}

func (o *Overlay) delACL(u events.User) error {
	set(&o.acls, u, entry[[]events.ACE]{gone: true, seq: o.seq, set: true})
	o.note('a', u, 0, events.Prop{})
	return nil
}

func (o *Overlay) setProperty(u events.User, p events.Prop, value string) error {
	set(&o.props, propKey{u, p}, entry[string]{val: value, seq: o.seq, set: true})
	o.note('p', u, 0, p)
	return nil
}

func (o *Overlay) setDeparted(u events.User, move uint64) error {
	set(&o.departed, u, entry[uint64]{val: move, seq: o.seq, set: true})
	o.note('d', u, 0, events.Prop{})
	return nil
}

func (o *Overlay) setArrived(u events.User, move uint64) error {
	set(&o.arrived, u, entry[uint64]{val: move, seq: o.seq, set: true})
	o.note('r', u, 0, events.Prop{})
	return nil
}

func (o *Overlay) setTook(u events.User, from string, move uint64) error {
	k := tookKey{u, from, move}
	set(&o.took, k, entry[bool]{val: true, seq: o.seq, set: true})
	o.written = append(o.written, written{seq: o.seq, kind: 't', u: u, took: k})
	return nil
}

func (o *Overlay) setEnded(u events.User, move uint64, id int32, by string) error {
	k := endedKey{u, move, id, by}
	set(&o.ended, k, entry[bool]{val: true, seq: o.seq, set: true})
	o.written = append(o.written, written{seq: o.seq, kind: 'e', u: u, end: k})
	return nil
}

func (o *Overlay) setEndedCount(u events.User, move uint64, n int) error {
	k := moveKey{u, move}
	set(&o.endedN, k, entry[int]{val: n, seq: o.seq, set: true})
	o.written = append(o.written, written{seq: o.seq, kind: 'c', u: u, mv: k})
	return nil
}

func (o *Overlay) setNextID(id int32) error {
	o.next = entry[int32]{val: id, seq: o.seq, set: true}
	o.note('n', events.User{}, 0, events.Prop{})
	return nil
}

func addID(m *map[events.User]map[int32]struct{}, u events.User, id int32) {
	ids := (*m)[u]
	if ids == nil {
		ids = map[int32]struct{}{}
		set(m, u, ids)
	}
	ids[id] = struct{}{}
}

// Users returns the users the overlay holds changes for.
func (o *Overlay) Users() []events.User {
	seen := map[events.User]bool{}
	for k := range o.subs {
		seen[k.u] = true
	}
	for k := range o.views {
		seen[k.u] = true
	}
	return slices.Collect(maps.Keys(seen))
}
