package events

import "time"

// Identity is who a gateway authenticated. Scheme is "" for an
// unauthenticated request, "none" when authentication is switched off (the
// identity is then asserted by RVP-From-Principal), otherwise "ntlm",
// "digest" or "basic".
type Identity struct {
	Scheme string `json:"scheme,omitempty"`
	User   User   `json:"user,omitzero"`
}

// String returns "scheme:alias@domain", or "" when unauthenticated.
func (id Identity) String() string {
	if id.Scheme == "" {
		return ""
	}
	return id.Scheme + ":" + id.User.String()
}

// Req is the part every request event shares: who asked what of which node,
// from where, and until when an answer is useful.
type Req struct {
	ID       string    `json:"id"`
	At       time.Time `json:"at"`       // when the gateway took the request
	Deadline time.Time `json:"deadline"` // after this the gateway no longer waits
	Gateway  string    `json:"gateway"`
	Client   string    `json:"client"` // client IP address
	Node     User      `json:"node"`
	NodeURL  string    `json:"node_url"`           // the node's URL as the requester addressed it
	From     string    `json:"from,omitempty"`     // RVP-From-Principal, normalised
	FromUser User      `json:"from_user,omitzero"` // the local user From names, if any
	Auth     Identity  `json:"auth,omitzero"`
	// DirPos is the position of the directory the request was routed
	// with: the home node reads the directory at least there.
	DirPos uint64 `json:"dir_pos,omitempty"`
}

// Meta returns the audit record for a fact decided for r at time at by home.
func (r *Req) Meta(at time.Time, home string) Meta {
	actor := r.From
	if actor == "" && !r.Auth.User.IsZero() {
		actor = r.Auth.User.String()
	}
	return Meta{At: at, Request: r.ID, Actor: actor, Auth: r.Auth.String(), Client: r.Client, Gateway: r.Gateway, Home: home}
}

// Request is implemented by the request events.
type Request interface {
	Event
	Request() *Req
}

// Subscribe asks for a new subscription on a node.
type Subscribe struct {
	Req
	NotificationType string `json:"notification_type"`
	CallBack         string `json:"call_back"`
	// CallBackUser is the local user a logical Call-Back names; zero for a
	// client's own listener or a principal of another organisation.
	CallBackUser User `json:"call_back_user,omitzero"`
	Lifetime     int  `json:"lifetime,omitempty"` // requested seconds; 0 = not given
}

// Renew asks to extend subscription ID on a node.
type Renew struct {
	Req
	ID       int32 `json:"sub_id"`
	Lifetime int   `json:"lifetime,omitempty"`
}

// Unsubscribe asks to end subscription ID on a node.
type Unsubscribe struct {
	Req
	ID int32 `json:"sub_id"`
}

// ListSubscriptions asks for the subscriptions on a node (SUBSCRIPTIONS).
type ListSubscriptions struct {
	Req
	NotificationType string `json:"notification_type,omitempty"`
}

// PropFind asks for properties of a node.
type PropFind struct {
	Req
	All   bool   `json:"all,omitempty"`   // d:allprop
	Names bool   `json:"names,omitempty"` // d:propname
	Props []Prop `json:"props,omitempty"`
}

// StateUpdate is the r:state of a PROPPATCH.
type StateUpdate struct {
	Value   string `json:"value"`
	Default string `json:"default,omitempty"`
	Timeout int    `json:"timeout,omitempty"` // requested lease seconds; 0 = not leased
	ViewID  int32  `json:"view_id,omitempty"`
}

// PropPatch asks to set properties of a node.
type PropPatch struct {
	Req
	State *StateUpdate `json:"state,omitempty"`
	// Set are the other properties the update sets, with their text.
	Set []PropValue `json:"set,omitempty"`
}

// Notify carries a NOTIFY to a node: an instant message, a typing
// indicator, or another notification, forwarded byte for byte.
type Notify struct {
	Req
	AckType  string `json:"ack_type,omitempty"`
	HopCount int    `json:"hop_count,omitempty"`
	Body     []byte `json:"body"`
}

