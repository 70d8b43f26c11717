package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rvp-im/rvpd/events"
)

// Directory is the read model of the directory stream: IM domains and the
// host names that reach them, home servers, and users.
//
// Keys, under "d":
//
//	pos                        last applied stream sequence
//	format                     the record layout (directoryFormat)
//	dom <domain>               Domain (JSON)
//	host <host>                name of the domain the host names
//	home <name>                HomeServer (JSON)
//	homehost <host>            name of the home server with that host name
//	router <name>              Router (JSON)
//	user <domain> <alias>      UserRecord (JSON)
//	pw <domain> <alias>        sealed password verifiers
//	admin <name>               Administrator (JSON, verifier sealed)
//	set <name>                 organisation settings (JSON)
//
// Every read is served from memory: the projection keeps each record
// decoded beside Pebble (loaded when opened, updated with each applied
// batch), because the gateway places and authenticates every request
// with it and several Pebble reads and JSON decodes a request cost more
// than the rest of its placement.
type Directory struct {
	db     *DB
	prefix []byte
	pos    *position
	mem    dirMemory
}

// Domain is an IM domain.
type Domain struct {
	Domain       string   `json:"domain"`
	IMHost       string   `json:"im_host"`
	EmailDomains []string `json:"email_domains,omitempty"`
	Hosts        []string `json:"hosts,omitempty"`
	NTDomain     string   `json:"nt_domain,omitempty"`
}

// Router is a router of an IM domain.
type Router struct {
	Name   string `json:"name"`
	Domain string `json:"domain"`
	Host   string `json:"host"`
	Mode   string `json:"mode"`
}

// Administrator is an administrator and its role.
type Administrator struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Domains   []string `json:"domains,omitempty"`
	Verifiers []byte   `json:"verifiers"` // sealed AdminVerifier
}

// Settings are the organisation-wide settings.
type Settings struct {
	// Inside lists the address ranges (CIDR) inside the firewall.
	Inside []string `json:"inside,omitempty"`
	// InternetCapable allows federation with other organisations.
	InternetCapable bool `json:"internet_capable"`
}

// HomeServer is a home server.
type HomeServer struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Site       string `json:"site,omitempty"`
	HostsUsers bool   `json:"hosts_users"`
}

// UserRecord is a user as the directory knows it.
type UserRecord struct {
	User        events.User `json:"user"`
	Home        string      `json:"home"`
	DisplayName string      `json:"display_name,omitempty"`
	Email       string      `json:"email,omitempty"`
	NTAccount   string      `json:"nt_account,omitempty"`
	Enabled     bool        `json:"enabled"`
	// The user's last move: the home server it left, the directory
	// sequence of the move (its identity in handoffs) and its time.
	MovedFrom string    `json:"moved_from,omitempty"`
	Move      uint64    `json:"move,omitempty"`
	MovedAt   time.Time `json:"moved_at,omitzero"`
	// Enabling is the directory sequence of the user's enabling, which
	// writes the record afresh (no move in it): a move of a sequence
	// below it is of before.
	Enabling uint64 `json:"enabling,omitempty"`
	// Disabled is the time of the user's last disable (its
	// user.disabled's), kept when it is enabled again: logins and
	// presence older than it are of before the disable, which a home
	// server down then did not end (homenode/disable.go).
	Disabled time.Time `json:"disabled,omitzero"`
}

