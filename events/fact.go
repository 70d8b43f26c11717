package events

import (
	"strconv"
	"strings"
	"time"
)

// Fact is implemented by the fact events of a user's aggregate.
type Fact interface {
	Event
	// Subject returns the user whose aggregate the fact belongs to.
	Subject() User
	// Metadata returns the audit record of the fact.
	Metadata() *Meta
}

// SubscriptionCreated records a new subscription on a node.
type SubscriptionCreated struct {
	Meta
	Node       User   `json:"node"`
	ID         int32  `json:"sub_id"`
	Kind       string `json:"kind"`             // NotifyPragma or NotifyPropChange
	CallBack   string `json:"call_back"`        // where NOTIFYs go
	Watcher    User   `json:"watcher,omitzero"` // local user a logical Call-Back names
	Subscriber string `json:"subscriber,omitempty"`
	// SubscriberUser is the local user who subscribed, if any.
	SubscriberUser User      `json:"subscriber_user,omitzero"`
	NodeURL        string    `json:"node_url"` // the node's URL as the subscriber addressed it
	Lifetime       int       `json:"lifetime"`
	Expires        time.Time `json:"expires"`
	Source         string    `json:"source,omitempty"` // client address that created it
	// Credential is the kind of credential the subscriber proved (ACL
	// terms), against which its rights are judged at every notification.
	Credential string `json:"credential,omitempty"`
	// Known is the id the subscriber's client knows the subscription by
	// (renews and ends it with), when a handoff gave it another: the one
	// it had on the home server it was made on was taken here. 0: ID.
	Known int32 `json:"known_id,omitempty"`
	// Handoff names the handoff that brought it here from its former home
	// server (its former home server and move, HandoffOf), whose parts
	// come apart: its watcher was last told of its node what that home
	// server showed, not what this one did. "": made here.
	Handoff string `json:"handoff,omitempty"`
}

// HandoffOf names the handoff of u's state from home under the move of
// directory sequence move (SubscriptionCreated.Handoff).
func HandoffOf(home string, u User, move uint64) string {
	return home + "/" + u.String() + "/" + strconv.FormatUint(move, 10)
}

// SubscriptionRenewed records a renewed subscription.
type SubscriptionRenewed struct {
	Meta
	Node     User      `json:"node"`
	ID       int32     `json:"sub_id"`
	Lifetime int       `json:"lifetime"`
	Expires  time.Time `json:"expires"`
}

// Reasons a subscription or view ends.
const (
	EndUnsubscribed = "unsubscribed"
	EndExpired      = "expired"
	EndOffline      = "offline"     // a view set to its default
	EndLoggedOut    = "logged-out"  // a view ended with the last login subscription
	EndUnreachable  = "unreachable" // the callback did not answer several NOTIFYs in a row
	EndMoved        = "moved"       // the user moved to another home server, which holds it now
	EndDisabled     = "disabled"    // the user was disabled (rvpctl user disable): its logins and presence end
	EndReplaced     = "replaced"    // the node (or its subscriber) had the most it may: the one lapsing first made room
)

// SubscriptionEnded records the end of a subscription.
type SubscriptionEnded struct {
	Meta
	Node   User   `json:"node"`
	ID     int32  `json:"sub_id"`
	Reason string `json:"reason"`
	// Move, when set, marks the end of a subscription that was not here,
	// asked for while its node's state was awaited from its former home
	// server under that directory move (its handoff late): by By (the
	// requester's RVP-From-Principal) and ByUser (its local user). A
	// handoff that brings one they may end, known to its client by ID,
	// does not take it.
	Move   uint64 `json:"move,omitempty"`
	By     string `json:"by,omitempty"`
	ByUser User   `json:"by_user,omitzero"`
}

// ViewSet records the state one presentity (client) contributes to a
// principal's presence.
type ViewSet struct {
	Meta
	Node    User      `json:"node"`
	ID      int32     `json:"view_id"`
	Value   string    `json:"value"`
	Default string    `json:"default"`
	Timeout int       `json:"timeout"`
	Expires time.Time `json:"expires"`
	Source  string    `json:"source,omitempty"` // client address: the view-reuse key
	// Known is the id the presentity's client knows the view by (names in
	// its PROPPATCHes), when a handoff gave it another: the one it had on
	// the home server it was set on was taken here. 0: ID.
	Known int32 `json:"known_id,omitempty"`
	// Set is when the view's value was set, when before At: a view handed
	// over keeps the time it was set on its former home server (its place
	// among the principal's views). Zero: At.
	Set time.Time `json:"set,omitzero"`
}

// ViewEnded records the end of a view.
type ViewEnded struct {
	Meta
	Node   User   `json:"node"`
	ID     int32  `json:"view_id"`
	Reason string `json:"reason"`
}

// PropertySet records a property of a node set by its owner (the mobile
// properties; the others come from the directory).
type PropertySet struct {
	Meta
	Node  User      `json:"node"`
	Value PropValue `json:"value"`
}

// ACLSet records a node's new access control list.
type ACLSet struct {
	Meta
	Node User  `json:"node"`
	ACEs []ACE `json:"aces"`
}

// MessageAccepted records a NOTIFY accepted for delivery to a node's
// clients: the body is kept for audit.
type MessageAccepted struct {
	Meta
	Node      User   `json:"node"`
	AckType   string `json:"ack_type,omitempty"`
	HopCount  int    `json:"hop_count,omitempty"`
	Endpoints int    `json:"endpoints"`
	Body      []byte `json:"body,omitempty"`
	// Where bodies are not kept (-audit.bodies=false), the body's size
	// and SHA-256 instead: an auditor can still tell which text was sent
	// by comparing digests, and what size.
	BodySize   int    `json:"body_size,omitempty"`
	BodySHA256 string `json:"body_sha256,omitempty"`
}

