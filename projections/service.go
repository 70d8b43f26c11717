package projections

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
)

// DirectoryService answers administrators (rvpctl) over NATS request/reply
// on events.DirectoryAdminSubject. Every request but "challenge" is
// authenticated by challenge and response: the service hands out a signed,
// short-lived challenge and the administrator answers with
// AdminProof(PBKDF2(password), challenge, request), so the password never
// travels and a proof is bound to one request. Then the administrator's
// role is checked (Authorize) and the change made through Admin.
type DirectoryService struct {
	Admin  *Admin
	Conn   *nats.Conn
	Logger *slog.Logger
	Now    func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // challenges already answered, until they expire
	sub  *nats.Subscription
}

// AdminRequest is a request to the directory service.
type AdminRequest struct {
	Op        string          `json:"op"`
	Admin     string          `json:"admin"`
	Challenge []byte          `json:"challenge,omitempty"`
	Proof     []byte          `json:"proof,omitempty"`
	Args      json.RawMessage `json:"args,omitempty"`
}

// AdminResponse is the directory service's answer.
type AdminResponse struct {
	Error string `json:"error,omitempty"`
	// Code is an HTTP-like status: 401 (not authenticated), 403 (role), 400,
	// 404, 409 (exists), 500.
	Code   int             `json:"code,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// Challenge, Salt and Iter answer "challenge".
	Challenge []byte `json:"challenge,omitempty"`
	Salt      []byte `json:"salt,omitempty"`
	Iter      int    `json:"iter,omitempty"`
}

// ProofBody is what an administrator's proof covers: the operation and
// its arguments, exactly as sent.
func ProofBody(op string, args []byte) []byte { return append([]byte(op+"\n"), args...) }

const challengeLife = 2 * time.Minute

// Start begins answering; requests are served from then on, before Run is
// called. Several services share the work (a queue group).
func (s *DirectoryService) Start() error {
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
	sub, err := s.Conn.QueueSubscribe(events.DirectoryAdminSubject, "directory", s.serve)
	if err != nil {
		return fmt.Errorf("directory service: %w", err)
	}
	s.sub = sub
	return nil
}

// Run serves until ctx ends, starting first if Start was not called.
func (s *DirectoryService) Run(ctx context.Context) error {
	if s.sub == nil {
		if err := s.Start(); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return s.sub.Drain()
}

func (s *DirectoryService) serve(m *nats.Msg) {
	var req AdminRequest
	resp := AdminResponse{}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		resp = AdminResponse{Code: 400, Error: "malformed request: " + err.Error()}
	} else {
		resp = s.handle(&req)
	}
	if resp.Code >= 400 && req.Op != "" {
		s.Logger.Info("administrative request refused", "op", req.Op, "admin", req.Admin, "code", resp.Code, "err", resp.Error)
	}
	data, _ := json.Marshal(resp)
	m.Respond(data)
}

func (s *DirectoryService) newChallenge(name string) []byte {
	c := make([]byte, 24, 40)
	binary.BigEndian.PutUint64(c, uint64(s.Now().UnixNano()))
	rand.Read(c[8:24])
	return append(c, s.Admin.Keyring.MAC("admin-nonce", append(append([]byte(nil), c...), name...))[:16]...)
}

// checkChallenge verifies a challenge was issued to name, is fresh and was
// not answered before.
func (s *DirectoryService) checkChallenge(c []byte, name string) error {
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

func fail(code int, format string, args ...any) AdminResponse {
	return AdminResponse{Code: code, Error: fmt.Sprintf(format, args...)}
}

func (s *DirectoryService) handle(req *AdminRequest) AdminResponse {
	dir := s.Admin.Directory
	if req.Op == "challenge" {
		resp := AdminResponse{Challenge: s.newChallenge(req.Admin), Iter: AdminIterations}
		// An unknown name gets a salt all the same, so that names cannot be
		// probed.
		resp.Salt = s.Admin.Keyring.MAC("admin-nonce", []byte("salt:"+req.Admin))[:16]
		if adm, err := dir.Administrator(req.Admin); err == nil && adm != nil {
			if v, err := s.adminVerifier(adm); err == nil {
				resp.Salt, resp.Iter = v.Salt, v.Iter
			}
		}
		return resp
	}
	adm, err := dir.Administrator(req.Admin)
	if err != nil {
		return fail(500, "directory: %v", err)
	}
	denied := fail(401, "administrator %q: wrong name or password", req.Admin)
	if adm == nil {
		return denied
	}
	if err := s.checkChallenge(req.Challenge, req.Admin); err != nil {
		return fail(401, "%v", err)
	}
	v, err := s.adminVerifier(adm)
	if err != nil {
		return fail(500, "administrator %s: %v", adm.Name, err)
	}
	if !hmac.Equal(req.Proof, AdminProof(v.Key, req.Challenge, ProofBody(req.Op, req.Args))) {
		return denied
	}
	if err := Authorize(adm, req.Op, req.Args); err != nil {
		return fail(403, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	result, err := s.do(ctx, s.Admin.withActor("admin:"+adm.Name), adm, req.Op, req.Args)
	if err != nil {
		code := 400
		switch {
		case errors.Is(err, ErrExists):
			code = 409
		case errors.Is(err, ErrNotFound):
			code = 404
		}
		return fail(code, "%v", err)
	}
	data, err := json.Marshal(result)
	if err != nil {
		return fail(500, "%v", err)
	}
	s.Logger.Info("administrative change", "op", req.Op, "admin", adm.Name)
	return AdminResponse{Result: data}
}

func (s *DirectoryService) adminVerifier(adm *Administrator) (*AdminVerifier, error) {
	data, err := s.Admin.Keyring.Open(adm.Verifiers, []byte(events.AdminSubject(adm.Name)))
	if err != nil {
		return nil, err
	}
	var v AdminVerifier
	return &v, json.Unmarshal(data, &v)
}

// domainOps are what a domain administrator may do, within its domains.
var domainOps = []string{"user.enable", "user.disable", "user.move", "user.show", "user.list", "password.set", "domain.show", "domain.list", "home.list", "whoami"}

// Authorize checks that adm's role allows op with args: organisation
// administrators may do everything; domain administrators may manage the
// users of their own IM domains and read what that needs.
func Authorize(adm *Administrator, op string, args json.RawMessage) error {
	if adm.Role == events.RoleOrganization {
		return nil
	}
	who := fmt.Sprintf("administrator %s (domain administrator of %s)", adm.Name, strings.Join(adm.Domains, ", "))
	if adm.Role != events.RoleDomain || !slices.Contains(domainOps, op) {
		return fmt.Errorf("%s may not %s; that takes an organisation administrator", who, op)
	}
	var target struct {
		User   events.User `json:"user"`
		Domain string      `json:"domain"`
	}
	json.Unmarshal(args, &target)
	domain := target.Domain
	if domain == "" {
		domain = target.User.Domain
	}
	if domain == "" {
		return nil // listings are filtered to its domains
	}
	for _, d := range adm.Domains {
		if strings.EqualFold(d, domain) {
			return nil
		}
	}
	return fmt.Errorf("%s may not %s in IM domain %s", who, op, domain)
}

// UserSummary is a user as Exchange's task wizard showed it.
type UserSummary struct {
	UserRecord
	Address     string `json:"address"`      // alias@domain
	LogicalURL  string `json:"logical_url"`  // public URL
	PhysicalURL string `json:"physical_url"` // on its home server
	Password    bool   `json:"password"`     // whether a password is set
}

func decode(args json.RawMessage, v any) error {
	if len(args) == 0 {
		return nil
	}
	if err := json.Unmarshal(args, v); err != nil {
		return fmt.Errorf("malformed arguments: %w", err)
	}
	return nil
}

// do carries out op.
func (s *DirectoryService) do(ctx context.Context, a *Admin, adm *Administrator, op string, args json.RawMessage) (any, error) {
	dir := a.Directory
	var in struct {
		DomainSpec
		UserSpec
		Name       string         `json:"name"`
		Host       string         `json:"host"`
		Site       string         `json:"site"`
		HostsUsers bool           `json:"hosts_users"`
		Allow      bool           `json:"allow"`
		Verifiers  *Verifiers     `json:"verifiers"`
		Admin      *AdminVerifier `json:"admin_verifier"`
		Role       string         `json:"role"`
		Domains    []string       `json:"domains"`
		Inside     []string       `json:"inside"`
		Internet   bool           `json:"internet_capable"`
		Mode       string         `json:"mode"`
	}
	if err := decode(args, &in); err != nil {
		return nil, err
	}
	mine := func(domain string) bool {
		return adm.Role == events.RoleOrganization || slices.ContainsFunc(adm.Domains, func(d string) bool { return strings.EqualFold(d, domain) })
	}
	switch op {
	case "whoami":
		return Administrator{Name: adm.Name, Role: adm.Role, Domains: adm.Domains}, nil
	case "domain.create":
		return nil, a.CreateDomain(ctx, in.DomainSpec)
	case "domain.delete":
		return nil, a.DeleteDomain(ctx, in.DomainSpec.Domain)
	case "domain.list":
		doms, err := dir.Domains()
		return slices.DeleteFunc(doms, func(d Domain) bool { return !mine(d.Domain) }), err
	case "domain.show":
		dom, err := dir.Domain(in.DomainSpec.Domain)
		if err == nil && dom == nil {
			err = fmt.Errorf("IM domain %s: %w", in.DomainSpec.Domain, ErrNotFound)
		}
		return dom, err
	case "home.create":
		return nil, a.CreateHomeServer(ctx, in.Name, in.Host, in.Site, in.HostsUsers)
	case "home.allow-users":
		return nil, a.AllowUsers(ctx, in.Name, in.Allow)
	case "home.delete":
		return nil, a.DeleteHomeServer(ctx, in.Name)
	case "home.list":
		return dir.HomeServers()
	case "router.create":
		return nil, a.CreateRouter(ctx, in.Name, in.DomainSpec.Domain, in.Host, in.Mode)
	case "router.delete":
		return nil, a.DeleteRouter(ctx, in.Name)
	case "router.list":
		return dir.Routers()
	case "user.enable":
		return nil, a.EnableUser(ctx, in.UserSpec)
	case "user.disable":
		return nil, a.DisableUser(ctx, in.User)
	case "user.move":
		return nil, a.MoveUser(ctx, in.User, in.Home)
	case "user.list":
		var out []UserRecord
		doms, err := dir.Domains()
		for _, d := range doms {
			if (in.DomainSpec.Domain != "" && !strings.EqualFold(in.DomainSpec.Domain, d.Domain)) || !mine(d.Domain) {
				continue
			}
			users, err := dir.Users(d.Domain)
			if err != nil {
				return nil, err
			}
			out = append(out, users...)
		}
		return out, err
	case "user.show":
		return s.summary(in.User)
	case "password.set":
		if in.Verifiers == nil {
			return nil, errors.New("no verifiers given")
		}
		return nil, a.SetPassword(ctx, in.User, *in.Verifiers)
	case "settings.show":
		return dir.Settings()
	case "firewall.set":
		return nil, a.SetTopology(ctx, in.Inside)
	case "federation.set":
		return nil, a.SetInternetCapable(ctx, in.Internet)
	case "admin.set":
		if in.Admin == nil {
			return nil, errors.New("no administrator verifier given")
		}
		return nil, a.SetAdmin(ctx, in.Name, in.Role, in.Domains, *in.Admin)
	case "admin.remove":
		if in.Name == adm.Name {
			return nil, errors.New("an administrator cannot remove itself; ask another organisation administrator")
		}
		return nil, a.RemoveAdmin(ctx, in.Name)
	case "admin.list":
		admins, err := dir.Administrators()
		for i := range admins {
			admins[i].Verifiers = nil
		}
		return admins, err
	}
	return nil, fmt.Errorf("unknown operation %q", op)
}

func (s *DirectoryService) summary(u events.User) (*UserSummary, error) {
	dir := s.Admin.Directory
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
	sum := &UserSummary{UserRecord: *rec, Address: u.String(), LogicalURL: "http://" + dom.IMHost + "/instmsg/aliases/" + u.Alias}
	if hs, err := dir.HomeServer(rec.Home); err == nil && hs != nil {
		sum.PhysicalURL = "http://" + hs.Host + "/instmsg/local/" + dom.IMHost + "/instmsg/aliases/" + u.Alias
	}
	pw, err := dir.Password(u)
	sum.Password = pw != nil
	return sum, err
}
