package events

import (
	"encoding/json"
	"fmt"
)

// Versioned type names. A name never changes meaning: a new schema gets a
// new name, and Decode keeps reading the old one.
const (
	TypeSubscribe         = "request.subscribe.v1"
	TypeRenew             = "request.renew.v1"
	TypeUnsubscribe       = "request.unsubscribe.v1"
	TypeListSubscriptions = "request.subscriptions.v1"
	TypePropFind          = "request.propfind.v1"
	TypePropPatch         = "request.proppatch.v1"
	TypeNotify            = "request.notify.v1"
	TypeACL               = "request.acl.v1"
	TypeRelay             = "request.relay.v1"
	TypeHandoff           = "request.handoff.v1"
	TypeLookup            = "lookup.v1"
	TypeReply             = "reply.v1"

	TypeSubscriptionCreated = "subscription.created.v1"
	TypeSubscriptionRenewed = "subscription.renewed.v1"
	TypeSubscriptionEnded   = "subscription.ended.v1"
	TypeViewSet             = "view.set.v1"
	TypeViewEnded           = "view.ended.v1"
	TypeACLSet              = "acl.set.v1"
	TypePropertySet         = "property.set.v1"
	TypeUserDeparted        = "user.departed.v1"
	TypeUserArrived         = "user.arrived.v1"
	TypeMessageAccepted     = "message.accepted.v1"
	TypeMessageDelivered    = "message.delivered.v1"
	TypeRequestForwarded    = "request.forwarded.v1"
	TypeHomeFenced          = "home.fenced.v1"

	TypeDomainCreated     = "domain.created.v1"
	TypeDomainDeleted     = "domain.deleted.v1"
	TypeDomainHostsSet    = "domain.hosts.v1"
	TypeHomeServerCreated = "home.created.v1"
	TypeHomeServerChanged = "home.changed.v1"
	TypeHomeServerDeleted = "home.deleted.v1"
	TypeRouterCreated     = "router.created.v1"
	TypeRouterDeleted     = "router.deleted.v1"
	TypeUserEnabled       = "user.enabled.v1"
	TypeUserDisabled      = "user.disabled.v1"
	TypeUserMoved         = "user.moved.v1"
	TypePasswordSet       = "user.password.v1"
	TypeAdminSet          = "admin.set.v1"
	TypeAdminRemoved      = "admin.removed.v1"
	TypeTopologySet       = "setting.topology.v1"
	TypeFederationSet     = "setting.federation.v1"
	TypeClusterCreated    = "setting.cluster.v1"
)

func (*Subscribe) Type() string         { return TypeSubscribe }
func (*Renew) Type() string             { return TypeRenew }
func (*Unsubscribe) Type() string       { return TypeUnsubscribe }
func (*ListSubscriptions) Type() string { return TypeListSubscriptions }
func (*PropFind) Type() string          { return TypePropFind }
func (*PropPatch) Type() string         { return TypePropPatch }
func (*Notify) Type() string            { return TypeNotify }
func (*ACL) Type() string               { return TypeACL }
func (*Relay) Type() string             { return TypeRelay }
func (*Handoff) Type() string           { return TypeHandoff }
func (*ACLSet) Type() string            { return TypeACLSet }
func (*PropertySet) Type() string       { return TypePropertySet }
func (*UserDeparted) Type() string      { return TypeUserDeparted }
func (*UserArrived) Type() string       { return TypeUserArrived }
func (*Lookup) Type() string            { return TypeLookup }
func (*Reply) Type() string             { return TypeReply }

func (*SubscriptionCreated) Type() string { return TypeSubscriptionCreated }
func (*SubscriptionRenewed) Type() string { return TypeSubscriptionRenewed }
func (*SubscriptionEnded) Type() string   { return TypeSubscriptionEnded }
func (*ViewSet) Type() string             { return TypeViewSet }
func (*ViewEnded) Type() string           { return TypeViewEnded }
func (*MessageAccepted) Type() string     { return TypeMessageAccepted }
func (*MessageDelivered) Type() string    { return TypeMessageDelivered }
func (*RequestForwarded) Type() string    { return TypeRequestForwarded }
func (*HomeFenced) Type() string          { return TypeHomeFenced }

func (*DomainCreated) Type() string     { return TypeDomainCreated }
func (*DomainDeleted) Type() string     { return TypeDomainDeleted }
func (*DomainHostsSet) Type() string    { return TypeDomainHostsSet }
func (*HomeServerCreated) Type() string { return TypeHomeServerCreated }
func (*HomeServerChanged) Type() string { return TypeHomeServerChanged }
func (*HomeServerDeleted) Type() string { return TypeHomeServerDeleted }
func (*RouterCreated) Type() string     { return TypeRouterCreated }
func (*RouterDeleted) Type() string     { return TypeRouterDeleted }
func (*UserEnabled) Type() string       { return TypeUserEnabled }
func (*UserDisabled) Type() string      { return TypeUserDisabled }
func (*UserMoved) Type() string         { return TypeUserMoved }
func (*PasswordSet) Type() string       { return TypePasswordSet }
func (*AdminSet) Type() string          { return TypeAdminSet }
func (*AdminRemoved) Type() string      { return TypeAdminRemoved }
func (*TopologySet) Type() string       { return TypeTopologySet }
func (*FederationSet) Type() string     { return TypeFederationSet }
func (*ClusterCreated) Type() string    { return TypeClusterCreated }

