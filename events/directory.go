package events

// DirectoryEvent is implemented by the directory events.
type DirectoryEvent interface {
	Event
	// DirSubject returns the subject of the directory aggregate it belongs to.
	DirSubject() string
	Metadata() *Meta
}

// DomainCreated records a new IM domain: its IM host (the SRV target, as
// im.example.com), the e-mail domains that map to it, and extra host names
// requests may name it by.
type DomainCreated struct {
	Meta
	Domain       string   `json:"domain"`
	IMHost       string   `json:"im_host"`
	EmailDomains []string `json:"email_domains,omitempty"`
	Hosts        []string `json:"hosts,omitempty"`
	// NTDomain is the Windows (NetBIOS) domain name clients give for NTLM
	// and Digest user names, as EXAMPLE in EXAMPLE\alice.
	NTDomain string `json:"nt_domain,omitempty"`
}

// DomainHostsSet records an IM domain's new host names: its full lists
// of e-mail domains and of the extra host names requests may name it by,
// which replace those it had. Its name and IM host always reach it and
// are in neither list's keeping.
type DomainHostsSet struct {
	Meta
	Domain       string   `json:"domain"`
	EmailDomains []string `json:"email_domains,omitempty"`
	Hosts        []string `json:"hosts,omitempty"`
}

// DomainDeleted records the removal of an IM domain.
type DomainDeleted struct {
	Meta
	Domain string `json:"domain"`
}

// HomeServerCreated records a home server: the unit users are assigned to.
type HomeServerCreated struct {
	Meta
	Name       string `json:"name"`
	Host       string `json:"host"` // physical host name in its URLs
	Site       string `json:"site,omitempty"`
	HostsUsers bool   `json:"hosts_users"`
}

// HomeServerChanged records whether a home server may host user accounts
// (Exchange's "allow this server to host user accounts").
type HomeServerChanged struct {
	Meta
	Name       string `json:"name"`
	HostsUsers bool   `json:"hosts_users"`
}

// HomeServerDeleted records the removal of a home server.
type HomeServerDeleted struct {
	Meta
	Name string `json:"name"`
}

// Router modes: what a router does with clients.
const (
	RouterAuto     = "auto"     // redirect clients inside the firewall topology, proxy the others (Exchange)
	RouterRedirect = "redirect" // redirect every client to its home server (302)
	RouterProxy    = "proxy"    // proxy every request to the home server
)

// RouterCreated records a router: the public face of an IM domain.
type RouterCreated struct {
	Meta
	Name   string `json:"name"`
	Domain string `json:"domain"`
	Host   string `json:"host"`
	Mode   string `json:"mode,omitempty"` // default RouterAuto
}

// RouterDeleted records the removal of a router.
type RouterDeleted struct {
	Meta
	Name string `json:"name"`
}

// UserEnabled records a user enabled for instant messaging on a home server.
type UserEnabled struct {
	Meta
	User        User   `json:"user"`
	Home        string `json:"home"`
	DisplayName string `json:"display_name,omitempty"`
	Email       string `json:"email,omitempty"`
	// NTAccount is the Windows account name, when it differs from the alias.
	NTAccount string `json:"nt_account,omitempty"`
}

// UserMoved records a user's move to another home server.
type UserMoved struct {
	Meta
	User User   `json:"user"`
	From string `json:"from"`
	Home string `json:"home"`
}

// PasswordSet records a user's new password verifiers. Verifiers is
// sealed with the cluster key (AES-GCM, the subject as additional data);
// the password itself is never in any event.
type PasswordSet struct {
	Meta
	User      User   `json:"user"`
	Verifiers []byte `json:"verifiers"`
}

// Administrator roles.
const (
	RoleOrganization = "organization" // global settings, servers, routers, every domain
	RoleDomain       = "domain"       // the users of its domains only
)

// AdminSet records an administrator, its role, and its sealed verifier.
type AdminSet struct {
	Meta
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Domains   []string `json:"domains,omitempty"` // for RoleDomain
	Verifiers []byte   `json:"verifiers"`
}

