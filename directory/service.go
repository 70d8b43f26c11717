package directory

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Service answers administrators (rvpctl) over NATS request/reply on
// events.DirectoryAdminSubject. Every request but OpChallenge is
// authenticated by challenge and response: the service hands out a
// signed, short-lived challenge and the administrator answers with
// AdminProof(PBKDF2(password), challenge, request), so the password never
// travels and a proof is bound to one request. Then the administrator's
// role is checked and the change made through Admin.
type Service struct {
	Admin  *Admin
	Conn   *nats.Conn
	Logger *slog.Logger
	Now    func() time.Time

	ops  map[Op]operation
	mu   sync.Mutex
	used map[string]time.Time // challenges already answered, until they expire
	sub  *nats.Subscription
	// slots bounds the requests carried out at once; imports takes one
	// import at a time (see serve). requests holds those being carried
	// out, and drained is closed once the subscription has delivered its
	// last request (Run waits for both).
	slots    chan struct{}
	imports  chan struct{}
	requests sync.WaitGroup
	drained  chan struct{}
}

// handleTimeout bounds the carrying out of one request. It is shorter
// than the client's bound on its wait (requestTimeout), which starts
// earlier (before the challenge's answer, the request's transit): equal,
// a request that used all of it was answered to a client gone by then,
// and what the answer says (that a change was made, recorded but not yet
// applied by this node's directory: look again rather than make it again)
// never reached the administrator, told "context deadline exceeded (is
// rvpd running?)" instead.
const handleTimeout = requestTimeout - 5*time.Second

// maxRequests bounds the requests one service carries out at once: past
// it, the next waits for one to end.
const maxRequests = 16

// Request is a request to the directory service.
type Request struct {
	Op        Op              `json:"op"`
	Admin     string          `json:"admin"`
	Challenge []byte          `json:"challenge,omitempty"`
	Proof     []byte          `json:"proof,omitempty"`
	Args      json.RawMessage `json:"args,omitempty"`
	// Where names where the administrator acts from, for the audit
	// record of the change: the address its NATS connection comes from as
	// the NATS server told rvpctl, and rvpctl's host name. The
	// administrator states it, under WhereProof; a service older than it
	// ignores both, and the proof of the request is the same with or
	// without them.
	Where      *Where `json:"where,omitempty"`
	WhereProof []byte `json:"where_proof,omitempty"`
}

// Where is where an administrator acts from (Request.Where).
type Where struct {
	Addr string `json:"addr,omitempty"` // an IP address
	Host string `json:"host,omitempty"` // a host name
}

// String renders w for the audit record (events.Meta.Client): the
// address, and the host name after it.
func (w Where) String() string {
	switch {
	case w.Host == "":
		return w.Addr
	case w.Addr == "":
		return "host " + w.Host
	}
	return w.Addr + " (host " + w.Host + ")"
}

// maxHostName bounds Where.Host (a DNS name's longest).
const maxHostName = 253

// check refuses a Where that is not an address and a host name.
func (w Where) check() error {
	if w.Addr != "" {
		if _, err := netip.ParseAddr(w.Addr); err != nil {
			return fmt.Errorf("where the request comes from: %q is not an IP address", w.Addr)
		}
	}
	if len(w.Host) > maxHostName {
		return fmt.Errorf("where the request comes from: a host name of %d bytes, more than %d", len(w.Host), maxHostName)
	}
	for _, r := range w.Host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("where the request comes from: host name %q has a character a host name does not", w.Host)
		}
	}
	return nil
}

// WhereBody is what Request.WhereProof covers: where, for the operation
// and the challenge the request's proof is made with.
func WhereBody(op Op, w Where) []byte {
	return []byte("where\n" + string(op) + "\n" + w.Addr + "\n" + w.Host)
}

// Code classifies the directory service's refusals. It is not an RVP
// status (the service speaks to rvpctl, not to RVP clients), but takes
// HTTP's numbers, which is what the wire carries.
type Code int

