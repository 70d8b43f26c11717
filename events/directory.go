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
}

// HomeServerCreated records a home server: the unit users are assigned to.
type HomeServerCreated struct {
	Meta
	Name       string `json:"name"`
	Host       string `json:"host"` // physical host name in its URLs
	Site       string `json:"site,omitempty"`
	HostsUsers bool   `json:"hosts_users"`
}

// UserEnabled records a user enabled for instant messaging on a home server.
type UserEnabled struct {
	Meta
	User        User   `json:"user"`
	Home        string `json:"home"`
	DisplayName string `json:"display_name,omitempty"`
	Email       string `json:"email,omitempty"`
}

// UserDisabled records a user no longer enabled for instant messaging.
type UserDisabled struct {
	Meta
	User User `json:"user"`
}

func (e *DomainCreated) DirSubject() string     { return DomainSubject(e.Domain) }
func (e *HomeServerCreated) DirSubject() string { return HomeServerSubject(e.Name) }
func (e *UserEnabled) DirSubject() string       { return UserSubject(e.User) }
func (e *UserDisabled) DirSubject() string      { return UserSubject(e.User) }

func (e *DomainCreated) Metadata() *Meta     { return &e.Meta }
func (e *HomeServerCreated) Metadata() *Meta { return &e.Meta }
func (e *UserEnabled) Metadata() *Meta       { return &e.Meta }
func (e *UserDisabled) Metadata() *Meta      { return &e.Meta }
