package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
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

// requestTimeout bounds the wait for one operation of the directory
// service (handleTimeout is the service's bound, shorter).
const requestTimeout = 30 * time.Second

// tryTimeout bounds the wait for one answer that may be asked for again
// (a challenge, a read): a request or its answer can be lost with no
// error, in a NATS server gone silent (SIGSTOP, a frozen virtual
// machine) before the connection notices by its pings
// (natsclient.Liveness) and moves to another. Asked once for the whole
// requestTimeout, rvpctl waited 30 s and said "context deadline exceeded
// (is rvpd running?)" though the cluster answered again seconds after.
const tryTimeout = 3 * time.Second

// noServiceWait is how long no responders is asked again: a service
// that has just started on another server of the cluster is not known on
// ours until its interest has crossed the routes.
const noServiceWait = 3 * time.Second

// Error is the directory service's refusal.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// errNoService is no responders for noServiceWait.
var errNoService = errors.New("no directory service answers (is rvpd running?)")

// exchange sends data to the directory service and returns its answer,
// sending it again while no one is there to receive it (no responders,
// for up to noServiceWait: nobody received it, so that is safe). ctx
// bounds the wait for the answer.
func (c *Client) exchange(ctx context.Context, data []byte) (*Response, error) {
	var msg *nats.Msg
	var err error
	for wait, waited := 20*time.Millisecond, time.Duration(0); ; wait = min(2*wait, 500*time.Millisecond) {
		msg, err = c.Conn.RequestWithContext(ctx, events.DirectoryAdminSubject, data)
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if waited >= noServiceWait {
			return nil, errNoService
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		waited += wait
	}
	if err != nil {
		return nil, err
	}
	return decode(msg)
}

func decode(msg *nats.Msg) (*Response, error) {
	var resp Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("answer of the directory service: %w", err)
	}
	return &resp, nil
}

// via names the NATS server the connection is on, for errors.
func (c *Client) via() string {
	if u := c.Conn.ConnectedUrlRedacted(); u != "" {
		return u
	}
	return "(none: the connection is reconnecting)"
}

// noAnswer is the error of a request that got no answer in waited.
func (c *Client) noAnswer(waited time.Duration, via []string) error {
	return fmt.Errorf("no answer from the directory service in %v through NATS server %s: is a server frozen? is rvpd running?",
		waited.Round(100*time.Millisecond), strings.Join(via, ", then "))
}

// Do performs op with args and decodes its result into out (when not
// nil). The methods below are the typed forms of every operation.
//
// The challenge, and a read, are asked again when their answer does not
// come in tryTimeout: a read is asked again whole, with a new challenge
// (the service refuses a challenge used twice). A change is sent once,
// and waited for up to requestTimeout (the service may take most of it),
// or until a little after the connection has moved to another NATS
// server, which says where the request or its answer was lost: then the
// error says the change may have been made all the same. It is not sent
// again: another node of the service would make it again.
func (c *Client) Do(ctx context.Context, op Op, args, out any) error {
	argData, err := json.Marshal(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	start := time.Now()
	var via []string
	try := func() {
		if v := c.via(); !slices.Contains(via, v) {
			via = append(via, v)
		}
	}
	lost := func(int) error { return c.noAnswer(time.Since(start), via) }
	failed := func(err error) error {
		if _, refused := errors.AsType[*Error](err); refused {
			return err
		}
		return fmt.Errorf("ask the directory service: %w", err)
	}
	var resp *Response
	if op.reads() {
		resp, err = askAgainEvery(ctx, tryTimeout, failed, lost, func(ctx context.Context) (*Response, error) {
			try()
			req, err := c.proven(ctx, op, argData)
			if err != nil {
				return nil, err
			}
			return c.exchange(ctx, req)
		})
	} else {
		var req []byte
		req, err = askAgainEvery(ctx, tryTimeout, failed, lost, func(ctx context.Context) ([]byte, error) {
			try()
			return c.proven(ctx, op, argData)
		})
		if err == nil {
			resp, err = c.change(ctx, req, start, via)
		}
	}
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return &Error{Code: resp.Code, Msg: resp.Error}
	}
	if out != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

// proven asks for a challenge and returns the request of op with args
// proven with it.
func (c *Client) proven(ctx context.Context, op Op, argData []byte) ([]byte, error) {
	data, err := json.Marshal(Request{Op: OpChallenge, Admin: c.Name})
	if err != nil {
		return nil, err
	}
	ch, err := c.exchange(ctx, data)
	if err != nil {
		return nil, err
	}
	if ch.Error != "" {
		return nil, &Error{Code: ch.Code, Msg: ch.Error}
	}
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[string][]byte{}
	}
	key, ok := c.keys[string(ch.Salt)]
	c.mu.Unlock()
	if !ok {
		if key, err = AdminKey(c.Password, ch.Salt, ch.Iter); err != nil {
			return nil, err
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
	return json.Marshal(req)
}

// change sends the request of a change once (again only while no one is
// there to receive it) and waits for its answer until ctx ends, or
// tryTimeout after the connection has moved to another NATS server.
func (c *Client) change(ctx context.Context, data []byte, start time.Time, via []string) (*Response, error) {
	inbox := c.Conn.NewInbox()
	sub, err := c.Conn.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("ask the directory service: %w", err)
	}
	defer sub.Unsubscribe()
	reconnects := c.Conn.Stats().Reconnects
	sentVia := c.via()
	if !slices.Contains(via, sentVia) {
		via = append(via, sentVia)
	}
	if err := c.Conn.PublishRequest(events.DirectoryAdminSubject, inbox, data); err != nil {
		return nil, fmt.Errorf("ask the directory service: %w", err)
	}
	var moved time.Time
	for waited, wait := time.Duration(0), 20*time.Millisecond; ; {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		msg, err := sub.NextMsgWithContext(wctx)
		cancel()
		switch {
		case err == nil && len(msg.Data) == 0 && msg.Header.Get("Status") == "503":
			// No responders: nobody received it; sent again for a while.
			if waited >= noServiceWait {
				return nil, errNoService
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			waited, wait = waited+wait, min(2*wait, 500*time.Millisecond)
			if err := c.Conn.PublishRequest(events.DirectoryAdminSubject, inbox, data); err != nil {
				return nil, fmt.Errorf("ask the directory service: %w", err)
			}
			continue
		case err == nil:
			return decode(msg)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w; the change may have been recorded all the same: look before making it again", c.noAnswer(time.Since(start), via))
		case !errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("ask the directory service: %w", err)
		}
		if moved.IsZero() && c.Conn.Stats().Reconnects > reconnects {
			moved = time.Now()
		}
		if !moved.IsZero() && time.Since(moved) >= tryTimeout {
			return nil, fmt.Errorf("no answer from the directory service in %v: NATS server %s went silent, and the connection moved to %s (is a server frozen?); the change may have been recorded all the same: look before making it again",
				time.Since(start).Round(100*time.Millisecond), sentVia, c.via())
		}
	}
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