// The refusals.
const (
	// CodeInvalid: a malformed request, or a change the directory does not
	// allow as asked (the message says why).
	CodeInvalid Code = 400
	// CodeUnauthenticated: wrong name or password, or a challenge that is
	// bad, expired or used.
	CodeUnauthenticated Code = 401
	// CodeForbidden: the administrator's role does not allow it.
	CodeForbidden Code = 403
	// CodeNotFound: what the request names does not exist.
	CodeNotFound Code = 404
	// CodeExists: what the request creates exists already.
	CodeExists Code = 409
	// CodeInternal: the directory could not be read.
	CodeInternal Code = 500
)

// Response is the directory service's answer.
type Response struct {
	Error  string          `json:"error,omitempty"`
	Code   Code            `json:"code,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// Challenge, Salt and Iter answer OpChallenge.
	Challenge []byte `json:"challenge,omitempty"`
	Salt      []byte `json:"salt,omitempty"`
	Iter      int    `json:"iter,omitempty"`
}

// ProofBody is what an administrator's proof covers: the operation and
// its arguments, exactly as sent.
func ProofBody(op Op, args []byte) []byte { return append([]byte(string(op)+"\n"), args...) }

const challengeLife = 2 * time.Minute

// Start begins answering; requests are served from then on, before Run is
// called. Several services share the work (a queue group).
func (s *Service) Start() error {
	if s.Admin == nil || s.Admin.Keyring == nil || s.Conn == nil {
		return errors.New("directory service: Admin with a Keyring, and Conn, are required")
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	s.used = map[string]time.Time{}
	s.ops = operations()
	s.slots, s.imports, s.drained = make(chan struct{}, maxRequests), make(chan struct{}, 1), make(chan struct{})
	sub, err := s.Conn.QueueSubscribe(events.DirectoryAdminSubject, "directory", s.serve)
	if err != nil {
		return fmt.Errorf("directory service: %w", err)
	}
	// Called once the subscription's last request has been handed to
	// serve, whether it was drained or its connection closed.
	sub.SetClosedHandler(func(string) { close(s.drained) })
	// The subscription reaches the server asynchronously: a round trip
	// makes sure it is there before Start returns (and rvpd says it
	// serves), or an rvpctl right after could find no responders.
	if err := s.Conn.Flush(); err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("directory service: %w", err)
	}
	s.sub = sub
	return nil
}

// Run serves until ctx ends, starting first if Start was not called;
// then it answers the requests received and returns once they are.
func (s *Service) Run(ctx context.Context) error {
	if s.sub == nil {
		if err := s.Start(); err != nil {
			return err
		}
	}
	<-ctx.Done()
	err := s.sub.Drain()
	<-s.drained
	s.requests.Wait()
	return err
}

// serve carries out a request beside those in progress (up to
// maxRequests). One at a time, a request that takes long held every
// other administrator's: an import, or a change waiting for this node's
// directory to catch up, had "rvpctl user show" wait up to 30 s, and its
// own 30 s were spent by then. Requests carried out at once are no more
// a risk than the same requests sent to two nodes: every change is
// fenced by JetStream's expected sequences, not by this service. Imports
// take turns all the same: each has up to a thousand appends in flight,
// and the JetStream context's bound on those is shared.
func (s *Service) serve(m *nats.Msg) {
	s.slots <- struct{}{}
	s.requests.Go(func() {
		defer func() { <-s.slots }()
		s.answer(m)
	})
}

// answer carries out one request and answers it.
func (s *Service) answer(m *nats.Msg) {
	var req Request
	resp := Response{}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		resp = fail(CodeInvalid, "malformed request: %v", err)
	} else {
		resp = s.handle(&req)
	}
	if resp.Code >= CodeInvalid && req.Op != "" {
		s.Logger.Info("administrative request refused", "op", req.Op, "admin", req.Admin, "code", resp.Code, "err", resp.Error)
	}
	data, _ := json.Marshal(resp)
	if err := m.Respond(data); err != nil {
		// Too large for a NATS message, most likely: say so rather than
		// leave the administrator waiting for an answer.
		s.Logger.Warn("answer not sent", "op", req.Op, "bytes", len(data), "err", err)
		data, _ = json.Marshal(fail(CodeInternal, "the answer to %s could not be sent (%d bytes): %v", req.Op, len(data), err))
		m.Respond(data)
	}
}

func (s *Service) newChallenge(name string) []byte {
	c := make([]byte, 24, 40)
	binary.BigEndian.PutUint64(c, uint64(s.Now().UnixNano()))
	rand.Read(c[8:24])
	return append(c, s.Admin.Keyring.MAC("admin-nonce", append(append([]byte(nil), c...), name...))[:16]...)
}

// checkChallenge verifies a challenge was issued to name, is fresh and was
// not answered before.
func (s *Service) checkChallenge(c []byte, name string) error {
	if len(c) != 40 || !hmac.Equal(c[24:], s.Admin.Keyring.MAC("admin-nonce", append(append([]byte(nil), c[:24]...), name...))[:16]) {
		return errors.New("bad challenge; ask for a new one")
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(c)))
	now := s.Now()
	if now.Sub(issued) > challengeLife || issued.After(now.Add(time.Minute)) {
		return errors.New("challenge expired; ask for a new one")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.used {
		if now.After(exp) {
			delete(s.used, k)
		}
	}
	if _, ok := s.used[string(c)]; ok {
		return errors.New("challenge already used; ask for a new one")
	}
	s.used[string(c)] = issued.Add(challengeLife)
	return nil
}

func fail(code Code, format string, args ...any) Response {
	return Response{Code: code, Error: fmt.Sprintf(format, args...)}
}

func (s *Service) handle(req *Request) Response {
	dir := s.Admin.Directory
	if req.Op == OpChallenge {
		resp := Response{Challenge: s.newChallenge(req.Admin), Iter: AdminIterations}
		// An unknown name gets a salt all the same, so that names cannot be
		// probed.
		resp.Salt = s.Admin.Keyring.MAC("admin-nonce", []byte("salt:"+req.Admin))[:16]
		if adm, err := dir.Administrator(req.Admin); err == nil && adm != nil {
			if v, err := s.Admin.Keyring.OpenAdminVerifier(adm.Verifiers, adm.Name); err == nil {
				resp.Salt, resp.Iter = v.Salt, v.Iter
			}
		}
		return resp
	}
	adm, err := dir.Administrator(req.Admin)
	if err != nil {
		return fail(CodeInternal, "directory: %v", err)
	}
	denied := fail(CodeUnauthenticated, "administrator %q: wrong name or password", req.Admin)
	if adm == nil {
		return denied
	}
	if err := s.checkChallenge(req.Challenge, req.Admin); err != nil {
		return fail(CodeUnauthenticated, "%v", err)
	}
	v, err := s.Admin.Keyring.OpenAdminVerifier(adm.Verifiers, adm.Name)
	if err != nil {
		return fail(CodeInternal, "administrator %s: %v", adm.Name, err)
	}
	if !hmac.Equal(req.Proof, AdminProof(v.Key, req.Challenge, ProofBody(req.Op, req.Args))) {
		return denied
	}
	o, known := s.ops[req.Op]
	if err := authorize(adm, req.Op, o.domainAdmin); err != nil {
		return fail(CodeForbidden, "%v", err)
	}
	if !known {
		return fail(CodeInvalid, "unknown operation %q", req.Op)
	}
	var where string
	if req.Where != nil {
		// Checked as the request is: stated by the administrator, under its
		// proof; one that does not hold is refused whole.
		if !hmac.Equal(req.WhereProof, AdminProof(v.Key, req.Challenge, WhereBody(req.Op, *req.Where))) {
			return denied
		}
		if err := req.Where.check(); err != nil {
			return fail(CodeInvalid, "%v", err)
		}
		where = req.Where.String()
	}
	c := &call{s: s, a: s.Admin.withActor("admin:"+adm.Name, where), adm: adm}
	domain, run, err := o.prepare(req.Args)
	if err != nil {
		return fail(CodeInvalid, "%v", err)
	}
	if err := authorizeDomain(adm, req.Op, domain); err != nil {
		return fail(CodeForbidden, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), handleTimeout)
	defer cancel()
	if req.Op == OpUserImport {
		select {
		case s.imports <- struct{}{}:
			defer func() { <-s.imports }()
		case <-ctx.Done():
			return fail(CodeInternal, "another import kept this one waiting for %v; import again (what was done stays done)", handleTimeout)
		}
	}
	result, err := run(ctx, c)
	if err != nil {
		code := CodeInvalid
		switch {
		case errors.Is(err, ErrExists):
			code = CodeExists
		case errors.Is(err, ErrNotFound):
			code = CodeNotFound
		case errors.Is(err, errForbidden):
			code = CodeForbidden
		case NoRoom(err):
			return fail(CodeInternal, "%v: JetStream storage is full; make room or raise the limit (docs/operations.md, \"Storage is filling\"), then try again", err)
		}
		return fail(code, "%v", err)
	}
	data, err := json.Marshal(result)
	if err != nil {
		return fail(CodeInternal, "%v", err)
	}
	attrs := append([]any{"op", req.Op, "admin", adm.Name, "from", where}, what(req.Args)...)
	if req.Op.reads() {
		s.Logger.Debug("administrative request", attrs...)
	} else {
		s.Logger.Info("administrative change", attrs...)
	}
	return Response{Result: data}
}

// what names what an administrative request is about, for its log line:
// the user, the home server or router, the IM domain, and the choice an
// operation makes (allow: home deny-users is home.allow-users with
// allow false; role; mode), as its arguments give them; an import's
// count of users. Nothing else is logged of the arguments (passwords'
// verifiers among them).
func what(args json.RawMessage) []any {
	var m map[string]json.RawMessage
	if json.Unmarshal(args, &m) != nil {
		return nil
	}
	var out []any
	if raw, ok := m["user"]; ok {
		var u events.User
		if json.Unmarshal(raw, &u) == nil && !u.IsZero() {
			out = append(out, "user", u.String())
		}
	}
	for _, k := range []string{"name", "home", "domain", "role", "mode"} {
		var v string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &v) == nil && v != "" {
			out = append(out, k, v)
		}
	}
	var allow bool
	if raw, ok := m["allow"]; ok && json.Unmarshal(raw, &allow) == nil {
		out = append(out, "allow", allow)
	}
	var users []json.RawMessage
	if raw, ok := m["users"]; ok && json.Unmarshal(raw, &users) == nil {
		out = append(out, "users", len(users))
	}
	return out
}

// errForbidden is an operation its administrator's role allows refused
// for what it asks (CodeForbidden).
var errForbidden = errors.New("forbidden")

// who names a domain administrator in refusals.
func who(adm *projections.Administrator) string {
	return fmt.Sprintf("administrator %s (domain administrator of %s)", adm.Name, strings.Join(adm.Domains, ", "))
}

// authorize checks that adm's role allows op at all: organisation
// administrators may do everything; domain administrators what
// domainAdmin allows.
func authorize(adm *projections.Administrator, op Op, domainAdmin bool) error {
	if adm.Role == events.RoleOrganization || (adm.Role == events.RoleDomain && domainAdmin) {
		return nil
	}
	return fmt.Errorf("%s may not %s; that takes an organisation administrator", who(adm), op)
}

// authorizeDomain checks that adm may act in the IM domain an operation
// names: a domain administrator only in its own ("" names none: listings
// are filtered to its domains).
func authorizeDomain(adm *projections.Administrator, op Op, domain string) error {
	if adm.Role == events.RoleOrganization || domain == "" || administers(adm, domain) {
		return nil
	}
	return fmt.Errorf("%s may not %s in IM domain %s", who(adm), op, domain)
}

// call is one authorised request being carried out.
type call struct {
	s   *Service
	a   *Admin // acting for the administrator
	adm *projections.Administrator
}

// mine reports whether the administrator may see an IM domain.
func (c *call) mine(domain string) bool {
	return c.adm.Role == events.RoleOrganization || administers(c.adm, domain)
}

// under reports whether host is domain or a name under it.
func under(host, domain string) bool {
	return host == domain || strings.HasSuffix(host, "."+domain)
}

func administers(adm *projections.Administrator, domain string) bool {
	return slices.ContainsFunc(adm.Domains, func(d string) bool { return strings.EqualFold(d, domain) })
}

// operation is how the service carries out one Op.
type operation struct {
	// domainAdmin says a domain administrator may do it, within its IM
	// domains.
	domainAdmin bool
	// prepare decodes the arguments; it returns the IM domain the
	// operation acts in ("" for none) and the work.
	prepare func(args json.RawMessage) (domain string, run func(context.Context, *call) (any, error), err error)
}

// op makes the operation whose arguments are an A: scope names the IM
// domain they act in (nil: none), do carries it out.
func op[A any](domainAdmin bool, scope func(A) string, do func(context.Context, *call, A) (any, error)) operation {
	return operation{domainAdmin: domainAdmin, prepare: func(raw json.RawMessage) (string, func(context.Context, *call) (any, error), error) {
		var a A
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &a); err != nil {
				return "", nil, fmt.Errorf("malformed arguments: %w", err)
			}
		}
		// Users and IM domains as the directory keeps them, whatever the
		// client sent: looked up as sent, alice@Example.Test. did not
		// exist, and a domain administrator of example.test was refused
		// "IM domain example.test.".
		if c, ok := any(a).(interface{ canonical() A }); ok {
			a = c.canonical()
		}
		domain := ""
		if scope != nil {
			domain = scope(a)
		}
		return domain, func(ctx context.Context, c *call) (any, error) { return do(ctx, c, a) }, nil
	}}
}

// none is the argument of the operations that take none.
type none struct{}

// done is the result of a change: nothing but success.
func done(err error) (any, error) { return nil, err }

func userDomain[A interface{ user() events.User }](a A) string { return a.user().Domain }

func (s UserSpec) user() events.User     { return s.User }
func (r UserRef) user() events.User      { return r.User }
func (m UserMoveSpec) user() events.User { return m.User }
func (p PasswordSpec) user() events.User { return p.User }

func (r DomainRef) domain() string { return r.Domain }

func (s UserSpec) canonical() UserSpec { s.User = canonicalUser(s.User); return s }
func (r UserRef) canonical() UserRef   { r.User = canonicalUser(r.User); return r }
func (m UserMoveSpec) canonical() UserMoveSpec {
	m.User = canonicalUser(m.User)
	return m
}
func (p PasswordSpec) canonical() PasswordSpec { p.User = canonicalUser(p.User); return p }
func (r DomainRef) canonical() DomainRef       { r.Domain = domainName(r.Domain); return r }
func (s UserListSpec) canonical() UserListSpec {
	s.Domain, s.After = domainName(s.Domain), canonicalUser(s.After)
	return s
}

// canonicalUser is u as the directory keeps users (events.NewUser); the
// zero user stays zero.
func canonicalUser(u events.User) events.User {
	if u.IsZero() {
		return u
	}
	return events.NewUser(u.Domain, u.Alias)
}

// operations returns the directory service's operations. Domain
// administrators may manage the users of their own IM domains and read
// what that needs.
func operations() map[Op]operation {
	return map[Op]operation{
		OpWhoami: op(true, nil, func(_ context.Context, c *call, _ none) (any, error) {
			return projections.Administrator{Name: c.adm.Name, Role: c.adm.Role, Domains: c.adm.Domains}, nil
		}),
		OpDomainCreate: op(false, nil, func(ctx context.Context, c *call, s DomainSpec) (any, error) {
			return done(c.a.CreateDomain(ctx, s))
		}),
		OpDomainDelete: op(false, nil, func(ctx context.Context, c *call, r DomainRef) (any, error) {
			return done(c.a.DeleteDomain(ctx, r.Domain))
		}),
		OpDomainList: op(true, nil, func(_ context.Context, c *call, _ none) (any, error) {
			doms, err := c.a.Directory.Domains()
			return slices.DeleteFunc(doms, func(d projections.Domain) bool { return !c.mine(d.Domain) }), err
		}),
		OpDomainShow: op(true, DomainRef.domain, func(_ context.Context, c *call, r DomainRef) (any, error) {
			dom, err := c.a.Directory.Domain(r.Domain)
			if err == nil && dom == nil {
				err = fmt.Errorf("IM domain %s: %w", r.Domain, ErrNotFound)
			}
			return dom, err
		}),
		// A domain administrator may name its own IM domain by more hosts
		// under its name (gw.example.com for example.com): what another
		// domain holds is refused all the same, but a name no domain
		// holds yet (a partner organisation's domain, a home server's
		// host) would make its addresses ours, which only an
		// organisation administrator decides.
		OpDomainHosts: op(true, DomainHostsSpec.domain, func(ctx context.Context, c *call, s DomainHostsSpec) (any, error) {
			if c.adm.Role != events.RoleOrganization {
				for _, h := range slices.Concat(s.AddHosts, s.AddEmailDomains) {
					if n, err := hostName("host", h); err == nil && !under(events.Hostname(n), s.Domain) {
						return nil, fmt.Errorf("%w: %s may add names under IM domain %s only, not %s; an organisation administrator may add any", errForbidden, who(c.adm), s.Domain, h)
					}
				}
			}
			return c.a.ChangeDomainHosts(ctx, s)
		}),
		OpHomeCreate: op(false, nil, func(ctx context.Context, c *call, s HomeServerSpec) (any, error) {
			return done(c.a.CreateHomeServer(ctx, s.Name, s.Host, s.Site, s.HostsUsers))
		}),
		OpHomeAllowUsers: op(false, nil, func(ctx context.Context, c *call, s AllowUsersSpec) (any, error) {
			return done(c.a.AllowUsers(ctx, s.Name, s.Allow))
		}),
		OpHomeDelete: op(false, nil, func(ctx context.Context, c *call, r NameRef) (any, error) {
			return done(c.a.DeleteHomeServer(ctx, r.Name))
		}),
		OpHomeList: op(true, nil, func(_ context.Context, c *call, _ none) (any, error) {
			return c.a.Directory.HomeServers()
		}),
		OpRouterCreate: op(false, nil, func(ctx context.Context, c *call, s RouterSpec) (any, error) {
			return done(c.a.CreateRouter(ctx, s.Name, s.Domain, s.Host, s.Mode))
		}),
		OpRouterDelete: op(false, nil, func(ctx context.Context, c *call, r NameRef) (any, error) {
			return done(c.a.DeleteRouter(ctx, r.Name))
		}),
		OpRouterList: op(false, nil, func(_ context.Context, c *call, _ none) (any, error) {
			return c.a.Directory.Routers()
		}),
		OpUserEnable: op(true, userDomain[UserSpec], func(ctx context.Context, c *call, s UserSpec) (any, error) {
			return done(c.a.EnableUser(ctx, s))
		}),
		OpUserDisable: op(true, userDomain[UserRef], func(ctx context.Context, c *call, r UserRef) (any, error) {
			return done(c.a.DisableUser(ctx, r.User))
		}),
		OpUserMove: op(true, userDomain[UserMoveSpec], func(ctx context.Context, c *call, m UserMoveSpec) (any, error) {
			return done(c.a.MoveUser(ctx, m.User, m.Home))
		}),
		OpUserList: op(true, UserListSpec.domain, func(_ context.Context, c *call, r UserListSpec) (any, error) {
			users, err := c.users(r.Domain)
			if err != nil || r.Limit <= 0 {
				return users, err
			}
			key := func(u events.User) string { return u.Domain + "\x00" + u.Alias }
			slices.SortFunc(users, func(a, b projections.UserRecord) int { return strings.Compare(key(a.User), key(b.User)) })
			after := key(r.After)
			i, _ := slices.BinarySearchFunc(users, after, func(u projections.UserRecord, k string) int { return strings.Compare(key(u.User), k) })
			for i < len(users) && key(users[i].User) <= after {
				i++
			}
			return users[i:min(len(users), i+r.Limit)], nil
		}),
		OpUserShow: op(true, userDomain[UserRef], func(_ context.Context, c *call, r UserRef) (any, error) {
			return c.summary(r.User)
		}),
		OpUserImport: op(true, nil, func(ctx context.Context, c *call, s ImportSpec) (any, error) {
			// A domain administrator imports into its own IM domains only;
			// a user of another is refused, and the others go on.
			return c.a.ImportUsers(ctx, s, func(domain string) error {
				if c.mine(domain) {
					return nil
				}
				return fmt.Errorf("%s may not %s in IM domain %s", who(c.adm), OpUserImport, domain)
			})
		}),
		OpPasswordSet: op(true, userDomain[PasswordSpec], func(ctx context.Context, c *call, p PasswordSpec) (any, error) {
			if p.Verifiers == nil {
				return nil, errors.New("no verifiers given")
			}
			return done(c.a.SetPassword(ctx, p.User, *p.Verifiers))
		}),
		OpSettingsShow: op(false, nil, func(_ context.Context, c *call, _ none) (any, error) {
			return c.a.Directory.Settings()
		}),
		OpFirewallSet: op(false, nil, func(ctx context.Context, c *call, t TopologySpec) (any, error) {
			return done(c.a.SetTopology(ctx, t.Inside))
		}),
		OpFederationSet: op(false, nil, func(ctx context.Context, c *call, f FederationSpec) (any, error) {
			return done(c.a.SetInternetCapable(ctx, f.InternetCapable))
		}),
		OpAdminSet: op(false, nil, func(ctx context.Context, c *call, s AdminSpec) (any, error) {
			if s.Verifier == nil {
				return nil, errors.New("no administrator verifier given")
			}
			return done(c.a.SetAdmin(ctx, s.Name, s.Role, s.Domains, *s.Verifier))
		}),
		OpAdminRemove: op(false, nil, func(ctx context.Context, c *call, r NameRef) (any, error) {
			if r.Name == c.adm.Name {
				return nil, errors.New("an administrator cannot remove itself; ask another organisation administrator")
			}
			return done(c.a.RemoveAdmin(ctx, r.Name))
		}),
		OpAdminList: op(false, nil, func(_ context.Context, c *call, _ none) (any, error) {
			admins, err := c.a.Directory.Administrators()
			for i := range admins {
				admins[i].Verifiers = nil
			}
			return admins, err
		}),
	}
}

// users lists the users of domain ("" for every IM domain) the
// administrator may see.
func (c *call) users(domain string) ([]projections.UserRecord, error) {
	dir := c.a.Directory
	var out []projections.UserRecord
	doms, err := dir.Domains()
	for _, d := range doms {
		if (domain != "" && !strings.EqualFold(domain, d.Domain)) || !c.mine(d.Domain) {
			continue
		}
		users, err := dir.Users(d.Domain)
		if err != nil {
			return nil, err
		}
		out = append(out, users...)
	}
	return out, err
}

func (c *call) summary(u events.User) (*UserSummary, error) {
	dir := c.a.Directory
	rec, err := dir.User(u)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("user %s: %w", u, ErrNotFound)
	}
	dom, err := dir.Domain(u.Domain)
	if err != nil || dom == nil {
		return nil, fmt.Errorf("IM domain of %s: %w", u, ErrNotFound)
	}
	sum := &UserSummary{UserRecord: *rec, Address: u.String(), LogicalURL: rvp.LogicalURL(dom.IMHost, u.Alias)}
	if hs, err := dir.HomeServer(rec.Home); err == nil && hs != nil {
		sum.PhysicalURL = rvp.PhysicalURL(hs.Host, dom.IMHost, u.Alias)
	}
	pw, err := dir.Password(u)
	sum.Password = pw != nil
	return sum, err
}
