package events

import (
	"strings"
	"time"
)

// Event is implemented by every event type of this package, and only by
// them: the unexported method seals the set, so a type switch over Event
// can be exhaustive.
type Event interface {
	// Type returns the versioned type name carried in the Rvp-Type header.
	Type() string
	isEvent()
}

// Meta records who did what, when and from where. Every fact and directory
// event carries one; the time is decided once, when the event is decided,
// and never read again from a clock.
type Meta struct {
	At      time.Time `json:"at"`
	Request string    `json:"req,omitempty"`        // id of the request that caused it
	Actor   string    `json:"actor,omitempty"`      // RVP-From-Principal, administrator, or "system"
	Auth    string    `json:"auth,omitempty"`       // authenticated identity, "scheme:user@domain"
	Client  string    `json:"client,omitempty"`     // client IP address; an administrator's change: directory.Where
	Gateway string    `json:"gateway,omitempty"`    // id of the gateway that took the request
	Home    string    `json:"decided_by,omitempty"` // home node that decided it
}

// Prop names an XML property: namespace URI and local name.
type Prop struct {
	Space string `json:"ns"`
	Local string `json:"local"`
}

// Namespaces of RVP documents.
const (
	NSDAV = "DAV:"
	NSRVP = "http://schemas.microsoft.com/rvp/"
	NSACL = "http://schemas.microsoft.com/rvp/acl/"
)

// The properties of a principal node.
var (
	PropState             = Prop{NSRVP, "state"}
	PropDisplayName       = Prop{NSDAV, "displayname"}
	PropEmail             = Prop{NSRVP, "email"}
	PropMobileState       = Prop{NSRVP, "mobile-state"}
	PropMobileDescription = Prop{NSRVP, "mobile-description"}
)

// PrincipalProps lists the properties of a principal node in the order
// Exchange reports them.
func PrincipalProps() []Prop {
	return []Prop{PropState, PropDisplayName, PropEmail, PropMobileState, PropMobileDescription}
}

// Notification types of subscriptions.
const (
	NotifyPragma     = "pragma/notify"     // notifications sent to the node: the login subscription
	NotifyPropChange = "update/propchange" // changes of the node's properties: buddy presence
)

// States a principal can be in. The wire form is the empty element r:<state>.
const (
	StateOnline    = "online"
	StateOffline   = "offline"
	StateBusy      = "busy"
	StateAway      = "away"
	StateBackSoon  = "back-soon"
	StateOnPhone   = "on-phone"
	StateAtLunch   = "at-lunch"
	StateIdle      = "idle"
	StateInvisible = "invisible"
)

// ACE is one entry of a node's access control list.
type ACE struct {
	// Principal is a principal URL or server name; "" stands for
	// a:allprincipals.
	Principal string `json:"principal,omitempty"`
	// User is the local user Principal names, if any: a principal is
	// matched by user, whatever host its URL was written with.
	User        User     `json:"user,omitzero"`
	Credentials []string `json:"credentials"` // "assertion", "digest", "ntlm", "internal", "any"
	Grant       []string `json:"grant,omitempty"`
	Deny        []string `json:"deny,omitempty"`
}

// Rights of an ACL.
const (
	RightRead            = "read"
	RightWrite           = "write"
	RightReadACL         = "readacl"
	RightWriteACL        = "writeacl"
	RightAll             = "all"
	RightList            = "list"
	RightSendTo          = "send-to"
	RightReceiveFrom     = "receive-from"
	RightPresence        = "presence"
	RightSubscriptions   = "subscriptions"
	RightSubscribeOthers = "subscribe-others"
)

// Rights lists every right an ACL may grant or deny, "all" aside.
func Rights() []string {
	return []string{RightList, RightRead, RightWrite, RightSendTo, RightReceiveFrom, RightReadACL, RightWriteACL,
		RightPresence, RightSubscriptions, RightSubscribeOthers}
}

// Credential kinds an ACE may accept.
const (
	CredAssertion = "assertion" // no proof of identity: requests from other organisations
	CredDigest    = "digest"
	CredNTLM      = "ntlm"
	CredInternal  = "internal"
	CredAny       = "any"
)

// DefaultACL is the ACL Exchange gives a principal's node: every principal,
// on any usual credentials, may list, read, send to and see the presence of
// the node; its owner has every right. The owner's entry names owner by
// user as well as by URL, so that it is matched (and updated by an ACL
// write) whatever host the URL is written with.
func DefaultACL(owner User, ownerURL string) []ACE {
	creds := []string{"assertion", "digest", "ntlm"}
	return []ACE{
		{Credentials: creds, Grant: []string{"list", "read", "send-to", "presence"}},
		{Principal: ownerURL, User: owner, Credentials: creds, Grant: Rights()},
	}
}

// AllPrincipals reports whether a is the entry for a:allprincipals.
func (a ACE) AllPrincipals() bool { return a.Principal == "" && a.User.IsZero() }

// SamePrincipal reports whether a and b are entries for the same
// principal: both a:allprincipals, the same local user (whatever host its
// URLs were written with), or else the same URL or server name.
func (a ACE) SamePrincipal(b ACE) bool {
	switch {
	case a.AllPrincipals() || b.AllPrincipals():
		return a.AllPrincipals() == b.AllPrincipals()
	case !a.User.IsZero() && !b.User.IsZero():
		return a.User == b.User
	}
	return a.Principal != "" && strings.EqualFold(a.Principal, b.Principal)
}
