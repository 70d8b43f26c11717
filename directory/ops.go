package directory

import (
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Op names an administrative operation of the directory service. The
// names travel on the wire, sign the administrator's proof and appear in
// refusals ("may not user.enable in IM domain ...").
type Op string

// The operations. Each has one argument type (below) that the Client
// sends and the Service decodes; the JSON names are the wire's.
const (
	OpChallenge      Op = "challenge"        // Request.Admin; answers Challenge, Salt, Iter
	OpWhoami         Op = "whoami"           // → projections.Administrator
	OpDomainCreate   Op = "domain.create"    // DomainSpec
	OpDomainDelete   Op = "domain.delete"    // DomainRef
	OpDomainList     Op = "domain.list"      // → []projections.Domain
	OpDomainShow     Op = "domain.show"      // DomainRef → projections.Domain
	OpDomainHosts    Op = "domain.hosts"     // DomainHostsSpec → projections.Domain
	OpHomeCreate     Op = "home.create"      // HomeServerSpec
	OpHomeAllowUsers Op = "home.allow-users" // AllowUsersSpec
	OpHomeDelete     Op = "home.delete"      // NameRef
	OpHomeList       Op = "home.list"        // → []projections.HomeServer
	OpRouterCreate   Op = "router.create"    // RouterSpec
	OpRouterDelete   Op = "router.delete"    // NameRef
	OpRouterList     Op = "router.list"      // → []projections.Router
	OpUserEnable     Op = "user.enable"      // UserSpec
	OpUserDisable    Op = "user.disable"     // UserRef
	OpUserMove       Op = "user.move"        // UserMoveSpec
	OpUserList       Op = "user.list"        // UserListSpec → []projections.UserRecord
	OpUserShow       Op = "user.show"        // UserRef → UserSummary
	OpUserImport     Op = "user.import"      // ImportSpec → []ImportResult
	OpPasswordSet    Op = "password.set"     // PasswordSpec
	OpSettingsShow   Op = "settings.show"    // → projections.Settings
	OpFirewallSet    Op = "firewall.set"     // TopologySpec
	OpFederationSet  Op = "federation.set"   // FederationSpec
	OpAdminSet       Op = "admin.set"        // AdminSpec
	OpAdminRemove    Op = "admin.remove"     // NameRef
	OpAdminList      Op = "admin.list"       // → []projections.Administrator
)

// reads reports whether o only reads the directory: the service logs the
// others, its changes.
func (o Op) reads() bool {
	switch o {
	case OpWhoami, OpDomainList, OpDomainShow, OpHomeList, OpRouterList, OpUserList, OpUserShow, OpSettingsShow, OpAdminList:
		return true
	}
	return false
}

// DomainSpec describes an IM domain to create.
type DomainSpec struct {
	Domain       string   `json:"domain"`
	IMHost       string   `json:"im_host"`
	EmailDomains []string `json:"email_domains,omitempty"`
	Hosts        []string `json:"hosts,omitempty"`
	NTDomain     string   `json:"nt_domain,omitempty"`
}

// DomainRef names an IM domain.
type DomainRef struct {
	Domain string `json:"domain"`
}

// NameRef names a home server, a router or an administrator.
type NameRef struct {
	Name string `json:"name"`
}

// HomeServerSpec describes a home server to create.
type HomeServerSpec struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Site       string `json:"site"`
	HostsUsers bool   `json:"hosts_users"`
}

// AllowUsersSpec sets whether a home server may host user accounts.
type AllowUsersSpec struct {
	Name  string `json:"name"`
	Allow bool   `json:"allow"`
}

// RouterSpec describes a router to create; Mode is one of the
// events.Router modes ("" for auto).
type RouterSpec struct {
	Name   string `json:"name"`
	Domain string `json:"domain"`
	Host   string `json:"host"`
	Mode   string `json:"mode"`
}

// UserSpec describes a user to enable.
type UserSpec struct {
	User        events.User `json:"user"`
	Home        string      `json:"home"`
	DisplayName string      `json:"display_name,omitempty"`
	Email       string      `json:"email,omitempty"`
	NTAccount   string      `json:"nt_account,omitempty"`
}

// UserListSpec asks for the users of an IM domain ("" for every one the
// administrator may see), in the order of domain and alias: with Limit,
// at most Limit of them after After (a page; a directory of many
// thousand users is larger than one NATS message).
type UserListSpec struct {
	Domain string      `json:"domain"`
	After  events.User `json:"after,omitzero"`
	Limit  int         `json:"limit,omitempty"`
}

func (s UserListSpec) domain() string { return s.Domain }

// UserRef names a user.
type UserRef struct {
	User events.User `json:"user"`
}

// UserMoveSpec moves a user to another home server.
type UserMoveSpec struct {
	User events.User `json:"user"`
	Home string      `json:"home"`
}

// PasswordSpec gives a user's new password verifiers, computed where the
// password was typed.
type PasswordSpec struct {
	User      events.User    `json:"user"`
	Verifiers *rvp.Verifiers `json:"verifiers"`
}

// TopologySpec gives the address ranges (CIDR) inside the firewall.
type TopologySpec struct {
	Inside []string `json:"inside"`
}

// FederationSpec switches federation with other organisations.
type FederationSpec struct {
	InternetCapable bool `json:"internet_capable"`
}

// AdminSpec creates or changes an administrator: its role
// (events.RoleOrganization or events.RoleDomain), the IM domains a domain
// administrator administers, and its password verifier.
type AdminSpec struct {
	Name     string         `json:"name"`
	Role     string         `json:"role"`
	Domains  []string       `json:"domains"`
	Verifier *AdminVerifier `json:"admin_verifier"`
}

// UserSummary is a user as Exchange's task wizard showed it.
type UserSummary struct {
	projections.UserRecord
	Address     string `json:"address"`      // alias@domain
	LogicalURL  string `json:"logical_url"`  // public URL
	PhysicalURL string `json:"physical_url"` // on its home server
	Password    bool   `json:"password"`     // whether a password is set
}

// ImportUser is one user of an import: what EnableUser takes, and the
// verifiers of its password, computed where the password was read or
// generated (nil: no password).
type ImportUser struct {
	Spec      UserSpec       `json:"user"`
	Verifiers *rvp.Verifiers `json:"verifiers,omitempty"`
}

// MaxImport bounds the users of one import request (a NATS message
// holds about a thousand with their verifiers); rvpctl sends a file in
// requests of ImportBatch.
const (
	MaxImport   = 1000
	ImportBatch = 500
)

// ImportSpec enables many users at once. DryRun checks them and says
// what would become of each, changing nothing.
type ImportSpec struct {
	Users  []ImportUser `json:"users"`
	DryRun bool         `json:"dry_run,omitempty"`
}

// Import outcomes.
const (
	ImportCreated = "created" // enabled (and its password set, unless Error says it was not), or would be in a dry run
	ImportExists  = "exists"  // an enabled user already: left as it is, password included
	ImportRefused = "refused" // not enabled: Error says why
)

// ImportResult is what became of one user of an import, in the order
// they were given.
type ImportResult struct {
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Differs lists what the directory holds otherwise for a user that
	// exists ("home server home2"), which the import left as it is.
	Differs []string `json:"differs,omitempty"`
}