// AdminRemoved records the removal of an administrator.
type AdminRemoved struct {
	Meta
	Name string `json:"name"`
}

// TopologySet records the firewall topology: the address ranges (CIDR)
// inside the firewall, whose clients routers redirect; clients outside are
// proxied.
type TopologySet struct {
	Meta
	Inside []string `json:"inside"`
}

// FederationSet records whether the organisation is Internet-capable:
// whether it exchanges presence and messages with other organisations.
type FederationSet struct {
	Meta
	InternetCapable bool `json:"internet_capable"`
}

// ClusterCreated records that a cluster was initialised (rvpd init): its
// first event, written once, with what every node must agree on.
// KeyCheck identifies the cluster key without revealing it (a MAC of a
// fixed text under it), so that a node given another key refuses to
// start instead of failing every sign-in; Replicas is the replica count
// of the cluster's streams, for the streams created later (a new home
// server's facts).
type ClusterCreated struct {
	Meta
	KeyCheck string `json:"key_check"`
	Replicas int    `json:"replicas"`
}

// ClusterSubject is the subject of ClusterCreated.
func ClusterSubject() string { return SettingSubject("cluster") }

// UserDisabled records a user no longer enabled for instant messaging.
type UserDisabled struct {
	Meta
	User User `json:"user"`
}

func (e *DomainCreated) DirSubject() string     { return DomainSubject(e.Domain) }
func (e *DomainHostsSet) DirSubject() string    { return DomainSubject(e.Domain) }
func (e *DomainDeleted) DirSubject() string     { return DomainSubject(e.Domain) }
func (e *HomeServerCreated) DirSubject() string { return HomeServerSubject(e.Name) }
func (e *HomeServerChanged) DirSubject() string { return HomeServerSubject(e.Name) }
func (e *HomeServerDeleted) DirSubject() string { return HomeServerSubject(e.Name) }
func (e *RouterCreated) DirSubject() string     { return RouterSubject(e.Name) }
func (e *RouterDeleted) DirSubject() string     { return RouterSubject(e.Name) }
func (e *UserEnabled) DirSubject() string       { return UserSubject(e.User) }
func (e *UserDisabled) DirSubject() string      { return UserSubject(e.User) }
func (e *UserMoved) DirSubject() string         { return UserSubject(e.User) }
func (e *PasswordSet) DirSubject() string       { return UserSubject(e.User) }
func (e *AdminSet) DirSubject() string          { return AdminSubject(e.Name) }
func (e *AdminRemoved) DirSubject() string      { return AdminSubject(e.Name) }
func (e *TopologySet) DirSubject() string       { return SettingSubject("topology") }
func (e *FederationSet) DirSubject() string     { return SettingSubject("federation") }
func (e *ClusterCreated) DirSubject() string    { return ClusterSubject() }

func (e *DomainCreated) Metadata() *Meta     { return &e.Meta }
func (e *DomainHostsSet) Metadata() *Meta    { return &e.Meta }
func (e *DomainDeleted) Metadata() *Meta     { return &e.Meta }
func (e *HomeServerCreated) Metadata() *Meta { return &e.Meta }
func (e *HomeServerChanged) Metadata() *Meta { return &e.Meta }
func (e *HomeServerDeleted) Metadata() *Meta { return &e.Meta }
func (e *RouterCreated) Metadata() *Meta     { return &e.Meta }
func (e *RouterDeleted) Metadata() *Meta     { return &e.Meta }
func (e *UserEnabled) Metadata() *Meta       { return &e.Meta }
func (e *UserDisabled) Metadata() *Meta      { return &e.Meta }
func (e *UserMoved) Metadata() *Meta         { return &e.Meta }
func (e *PasswordSet) Metadata() *Meta       { return &e.Meta }
func (e *AdminSet) Metadata() *Meta          { return &e.Meta }
func (e *AdminRemoved) Metadata() *Meta      { return &e.Meta }
func (e *TopologySet) Metadata() *Meta       { return &e.Meta }
func (e *FederationSet) Metadata() *Meta     { return &e.Meta }
func (e *ClusterCreated) Metadata() *Meta    { return &e.Meta }