// ACL reads (Write false) or replaces a node's access control list.
type ACL struct {
	Req
	Write bool  `json:"write,omitempty"`
	ACEs  []ACE `json:"aces,omitempty"`
}

// Credential returns the kind of credential the requester proved, in ACL
// terms: "assertion" when unauthenticated; "any" when authentication is
// switched off (everything matches).
func (r *Req) Credential() string {
	switch r.Auth.Scheme {
	case "":
		return CredAssertion
	case "none":
		return CredAny
	case "basic":
		return CredDigest // a password over HTTP, as Digest
	}
	return r.Auth.Scheme
}

// Relay hands a notification to a node's home server for its clients: a
// presence change for a watcher homed on another home server of the same
// organisation. It is sent by a home node, not by a client, decides
// nothing and records nothing; the watched node's home server judged the
// watcher's rights already.
type Relay struct {
	Req
	Body []byte `json:"body"`
}

// Handoff carries a user's state from the home server it left to the one
// it was moved to (rvpctl user move): the subscriptions on its node, its
// presence views, its ACL and properties. The receiving home node records
// them as its own facts; the sending one ends them with reason "moved".
//
// A state larger than a message may be (a user watched by thousands) goes
// in parts, in order: each but the last carries subscriptions only and
// More, its number (Part) and an id of its own; the last has the
// handoff's id, the rest of the state, and takes the move (UserArrived).
// Parts held back and redelivered may come in any order.
type Handoff struct {
	Req
	From  string      `json:"from_home"`
	Move  uint64      `json:"move"` // the directory sequence of the move`
	Subs  []SubState  `json:"subs,omitempty"`
	Views []ViewState `json:"views,omitempty"`
	ACL   []ACE       `json:"acl,omitempty"`
	Props []PropValue `json:"props,omitempty"`
	// More says that more parts of the handoff follow this one.
	More bool `json:"more,omitempty"`
	// Part numbers a part that More marks, from 1 (0 from a version
	// before parts were numbered): each is taken once, before or after
	// the last (UserArrived.Part).
	Part int `json:"part,omitempty"`
}

// SubState is a subscription in a handoff.
type SubState struct {
	ID             int32     `json:"id"`
	Kind           string    `json:"kind"`
	CallBack       string    `json:"call_back"`
	Watcher        User      `json:"watcher,omitzero"`
	Subscriber     string    `json:"subscriber,omitempty"`
	SubscriberUser User      `json:"subscriber_user,omitzero"`
	NodeURL        string    `json:"node_url"`
	Lifetime       int       `json:"lifetime"`
	Expires        time.Time `json:"expires"`
	Source         string    `json:"source,omitempty"`
	Credential     string    `json:"credential,omitempty"`
	// Known is the id the subscriber's client knows it by, when it
	// differs from ID (SubscriptionCreated.Known).
	Known int32 `json:"known_id,omitempty"`
}

// ViewState is a presence view in a handoff.
type ViewState struct {
	ID      int32     `json:"id"`
	Value   string    `json:"value"`
	Default string    `json:"default"`
	Timeout int       `json:"timeout"`
	Expires time.Time `json:"expires"`
	Source  string    `json:"source,omitempty"`
	// Known is the id the presentity's client knows it by, when it
	// differs from ID (ViewSet.Known).
	Known int32 `json:"known_id,omitempty"`
	// Set is when its value was set (ViewSet.Set); zero from a home
	// server of an older version.
	Set time.Time `json:"set,omitzero"`
}

func (e *Handoff) Request() *Req           { return &e.Req }
func (e *Relay) Request() *Req             { return &e.Req }
func (e *ACL) Request() *Req               { return &e.Req }
func (e *Subscribe) Request() *Req         { return &e.Req }
func (e *Renew) Request() *Req             { return &e.Req }
func (e *Unsubscribe) Request() *Req       { return &e.Req }
func (e *ListSubscriptions) Request() *Req { return &e.Req }
func (e *PropFind) Request() *Req          { return &e.Req }
func (e *PropPatch) Request() *Req         { return &e.Req }
func (e *Notify) Request() *Req            { return &e.Req }

