package events

import "fmt"

// Describe says in a few words what an event records, for the audit's
// readers (rvpctl audit, the operator console): the detail beside its
// type, node and actor. It never shows a secret: sealed verifiers and
// message bodies are left out.
func Describe(ev Event) string {
	switch x := ev.(type) {
	case *SubscriptionCreated:
		return fmt.Sprintf("#%d %s → %s for %ds", x.ID, x.Kind, x.CallBack, x.Lifetime)
	case *SubscriptionRenewed:
		return fmt.Sprintf("#%d for %ds", x.ID, x.Lifetime)
	case *SubscriptionEnded:
		return fmt.Sprintf("#%d %s", x.ID, x.Reason)
	case *ViewSet:
		return fmt.Sprintf("view %d %s (lease %ds)", x.ID, x.Value, x.Timeout)
	case *ViewEnded:
		return fmt.Sprintf("view %d %s", x.ID, x.Reason)
	case *MessageAccepted:
		if x.BodySHA256 != "" {
			return fmt.Sprintf("%d bytes (not kept; sha256 %s) to %d clients", x.BodySize, x.BodySHA256, x.Endpoints)
		}
		return fmt.Sprintf("%d bytes to %d clients", len(x.Body), x.Endpoints)
	case *MessageDelivered:
		return fmt.Sprintf("status %d, %d delivered, %d failed", x.Status, x.Delivered, x.Failed)
	case *DomainCreated:
		return x.Domain + " (IM host " + x.IMHost + ")"
	case *HomeServerCreated:
		return x.Name + " at " + x.Host
	case *UserEnabled:
		return x.User.String() + " on " + x.Home
	case *UserDisabled:
		return x.User.String()
	case *UserMoved:
		return x.User.String() + " from " + x.From + " to " + x.Home
	case *UserDeparted:
		return fmt.Sprintf("to %s: %d subscriptions, %d views (move %d)", x.To, x.Subs, x.Views, x.Move)
	case *UserArrived:
		return fmt.Sprintf("from %s: %d subscriptions, %d views (move %d)", x.From, x.Subs, x.Views, x.Move)
	case *ACLSet:
		return fmt.Sprintf("%d ACEs", len(x.ACEs))
	case *PropertySet:
		return x.Value.Local + " = " + x.Value.Value
	case *RouterCreated:
		return x.Name + " for " + x.Domain + " at " + x.Host + " (" + x.Mode + ")"
	case *PasswordSet:
		return x.User.String() + " (verifiers sealed)"
	case *AdminSet:
		return x.Name + " (" + x.Role + ")"
	}
	return ""
}