// MessageDelivered records the outcome of delivering an accepted message:
// the status its sender was answered with and how many endpoints took it.
type MessageDelivered struct {
	Meta
	Node      User `json:"node"`
	Status    int  `json:"status"`
	Delivered int  `json:"delivered"`
	Failed    int  `json:"failed"`
}

// UserDeparted records that a user's state left this home server for the
// one it was moved to (its subscriptions and views end here with reason
// "moved"). Move is the directory sequence of the move.
type UserDeparted struct {
	Meta
	Node  User   `json:"node"`
	To    string `json:"to_home"`
	Move  uint64 `json:"move"`
	Subs  int    `json:"subs"`
	Views int    `json:"views"`
	// Clears says that the user's ACL and properties end here too: they
	// went with the handoff. (Departures of older versions left them, and
	// a home server the user came back to kept them over those handed
	// back.)
	Clears bool `json:"clears,omitempty"`
}

// RequestForwarded records that a request for a user who had moved to
// another home server (routed here by a gateway whose directory was
// behind the move) was passed on to that home server (To), under the
// move of directory sequence Move: it is decided there, or passed on
// again, and never here. Delivered here again (its acknowledgement lost)
// once the user has come back, it was decided a second time before this
// was recorded. History only: the home node reads it back (with the
// request id, from HeaderForward) after a restart or a takeover.
type RequestForwarded struct {
	Meta
	Node User   `json:"node"`
	To   string `json:"to_home"`
	Move uint64 `json:"move"`
}

// HomeFenced records that a node took the home server over: Holder, the
// node, under Term, the revision of its ownership lease. A takeover
// appends Parts of them at once (an atomic batch, parts 1 to Parts), so
// that no fact the previous owner may still have on its way can be stored
// after them: each of those expects the stream to end where its writer
// left it, at most its window past its last stored fact, and no window is
// longer than a fence (homenode's fence.go). History only; Node is the home server's own
// record (no user).
type HomeFenced struct {
	Meta
	Node   User   `json:"node"`
	Holder string `json:"holder"`
	Term   uint64 `json:"term"`
	Part   int    `json:"part"`
	Parts  int    `json:"parts"`
}

// Inner reports whether f is a part of its fence between its first and
// its last: an audit's table shows those two only.
func (f *HomeFenced) Inner() bool { return f.Part > 1 && f.Part < f.Parts }

// UserArrived records that a user's state handed over by its former home
// server was taken here (Subs and Views of it, the rest was here already
// or had expired). Move is the directory sequence of the move. With Part,
// it records a part of a handoff in parts taken (Handoff.Part), its
// subscriptions (Subs): the move is taken with the last part's.
type UserArrived struct {
	Meta
	Node  User   `json:"node"`
	From  string `json:"from_home"`
	Move  uint64 `json:"move"`
	Subs  int    `json:"subs"`
	Views int    `json:"views"`
	Part  int    `json:"part,omitempty"`
}

func (e *SubscriptionCreated) Subject() User { return e.Node }
func (e *UserDeparted) Subject() User        { return e.Node }
func (e *UserArrived) Subject() User         { return e.Node }
func (e *UserDeparted) Metadata() *Meta      { return &e.Meta }
func (e *UserArrived) Metadata() *Meta       { return &e.Meta }
func (e *SubscriptionRenewed) Subject() User { return e.Node }
func (e *SubscriptionEnded) Subject() User   { return e.Node }
func (e *ViewSet) Subject() User             { return e.Node }
func (e *ViewEnded) Subject() User           { return e.Node }
func (e *ACLSet) Subject() User              { return e.Node }
func (e *PropertySet) Subject() User         { return e.Node }
func (e *MessageAccepted) Subject() User     { return e.Node }
func (e *MessageDelivered) Subject() User    { return e.Node }
func (e *RequestForwarded) Subject() User    { return e.Node }
func (e *HomeFenced) Subject() User          { return e.Node }

func (e *SubscriptionCreated) Metadata() *Meta { return &e.Meta }
func (e *SubscriptionRenewed) Metadata() *Meta { return &e.Meta }
func (e *SubscriptionEnded) Metadata() *Meta   { return &e.Meta }
func (e *ViewSet) Metadata() *Meta             { return &e.Meta }
func (e *ViewEnded) Metadata() *Meta           { return &e.Meta }
func (e *ACLSet) Metadata() *Meta              { return &e.Meta }
func (e *PropertySet) Metadata() *Meta         { return &e.Meta }
func (e *MessageAccepted) Metadata() *Meta     { return &e.Meta }
func (e *MessageDelivered) Metadata() *Meta    { return &e.Meta }
func (e *RequestForwarded) Metadata() *Meta    { return &e.Meta }
func (e *HomeFenced) Metadata() *Meta          { return &e.Meta }

// ForwardHeader is the HeaderForward value of a request forwarded to
// home under the move of directory sequence move.
func ForwardHeader(home string, move uint64) string {
	return strconv.FormatUint(move, 10) + " " + home
}

// ParseForwardHeader reads a HeaderForward value; ok is false for one
// that is not.
func ParseForwardHeader(v string) (home string, move uint64, ok bool) {
	seq, home, found := strings.Cut(v, " ")
	if !found || home == "" {
		return "", 0, false
	}
	move, err := strconv.ParseUint(seq, 10, 64)
	return home, move, err == nil
}
