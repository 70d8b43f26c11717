package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Client speaks to the Service as an administrator: a challenge, then the
// request with a proof bound to it. The password stays here; only the key
// derived from it proves anything, and only for one request. Each
// operation is a method taking its typed arguments.
type Client struct {
	Conn     *nats.Conn
	Name     string
	Password string

	mu   sync.Mutex
	keys map[string][]byte // derived keys, by salt
	from *Where            // once found (where)
}

// where returns where the administrator acts from, for the audit
// record of its changes: the address its connection comes from as the
// NATS server saw it, and this host's name. What cannot be found is left
// out.
func (c *Client) where() Where {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.from != nil {
		return *c.from
	}
	var w Where
	if ip, err := c.Conn.GetClientIP(); err == nil && ip != nil {
		if a, ok := netip.AddrFromSlice(ip); ok {
			w.Addr = a.Unmap().String()
		}
	}
	if h, err := os.Hostname(); err == nil && (Where{Host: h}).check() == nil {
		w.Host = h
	}
	c.from = &w
	return w
}

// requestTimeout bounds the wait for one answer of the directory
// service (handleTimeout is the service's bound, shorter).
const requestTimeout = 30 * time.Second

// Error is the directory service's refusal.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func (c *Client) request(ctx context.Context, req Request) (*Response, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// No responders is tried again for a few seconds: a service that has
	// just started on another server of the cluster is not known on ours
	// until its interest has crossed the routes. Nobody received the
	// request, so sending it again is safe.
	var msg *nats.Msg
	for wait, waited := 20*time.Millisecond, time.Duration(0); ; wait = min(2*wait, 500*time.Millisecond) {
		msg, err = c.Conn.RequestWithContext(ctx, events.DirectoryAdminSubject, data)
		if !errors.Is(err, nats.ErrNoResponders) || waited >= 3*time.Second {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		waited += wait
	}
	if err != nil {
		return nil, fmt.Errorf("ask the directory service: %w (is rvpd running?)", err)
	}
	var resp Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("answer of the directory service: %w", err)
	}
	if resp.Error != "" {
		return nil, &Error{Code: resp.Code, Msg: resp.Error}
	}
	return &resp, nil
}

// Do performs op with args and decodes its result into out (when not
// nil). The methods below are the typed forms of every operation.
func (c *Client) Do(ctx context.Context, op Op, args, out any) error {
	argData, err := json.Marshal(args)
	if err != nil {
		return err
	}
	ch, err := c.request(ctx, Request{Op: OpChallenge, Admin: c.Name})
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[string][]byte{}
	}
	key, ok := c.keys[string(ch.Salt)]
	c.mu.Unlock()
	if !ok {
		if key, err = AdminKey(c.Password, ch.Salt, ch.Iter); err != nil {
			return err
		}
		c.mu.Lock()
		c.keys[string(ch.Salt)] = key
		c.mu.Unlock()
	}
	req := Request{
		Op: op, Admin: c.Name, Challenge: ch.Challenge, Args: argData,
		Proof: AdminProof(key, ch.Challenge, ProofBody(op, argData)),
	}
	if w := c.where(); w != (Where{}) {
		req.Where, req.WhereProof = &w, AdminProof(key, ch.Challenge, WhereBody(op, w))
	}
	resp, err := c.request(ctx, req)
	if err != nil {
		return err
	}
	if out != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

// get performs an operation that answers a T.
func get[T any](ctx context.Context, c *Client, op Op, args any) (T, error) {
	var v T
	err := c.Do(ctx, op, args, &v)
	return v, err
}

// Whoami returns the administrator the client acts as, and its role.
func (c *Client) Whoami(ctx context.Context) (projections.Administrator, error) {
	return get[projections.Administrator](ctx, c, OpWhoami, nil)
}

// CreateDomain creates an IM domain.
func (c *Client) CreateDomain(ctx context.Context, s DomainSpec) error {
	return c.Do(ctx, OpDomainCreate, s, nil)
}

// DeleteDomain deletes an IM domain that has no users or routers left.
func (c *Client) DeleteDomain(ctx context.Context, domain string) error {
	return c.Do(ctx, OpDomainDelete, DomainRef{Domain: domain}, nil)
}

// Domains lists the IM domains the administrator may see.
func (c *Client) Domains(ctx context.Context) ([]projections.Domain, error) {
	return get[[]projections.Domain](ctx, c, OpDomainList, nil)
}

// Domain returns an IM domain.
func (c *Client) Domain(ctx context.Context, domain string) (projections.Domain, error) {
	return get[projections.Domain](ctx, c, OpDomainShow, DomainRef{Domain: domain})
}

// ChangeDomainHosts adds and removes host names and e-mail domains of an
// IM domain, and returns the domain as changed.
func (c *Client) ChangeDomainHosts(ctx context.Context, s DomainHostsSpec) (projections.Domain, error) {
	return get[projections.Domain](ctx, c, OpDomainHosts, s)
}