func (*Subscribe) isEvent()         {}
func (*Renew) isEvent()             {}
func (*Unsubscribe) isEvent()       {}
func (*ListSubscriptions) isEvent() {}
func (*PropFind) isEvent()          {}
func (*PropPatch) isEvent()         {}
func (*Notify) isEvent()            {}
func (*ACL) isEvent()               {}
func (*Relay) isEvent()             {}
func (*Handoff) isEvent()           {}
func (*ACLSet) isEvent()            {}
func (*PropertySet) isEvent()       {}
func (*UserDeparted) isEvent()      {}
func (*UserArrived) isEvent()       {}
func (*Lookup) isEvent()            {}
func (*Reply) isEvent()             {}

func (*SubscriptionCreated) isEvent() {}
func (*SubscriptionRenewed) isEvent() {}
func (*SubscriptionEnded) isEvent()   {}
func (*ViewSet) isEvent()             {}
func (*ViewEnded) isEvent()           {}
func (*MessageAccepted) isEvent()     {}
func (*MessageDelivered) isEvent()    {}
func (*RequestForwarded) isEvent()    {}
func (*HomeFenced) isEvent()          {}

func (*DomainCreated) isEvent()     {}
func (*DomainDeleted) isEvent()     {}
func (*DomainHostsSet) isEvent()    {}
func (*HomeServerCreated) isEvent() {}
func (*HomeServerChanged) isEvent() {}
func (*HomeServerDeleted) isEvent() {}
func (*RouterCreated) isEvent()     {}
func (*RouterDeleted) isEvent()     {}
func (*UserEnabled) isEvent()       {}
func (*UserDisabled) isEvent()      {}
func (*UserMoved) isEvent()         {}
func (*PasswordSet) isEvent()       {}
func (*AdminSet) isEvent()          {}
func (*AdminRemoved) isEvent()      {}
func (*TopologySet) isEvent()       {}
func (*FederationSet) isEvent()     {}
func (*ClusterCreated) isEvent()    {}

// Encode returns the body of e; its type name is e.Type().
func Encode(e Event) ([]byte, error) {
	if data, ok := fastEncode(e); ok {
		return data, nil
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", e.Type(), err)
	}
	return data, nil
}

// Decode returns the event of type typ encoded in data.
func Decode(typ string, data []byte) (Event, error) {
	if e, ok := fastDecode(typ, data); ok {
		return e, nil
	}
	return decodeJSON(typ, data)
}

// decodeJSON decodes with encoding/json: the rule fastDecode follows.
func decodeJSON(typ string, data []byte) (Event, error) {
	var e Event
	switch typ {
	case TypeSubscribe:
		e = new(Subscribe)
	case TypeRenew:
		e = new(Renew)
	case TypeUnsubscribe:
		e = new(Unsubscribe)
	case TypeListSubscriptions:
		e = new(ListSubscriptions)
	case TypePropFind:
		e = new(PropFind)
	case TypePropPatch:
		e = new(PropPatch)
	case TypeNotify:
		e = new(Notify)
	case TypeACL:
		e = new(ACL)
	case TypeRelay:
		e = new(Relay)
	case TypeHandoff:
		e = new(Handoff)
	case TypeACLSet:
		e = new(ACLSet)
	case TypePropertySet:
		e = new(PropertySet)
	case TypeUserDeparted:
		e = new(UserDeparted)
	case TypeUserArrived:
		e = new(UserArrived)
	case TypeRequestForwarded:
		e = new(RequestForwarded)
	case TypeHomeFenced:
		e = new(HomeFenced)
	case TypeLookup:
		e = new(Lookup)
	case TypeReply:
		e = new(Reply)
	case TypeSubscriptionCreated:
		e = new(SubscriptionCreated)
	case TypeSubscriptionRenewed:
		e = new(SubscriptionRenewed)
	case TypeSubscriptionEnded:
		e = new(SubscriptionEnded)
	case TypeViewSet:
		e = new(ViewSet)
	case TypeViewEnded:
		e = new(ViewEnded)
	case TypeMessageAccepted:
		e = new(MessageAccepted)
	case TypeMessageDelivered:
		e = new(MessageDelivered)
	case TypeDomainCreated:
		e = new(DomainCreated)
	case TypeHomeServerCreated:
		e = new(HomeServerCreated)
	case TypeUserEnabled:
		e = new(UserEnabled)
	case TypeUserDisabled:
		e = new(UserDisabled)
	case TypeDomainDeleted:
		e = new(DomainDeleted)
	case TypeDomainHostsSet:
		e = new(DomainHostsSet)
	case TypeHomeServerChanged:
		e = new(HomeServerChanged)
	case TypeHomeServerDeleted:
		e = new(HomeServerDeleted)
	case TypeRouterCreated:
		e = new(RouterCreated)
	case TypeRouterDeleted:
		e = new(RouterDeleted)
	case TypeUserMoved:
		e = new(UserMoved)
	case TypePasswordSet:
		e = new(PasswordSet)
	case TypeAdminSet:
		e = new(AdminSet)
	case TypeAdminRemoved:
		e = new(AdminRemoved)
	case TypeTopologySet:
		e = new(TopologySet)
	case TypeFederationSet:
		e = new(FederationSet)
	case TypeClusterCreated:
		e = new(ClusterCreated)
	default:
		return nil, fmt.Errorf("decode: unknown event type %q", typ)
	}
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("decode %s: %w", typ, err)
	}
	return e, nil
}