// Lookup asks a router what to do with a request a gateway does not serve
// itself: a node of another organisation (forwarded to it), or a client
// the firewall topology says to redirect (302 to the home server). It
// carries the request as received, so a router can forward it.
type Lookup struct {
	ID       string    `json:"id"`
	At       time.Time `json:"at"`
	Deadline time.Time `json:"deadline"`
	Gateway  string    `json:"gateway"`
	Client   string    `json:"client"`
	Method   string    `json:"method"`
	Host     string    `json:"host"` // host the node was addressed by
	Alias    string    `json:"alias"`
	Path     string    `json:"path"`
	// Header holds the RVP headers of the request, by their Exchange
	// spelling; HopCount is its RVP-Hop-Count (1 when absent).
	Header   map[string]string `json:"header,omitempty"`
	HopCount int               `json:"hop_count,omitempty"`
	Body     []byte            `json:"body,omitempty"`
	Auth     Identity          `json:"auth,omitzero"`
}

// Reply is a home node's or router's answer to a request, rendered into an
// RVP response by the gateway that took the request.
type Reply struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"` // what went wrong and what to do, for error statuses
	// RetryAfter, in seconds, says when a request refused for want of room
	// (503) may succeed: the Retry-After header.
	RetryAfter int `json:"retry_after,omitempty"`

	SubscriptionID int32  `json:"sub_id,omitempty"`
	Lifetime       int    `json:"lifetime,omitempty"`
	Location       string `json:"location,omitempty"` // 302 target

	// Href, Found, Missing and Forbidden make up a 207 multistatus.
	Href      string      `json:"href,omitempty"`
	Found     []PropValue `json:"found,omitempty"`
	Missing   []Prop      `json:"missing,omitempty"`
	Forbidden []Prop      `json:"forbidden,omitempty"`
	Lease     *Lease      `json:"lease,omitempty"` // PROPPATCH of r:state

	Subscriptions []SubscriptionInfo `json:"subscriptions,omitempty"`
	Listed        bool               `json:"listed,omitempty"` // a SUBSCRIPTIONS answer, even when empty

	// ACL is a node's access control list, for an ACL answer.
	ACL    []ACE `json:"acl,omitempty"`
	HasACL bool  `json:"has_acl,omitempty"`
	// Kept is the bytes the decision's facts keep of what was not in
	// the request's body (an ACL write's acl.set holds the whole ACL,
	// however few entries the body changed), for the gateway to charge
	// to the sender's bytes a day beyond the body it charged before.
	Kept int `json:"kept,omitempty"`

	// Raw is another server's answer, relayed as it came: a request
	// forwarded to another organisation.
	Raw *RawAnswer `json:"raw,omitempty"`
}

// RawAnswer is an answer relayed unchanged.
type RawAnswer struct {
	Status int               `json:"status"`
	Header map[string]string `json:"header,omitempty"` // RVP headers, by their Exchange spelling
	Body   []byte            `json:"body,omitempty"`
}

// PropValue is a property and its text value; for r:state the value is the
// state name.
type PropValue struct {
	Prop
	Value string `json:"value"`
}

// Lease is the granted r:state lease echoed by a PROPPATCH answer.
type Lease struct {
	Value   string `json:"value"`
	Default string `json:"default"`
	Timeout int    `json:"timeout"`
	ViewID  int32  `json:"view_id"`
}

// SubscriptionInfo is one entry of a SUBSCRIPTIONS answer.
type SubscriptionInfo struct {
	ID        int32  `json:"id"`
	Href      string `json:"href"`      // the Call-Back
	Principal string `json:"principal"` // the subscriber
	Timeout   int    `json:"timeout"`   // seconds left
}
