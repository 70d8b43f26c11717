package events

import "time"

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
	Client  string    `json:"client,omitempty"`     // client IP address
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