// OpenDirectory returns the directory projection in db.
func OpenDirectory(db *DB) (*Directory, error) {
	d := &Directory{db: db, prefix: prefixOf("d")}
	pos, err := getUint64(db.pdb, d.key("pos"))
	if err != nil {
		return nil, fmt.Errorf("open directory projection: %w", err)
	}
	d.pos = newPosition(pos)
	d.mem.kinds = map[string]map[string]any{}
	err = scan(db.pdb, d.prefix, func(k, v []byte) error {
		e, err := d.decodeEntry(k, v)
		if err == nil {
			d.mem.set(e)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open directory projection: %w", err)
	}
	return d, nil
}

// directoryFormat names the records' layout and the rules of applying
// events to them; a projection written under another is rebuilt from the
// stream (WhileFollowing). 2: a user record keeps its enabling's sequence
// and its last disable's time.
const directoryFormat = "2"

// Outdated reports whether the projection was written by a version with
// another directoryFormat: it must be rebuilt (Reset) before use.
func (d *Directory) Outdated() (bool, error) {
	if d.Position() == 0 {
		return false, nil
	}
	v, err := get(d.db.pdb, d.key("format"))
	return string(v) != directoryFormat, err
}

// Reset deletes the projection, so that following its stream from the
// start rebuilds it. Nothing may follow it meanwhile.
func (d *Directory) Reset() error {
	b := d.db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(d.prefix, upperBound(d.prefix), nil); err != nil {
		return fmt.Errorf("reset directory projection: %w", err)
	}
	if err := b.Set(d.key("format"), []byte(directoryFormat), nil); err != nil {
		return fmt.Errorf("reset directory projection: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("reset directory projection: %w", err)
	}
	d.mem.reset()
	d.pos.reset(0)
	return nil
}

func (d *Directory) key(parts ...string) []byte {
	return append(append([]byte(nil), d.prefix...), key(parts...)...)
}

// Prefix returns the key prefix of the projection.
func (d *Directory) Prefix() []byte { return d.prefix }

// Position returns the stream sequence of the last applied event.
func (d *Directory) Position() uint64 { return d.pos.get() }

// Changed returns a channel closed when the position next advances.
func (d *Directory) Changed() <-chan struct{} { return d.pos.changed() }

// WaitFor blocks until the projection has applied seq.
func (d *Directory) WaitFor(ctx context.Context, seq uint64) error { return d.pos.waitFor(ctx, seq) }

// ApplyBatch applies directory messages in one batch with the new position.
func (d *Directory) ApplyBatch(msgs []Msg) error {
	b := d.db.pdb.NewIndexedBatch()
	defer b.Close()
	pos := d.Position()
	for _, m := range msgs {
		if m.Seq <= pos {
			continue
		}
		ev, err := events.Decode(m.Type, m.Data)
		if err != nil {
			return fmt.Errorf("directory seq %d: %w", m.Seq, err)
		}
		if err := d.apply(b, ev, m.Seq); err != nil {
			return fmt.Errorf("directory seq %d (%s): %w", m.Seq, m.Type, err)
		}
		pos = m.Seq
	}
	if pos == d.Position() {
		return nil
	}
	if d.Position() == 0 {
		b.Set(d.key("format"), []byte(directoryFormat), nil)
	}
	b.Set(d.key("pos"), []byte(be64(pos)), nil)
	var changes []memEntry
	r := b.Reader()
	for {
		kind, k, v, ok, err := r.Next()
		if err != nil {
			return fmt.Errorf("directory batch: %w", err)
		}
		if !ok {
			break
		}
		if kind == pebble.InternalKeyKindDelete {
			v = nil
		}
		e, err := d.decodeEntry(k, v)
		if err != nil {
			return err
		}
		changes = append(changes, e)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit directory batch: %w", err)
	}
	d.mem.apply(changes)
	d.pos.set(pos)
	return nil
}

func putJSON(b *pebble.Batch, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Set(k, data, nil)
}

func (d *Directory) userKey(u events.User, kind string) []byte {
	return d.key(kind, events.Token(u.Domain), events.Token(u.Alias))
}

// update reads the JSON record at k into v, lets change modify it and
// writes it back; a missing record is left missing.
func update[T any](b *pebble.Batch, k []byte, change func(*T)) error {
	var v T
	if ok, err := getJSON(b, k, &v); err != nil || !ok {
		return err
	}
	change(&v)
	return putJSON(b, k, v)
}

func (d *Directory) apply(b *pebble.Batch, ev events.Event, seq uint64) error {
	switch e := ev.(type) {
	case *events.DomainCreated:
		dom := Domain{Domain: e.Domain, IMHost: e.IMHost, EmailDomains: e.EmailDomains, Hosts: e.Hosts, NTDomain: e.NTDomain}
		for _, h := range domainHosts(dom) {
			b.Set(d.key("host", events.Token(h)), []byte(e.Domain), nil)
		}
		return putJSON(b, d.key("dom", events.Token(e.Domain)), dom)
	case *events.DomainHostsSet:
		var dom Domain
		k := d.key("dom", events.Token(e.Domain))
		if ok, err := getJSON(b, k, &dom); err != nil || !ok {
			return err
		}
		was := domainHosts(dom)
		dom.EmailDomains, dom.Hosts = e.EmailDomains, e.Hosts
		now := domainHosts(dom)
		// Only the names it no longer has are deleted: one it keeps (the
		// domain's name, given as an e-mail domain too) still reaches it.
		for _, h := range was {
			if !slices.Contains(now, h) {
				b.Delete(d.key("host", events.Token(h)), nil)
			}
		}
		for _, h := range now {
			b.Set(d.key("host", events.Token(h)), []byte(e.Domain), nil)
		}
		return putJSON(b, k, dom)
	case *events.DomainDeleted:
		var dom Domain
		k := d.key("dom", events.Token(e.Domain))
		if ok, err := getJSON(b, k, &dom); err != nil || !ok {
			return err
		}
		for _, h := range domainHosts(dom) {
			b.Delete(d.key("host", events.Token(h)), nil)
		}
		return b.Delete(k, nil)
	case *events.HomeServerCreated:
		b.Set(d.key("homehost", events.Token(strings.ToLower(e.Host))), []byte(e.Name), nil)
		return putJSON(b, d.key("home", events.Token(e.Name)), HomeServer{Name: e.Name, Host: e.Host, Site: e.Site, HostsUsers: e.HostsUsers})
	case *events.HomeServerChanged:
		return update(b, d.key("home", events.Token(e.Name)), func(h *HomeServer) { h.HostsUsers = e.HostsUsers })
	case *events.HomeServerDeleted:
		var h HomeServer
		k := d.key("home", events.Token(e.Name))
		if ok, err := getJSON(b, k, &h); err != nil || !ok {
			return err
		}
		b.Delete(d.key("homehost", events.Token(strings.ToLower(h.Host))), nil)
		return b.Delete(k, nil)
	case *events.RouterCreated:
		mode := e.Mode
		if mode == "" {
			mode = events.RouterAuto
		}
		return putJSON(b, d.key("router", events.Token(e.Name)), Router{Name: e.Name, Domain: e.Domain, Host: e.Host, Mode: mode})
	case *events.RouterDeleted:
		return b.Delete(d.key("router", events.Token(e.Name)), nil)
	case *events.UserEnabled:
		k := d.userKey(e.User, "user")
		var was UserRecord
		if _, err := getJSON(b, k, &was); err != nil {
			return err
		}
		return putJSON(b, k, UserRecord{User: e.User, Home: e.Home, DisplayName: e.DisplayName, Email: e.Email, NTAccount: e.NTAccount, Enabled: true,
			Enabling: seq, Disabled: was.Disabled})
	case *events.UserDisabled:
		return update(b, d.userKey(e.User, "user"), func(u *UserRecord) { u.Enabled, u.Disabled = false, e.At })
	case *events.UserMoved:
		return update(b, d.userKey(e.User, "user"), func(u *UserRecord) {
			u.Home, u.MovedFrom, u.Move, u.MovedAt = e.Home, e.From, seq, e.At
		})
	case *events.PasswordSet:
		return b.Set(d.userKey(e.User, "pw"), e.Verifiers, nil)
	case *events.AdminSet:
		return putJSON(b, d.key("admin", events.Token(e.Name)), Administrator{Name: e.Name, Role: e.Role, Domains: e.Domains, Verifiers: e.Verifiers})
	case *events.AdminRemoved:
		return b.Delete(d.key("admin", events.Token(e.Name)), nil)
	case *events.TopologySet:
		return d.updateSettings(b, func(s *Settings) { s.Inside = e.Inside })
	case *events.FederationSet:
		return d.updateSettings(b, func(s *Settings) { s.InternetCapable = e.InternetCapable })
	case *events.ClusterCreated:
		return nil // read from the stream by those who check it (directory.ReadCluster)
	default:
		return fmt.Errorf("no directory rule for %s", ev.Type())
	}
}

func (d *Directory) updateSettings(b *pebble.Batch, change func(*Settings)) error {
	var s Settings
	k := d.key("set", "org")
	if _, err := getJSON(b, k, &s); err != nil {
		return err
	}
	change(&s)
	return putJSON(b, k, s)
}

// domainHosts lists the host names that reach a domain.
func domainHosts(dom Domain) []string {
	var out []string
	for _, h := range append(append([]string{dom.Domain, dom.IMHost}, dom.EmailDomains...), dom.Hosts...) {
		out = append(out, strings.ToLower(h))
	}
	return out
}

func getJSON(r reader, k []byte, v any) (bool, error) {
	data, err := get(r, k)
	if err != nil || data == nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("decode %q: %w", k, err)
	}
	return true, nil
}

// DomainByHost returns the IM domain a host name (with or without port)
// reaches, or nil.
func (d *Directory) DomainByHost(host string) (*Domain, error) {
	host = strings.ToLower(host)
	name, ok := memGet[string](&d.mem, "host", host)
	if !ok {
		if h := events.Hostname(host); h != host {
			name, ok = memGet[string](&d.mem, "host", h)
		}
	}
	if !ok {
		return nil, nil
	}
	return d.Domain(name)
}

// Domain returns the named IM domain, or nil.
func (d *Directory) Domain(name string) (*Domain, error) {
	return memRecord[Domain](&d.mem, "dom", strings.ToLower(name)), nil
}

// Domains returns every IM domain, by name.
func (d *Directory) Domains() ([]Domain, error) { return memList[Domain](&d.mem, "dom", ""), nil }

// HomeServer returns the named home server, or nil.
func (d *Directory) HomeServer(name string) (*HomeServer, error) {
	return memRecord[HomeServer](&d.mem, "home", name), nil
}

// User returns the user's record, or nil when the directory never knew it.
func (d *Directory) User(u events.User) (*UserRecord, error) {
	return memRecord[UserRecord](&d.mem, "user", u.Domain, u.Alias), nil
}

// Password returns the user's sealed verifiers, nil when none were set.
func (d *Directory) Password(u events.User) ([]byte, error) {
	pw, _ := memGet[[]byte](&d.mem, "pw", u.Domain, u.Alias)
	return bytes.Clone(pw), nil
}

// Administrator returns the named administrator, or nil.
func (d *Directory) Administrator(name string) (*Administrator, error) {
	return memRecord[Administrator](&d.mem, "admin", name), nil
}

// Administrators returns every administrator, by name.
func (d *Directory) Administrators() ([]Administrator, error) {
	return memList[Administrator](&d.mem, "admin", ""), nil
}

// HomeServers returns every home server, by name.
func (d *Directory) HomeServers() ([]HomeServer, error) {
	return memList[HomeServer](&d.mem, "home", ""), nil
}

// EnabledUserOn returns an enabled user homed on home server home (the
// same one while it is), or nil when it hosts none, without reading the
// other users.
func (d *Directory) EnabledUserOn(home string) (*UserRecord, error) {
	return d.mem.homedUser(home), nil
}

// Router returns the named router, or nil.
func (d *Directory) Router(name string) (*Router, error) {
	return memRecord[Router](&d.mem, "router", name), nil
}

// HomeServerByHost returns the home server whose host name is host, or
// nil.
func (d *Directory) HomeServerByHost(host string) (*HomeServer, error) {
	name, ok := memGet[string](&d.mem, "homehost", strings.ToLower(host))
	if !ok {
		return nil, nil
	}
	return d.HomeServer(name)
}

// RoutersOf returns the routers of an IM domain.
func (d *Directory) RoutersOf(domain string) ([]Router, error) {
	all, err := d.Routers()
	var out []Router
	for _, r := range all {
		if strings.EqualFold(r.Domain, domain) {
			out = append(out, r)
		}
	}
	return out, err
}

// Routers returns every router, by name.
func (d *Directory) Routers() ([]Router, error) { return memList[Router](&d.mem, "router", ""), nil }

// Settings returns the organisation-wide settings.
func (d *Directory) Settings() (Settings, error) {
	s, _ := memGet[Settings](&d.mem, "set", "org")
	return s, nil
}

// Users returns the users of an IM domain, by alias.
func (d *Directory) Users(domain string) ([]UserRecord, error) {
	return memList[UserRecord](&d.mem, "user", events.Token(domain)+"\x00"), nil
}