// CreateHomeServer creates a home server.
func (c *Client) CreateHomeServer(ctx context.Context, s HomeServerSpec) error {
	return c.Do(ctx, OpHomeCreate, s, nil)
}

// AllowUsers sets whether a home server may host user accounts.
func (c *Client) AllowUsers(ctx context.Context, name string, allow bool) error {
	return c.Do(ctx, OpHomeAllowUsers, AllowUsersSpec{Name: name, Allow: allow}, nil)
}

// DeleteHomeServer deletes a home server no user is homed on.
func (c *Client) DeleteHomeServer(ctx context.Context, name string) error {
	return c.Do(ctx, OpHomeDelete, NameRef{Name: name}, nil)
}

// HomeServers lists the home servers.
func (c *Client) HomeServers(ctx context.Context) ([]projections.HomeServer, error) {
	return get[[]projections.HomeServer](ctx, c, OpHomeList, nil)
}

// CreateRouter creates a router.
func (c *Client) CreateRouter(ctx context.Context, s RouterSpec) error {
	return c.Do(ctx, OpRouterCreate, s, nil)
}

// DeleteRouter deletes a router.
func (c *Client) DeleteRouter(ctx context.Context, name string) error {
	return c.Do(ctx, OpRouterDelete, NameRef{Name: name}, nil)
}

// Routers lists the routers.
func (c *Client) Routers(ctx context.Context) ([]projections.Router, error) {
	return get[[]projections.Router](ctx, c, OpRouterList, nil)
}

// EnableUser enables a user for instant messaging on a home server.
func (c *Client) EnableUser(ctx context.Context, s UserSpec) error {
	return c.Do(ctx, OpUserEnable, s, nil)
}

// DisableUser disables a user.
func (c *Client) DisableUser(ctx context.Context, u events.User) error {
	return c.Do(ctx, OpUserDisable, UserRef{User: u}, nil)
}

// MoveUser moves a user to another home server.
func (c *Client) MoveUser(ctx context.Context, u events.User, home string) error {
	return c.Do(ctx, OpUserMove, UserMoveSpec{User: u, Home: home}, nil)
}

// Users lists the users of an IM domain ("" for every one the
// administrator may see).
func (c *Client) Users(ctx context.Context, domain string) ([]projections.UserRecord, error) {
	var all []projections.UserRecord
	spec := UserListSpec{Domain: domain, Limit: userPage}
	for {
		page, err := get[[]projections.UserRecord](ctx, c, OpUserList, spec)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < spec.Limit {
			return all, nil
		}
		spec.After = page[len(page)-1].User
	}
}

// userPage is how many users one answer of the directory service holds.
const userPage = 1000

// User returns a user as Exchange's task wizard showed it.
func (c *Client) User(ctx context.Context, u events.User) (UserSummary, error) {
	return get[UserSummary](ctx, c, OpUserShow, UserRef{User: u})
}

// ImportUsers enables many users (at most MaxImport) with their
// passwords' verifiers and returns what became of each.
func (c *Client) ImportUsers(ctx context.Context, s ImportSpec) ([]ImportResult, error) {
	res, err := get[[]ImportResult](ctx, c, OpUserImport, s)
	if err == nil && len(res) != len(s.Users) {
		err = fmt.Errorf("the directory service answered %d results for %d users", len(res), len(s.Users))
	}
	return res, err
}

// SetPassword records a user's new password verifiers.
func (c *Client) SetPassword(ctx context.Context, u events.User, v rvp.Verifiers) error {
	return c.Do(ctx, OpPasswordSet, PasswordSpec{User: u, Verifiers: &v}, nil)
}

// Settings returns the organisation-wide settings.
func (c *Client) Settings(ctx context.Context) (projections.Settings, error) {
	return get[projections.Settings](ctx, c, OpSettingsShow, nil)
}

// SetTopology sets the address ranges inside the firewall.
func (c *Client) SetTopology(ctx context.Context, inside []string) error {
	return c.Do(ctx, OpFirewallSet, TopologySpec{Inside: inside}, nil)
}

// SetInternetCapable switches federation with other organisations.
func (c *Client) SetInternetCapable(ctx context.Context, on bool) error {
	return c.Do(ctx, OpFederationSet, FederationSpec{InternetCapable: on}, nil)
}

// SetAdmin creates or changes an administrator.
func (c *Client) SetAdmin(ctx context.Context, s AdminSpec) error {
	return c.Do(ctx, OpAdminSet, s, nil)
}

// RemoveAdmin removes an administrator.
func (c *Client) RemoveAdmin(ctx context.Context, name string) error {
	return c.Do(ctx, OpAdminRemove, NameRef{Name: name}, nil)
}

// Administrators lists the administrators (without their verifiers).
func (c *Client) Administrators(ctx context.Context) ([]projections.Administrator, error) {
	return get[[]projections.Administrator](ctx, c, OpAdminList, nil)
}
