package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rvp-im/rvpd/events"
)

// Directory is the read model of the directory stream: IM domains and the
// host names that reach them, home servers, and users.
//
// Keys, under "d":
//
//	pos                        last applied stream sequence
//	dom <domain>               Domain (JSON)
//	host <host>                name of the domain the host names
//	home <name>                HomeServer (JSON)
//	user <domain> <alias>      UserRecord (JSON)
type Directory struct {
	db     *DB
	prefix []byte
	pos    *position
}

// Domain is an IM domain.
type Domain struct {
	Domain       string   `json:"domain"`
	IMHost       string   `json:"im_host"`
	EmailDomains []string `json:"email_domains,omitempty"`
	Hosts        []string `json:"hosts,omitempty"`
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
	Enabled     bool        `json:"enabled"`
}

// OpenDirectory returns the directory projection in db.
func OpenDirectory(db *DB) (*Directory, error) {
	d := &Directory{db: db, prefix: prefixOf("d")}
	pos, err := getUint64(db.pdb, d.key("pos"))
	if err != nil {
		return nil, fmt.Errorf("open directory projection: %w", err)
	}
	d.pos = newPosition(pos)
	return d, nil
}

func (d *Directory) key(parts ...string) []byte {
	return append(append([]byte(nil), d.prefix...), key(parts...)...)
}

// Prefix returns the key prefix of the projection.
func (d *Directory) Prefix() []byte { return d.prefix }

// Position returns the stream sequence of the last applied event.
func (d *Directory) Position() uint64 { return d.pos.get() }

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
		if err := d.apply(b, ev); err != nil {
			return fmt.Errorf("directory seq %d (%s): %w", m.Seq, m.Type, err)
		}
		pos = m.Seq
	}
	if pos == d.Position() {
		return nil
	}
	b.Set(d.key("pos"), []byte(be64(pos)), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit directory batch: %w", err)
	}
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

func (d *Directory) apply(b *pebble.Batch, ev events.Event) error {
	switch e := ev.(type) {
	case *events.DomainCreated:
		dom := Domain{Domain: e.Domain, IMHost: e.IMHost, EmailDomains: e.EmailDomains, Hosts: e.Hosts}
		for _, h := range append(append([]string{e.Domain, e.IMHost}, e.EmailDomains...), e.Hosts...) {
			b.Set(d.key("host", events.Token(strings.ToLower(h))), []byte(e.Domain), nil)
		}
		return putJSON(b, d.key("dom", events.Token(e.Domain)), dom)
	case *events.HomeServerCreated:
		return putJSON(b, d.key("home", events.Token(e.Name)), HomeServer{Name: e.Name, Host: e.Host, Site: e.Site, HostsUsers: e.HostsUsers})
	case *events.UserEnabled:
		return putJSON(b, d.key("user", events.Token(e.User.Domain), events.Token(e.User.Alias)),
			UserRecord{User: e.User, Home: e.Home, DisplayName: e.DisplayName, Email: e.Email, Enabled: true})
	case *events.UserDisabled:
		k := d.key("user", events.Token(e.User.Domain), events.Token(e.User.Alias))
		var u UserRecord
		if ok, err := getJSON(b, k, &u); err != nil || !ok {
			return err
		}
		u.Enabled = false
		return putJSON(b, k, u)
	default:
		return fmt.Errorf("no directory rule for %s", ev.Type())
	}
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
	name, err := get(d.db.pdb, d.key("host", events.Token(host)))
	if err == nil && name == nil {
		if h := hostOnly(host); h != host {
			name, err = get(d.db.pdb, d.key("host", events.Token(h)))
		}
	}
	if err != nil || name == nil {
		return nil, err
	}
	return d.Domain(string(name))
}

// Domain returns the named IM domain, or nil.
func (d *Directory) Domain(name string) (*Domain, error) {
	var dom Domain
	ok, err := getJSON(d.db.pdb, d.key("dom", events.Token(strings.ToLower(name))), &dom)
	if !ok {
		return nil, err
	}
	return &dom, nil
}

// Domains returns every IM domain, by name.
func (d *Directory) Domains() ([]Domain, error) {
	var out []Domain
	err := scan(d.db.pdb, prefixOf(string(d.key("dom"))), func(_, v []byte) error {
		var dom Domain
		if err := json.Unmarshal(v, &dom); err != nil {
			return err
		}
		out = append(out, dom)
		return nil
	})
	return out, err
}

// HomeServer returns the named home server, or nil.
func (d *Directory) HomeServer(name string) (*HomeServer, error) {
	var h HomeServer
	ok, err := getJSON(d.db.pdb, d.key("home", events.Token(name)), &h)
	if !ok {
		return nil, err
	}
	return &h, nil
}

// User returns the user's record, or nil when the directory never knew it.
func (d *Directory) User(u events.User) (*UserRecord, error) {
	var r UserRecord
	ok, err := getJSON(d.db.pdb, d.key("user", events.Token(u.Domain), events.Token(u.Alias)), &r)
	if !ok {
		return nil, err
	}
	return &r, nil
}

// Users returns the users of an IM domain, by alias.
func (d *Directory) Users(domain string) ([]UserRecord, error) {
	var out []UserRecord
	err := scan(d.db.pdb, prefixOf(string(d.key("user", events.Token(domain)))), func(_, v []byte) error {
		var r UserRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}
