package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Authentication profiles: which challenges a 401 offers.
const (
	// ProfileNTLM offers exactly one header, "NTLM": the one scheme every
	// known client does, and safe from librvp's header merging.
	ProfileNTLM = "ntlm"
	// ProfileDigest offers one Digest header.
	ProfileDigest = "digest"
	// ProfileExchange offers Exchange's three headers in Exchange's order:
	// Negotiate, NTLM, Digest (librvp reads the merged value as NTLM).
	ProfileExchange = "exchange"
	// ProfileBasic offers Basic: passwords in clear, for tests behind TLS
	// proxies only.
	ProfileBasic = "basic"
)

// Keyring is what the gateway needs of the cluster key: a user's sealed
// verifiers opened, and Digest nonces signed (MAC with purpose
// "digest-nonce"). directory.Keyring is one; the gateway does not import
// package directory (see its doc for why), so cmd/rvpd passes it in.
type Keyring interface {
	OpenVerifiers(sealed []byte, subject string) (*rvp.Verifiers, error)
	MAC(purpose string, data []byte) []byte
}

// CredentialsConfig configures Credentials.
type CredentialsConfig struct {
	// Profile is one of the Profile constants. Default ProfileNTLM.
	Profile string
	// AllowBasic accepts Basic credentials even when the profile does not
	// offer them. Default false (ProfileBasic implies true).
	AllowBasic bool
	// Keyring opens the sealed password verifiers and signs Digest nonces.
	// Required.
	Keyring Keyring
	// Directory finds users and their verifiers. Required.
	Directory *projections.Directory
	// Server is the server's name in NTLM challenges. Default "RVPD".
	Server string
	// NonceLife is how long a Digest nonce may be used. Default 5m.
	NonceLife time.Duration
	// DigestReplays bounds how many accepted Digest credentials the
	// gateway remembers, each for its nonce's life, to refuse their
	// replay (about 30 bytes each: 30 MB at the default). Past it, new
	// Digest credentials are refused (503, Retry-After) until the oldest
	// nonces die. Default 1<<20: over 3000 Digest requests a second for
	// NonceLife 5m.
	DigestReplays int
	// HandshakeLife bounds the time between an NTLM challenge and its
	// answer. Default 1m.
	HandshakeLife time.Duration
	// Lockout throttles failed sign-ins (see LockoutConfig).
	Lockout LockoutConfig
	// NoNTLMv1 refuses NTLMv1 responses (with or without extended session
	// security), leaving NTLMv2. librvp answers only NTLMv1, so it is
	// accepted unless an administrator turns it off (-auth.ntlmv1=false).
	NoNTLMv1 bool
	Logger   *slog.Logger
	Now      func() time.Time
}

// Credentials is the Authenticator that checks NTLM, Digest and (when
// allowed) Basic credentials against the directory's sealed verifiers.
type Credentials struct {
	cfg     CredentialsConfig
	log     *slog.Logger
	nonces  digestNonces
	replays *digestReplays
	lockout *lockout

	mu    sync.Mutex
	cache map[[32]byte]cachedVerifiers // by verifierKey

	// share, once ShareLockout was called, tells the other gateways of
	// a sign-in; nil before.
	share atomic.Pointer[func(signIn)]
}

// cachedVerifiers is what the gateway keeps of a user's opened
// verifiers, to spare an AES-GCM open and a JSON decode a request: the NT
// hash (NTLM, Basic), and the Digest verifiers only once a Digest request
// has needed them. The whole rvp.Verifiers (a map of ten HA1 values by
// user-name form) cost about 1.1 KiB a user signed in; this is 24 bytes
// for a user who signs in with NTLM.
type cachedVerifiers struct {
	nt     [16]byte
	digest *rvp.Verifiers
}

// verifierKey is the key of a user's opened verifiers in the cache: a
// hash of the subject they were sealed for and the sealed bytes. Sealed
// verifiers open only for their own subject (it is the AEAD's additional
// data), so one user's, copied onto another, are none of the other's:
// the cache must not find them for the other either.
func verifierKey(subject string, sealed []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(sealed)
	return [32]byte(h.Sum(nil))
}

// NewCredentials returns a credential-checking Authenticator.
func NewCredentials(cfg CredentialsConfig) (*Credentials, error) {
	if cfg.Keyring == nil || cfg.Directory == nil {
		return nil, errors.New("gateway credentials: Keyring and Directory are required")
	}
	switch cfg.Profile {
	case "":
		cfg.Profile = ProfileNTLM
	case ProfileNTLM, ProfileDigest, ProfileExchange:
	case ProfileBasic:
		cfg.AllowBasic = true
	default:
		return nil, fmt.Errorf("authentication profile %q: want ntlm, digest, exchange or basic", cfg.Profile)
	}
	if cfg.Server == "" {
		cfg.Server = "RVPD"
	}
	if cfg.NonceLife <= 0 {
		cfg.NonceLife = 5 * time.Minute
	}
	if cfg.DigestReplays <= 0 {
		cfg.DigestReplays = 1 << 20
	}
	if cfg.HandshakeLife <= 0 {
		cfg.HandshakeLife = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Credentials{
		cfg: cfg, log: log,
		nonces:  digestNonces{keyring: cfg.Keyring, life: cfg.NonceLife},
		replays: newDigestReplays(cfg.NonceLife, cfg.DigestReplays),
		lockout: newLockout(cfg.Lockout),
		cache:   map[[32]byte]cachedVerifiers{},
	}, nil
}

// Authenticate implements Authenticator.
func (c *Credentials) Authenticate(st *ConnState, ar AuthRequest) Outcome {
	h := strings.TrimSpace(ar.Req.Header.Get(rvp.HdrAuthorization))
	if h == "" {
		if st.Identity.Scheme != "" {
			// An NTLM-authenticated connection speaks for its user while
			// the user is enabled: a client may hold a connection open
			// for as long as it sends a request now and then.
			rec, err := c.cfg.Directory.User(st.Identity.User)
			if err == nil && rec != nil && rec.Enabled {
				return authenticated(st.Identity)
			}
			c.log.Info("authenticated connection's user no longer enabled", "user", st.Identity.User.String(), "client", ar.Client, "err", err)
			st.Identity, st.Scheme = events.Identity{}, nil
		}
		if !ar.Required {
			return Outcome{}
		}
		return c.challenge(ar, false)
	}
	scheme, token, _ := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	switch strings.ToLower(scheme) {
	case "ntlm":
		return c.ntlm(st, ar, "NTLM", token)
	case "negotiate":
		return c.negotiate(st, ar, token)
	case "digest":
		return c.digest(ar, token)
	case "basic":
		if c.cfg.AllowBasic {
			return c.basic(ar, token)
		}
	}
	c.log.Info("authentication refused: scheme not offered", "scheme", scheme, "client", ar.Client)
	return c.challenge(ar, false)
}

func authenticated(id events.Identity) Outcome { return Outcome{Verdict: Authenticated, Identity: id} }

// challenge offers the profile's schemes.
func (c *Credentials) challenge(ar AuthRequest, stale bool) Outcome {
	realm := c.realm(ar)
	now := c.cfg.Now()
	var values []string
	switch c.cfg.Profile {
	case ProfileNTLM:
		values = []string{"NTLM"}
	case ProfileDigest:
		values = []string{c.nonces.challengeHeader(realm, ar.Client, stale, now)}
	case ProfileExchange:
		values = []string{"Negotiate", "NTLM", c.nonces.challengeHeader(realm, ar.Client, stale, now)}
	case ProfileBasic:
		values = []string{`Basic realm="` + realm + `"`}
	}
	return Outcome{Verdict: Challenged, Challenge: values, Msg: "authentication required: sign in with your user name and password"}
}

func (c *Credentials) realm(ar AuthRequest) string {
	if ar.Domain != nil {
		return ar.Domain.Domain
	}
	return "rvp"
}

func ntDomain(d *projections.Domain) string {
	if d == nil || d.NTDomain == "" {
		return "RVP"
	}
	return d.NTDomain
}

// refuse records a failed attempt and answers it: Refused with a fresh
// challenge, or Throttled once the account and address must wait.
func (c *Credentials) refuse(ar AuthRequest, account, scheme, reason string) Outcome {
	now := c.cfg.Now()
	if addr := signInNetwork(ar); c.lockout.fail(account, addr, now) {
		c.tell(signIn{Account: account, Addr: addr, At: now.UnixMilli()})
	}
	c.log.Info("authentication failed", "user", account, "client", ar.Client, "scheme", scheme, "reason", reason)
	if out, ok := c.throttled(ar, account); ok {
		return out
	}
	out := c.challenge(ar, false)
	out.Verdict = Refused
	return out
}

// throttled returns Throttled while an account must wait before signing
// in from the request's address again.
func (c *Credentials) throttled(ar AuthRequest, account string) (Outcome, bool) {
	addr := signInNetwork(ar)
	wait := c.lockout.wait(account, addr, c.cfg.Now())
	if wait <= 0 {
		return Outcome{}, false
	}
	c.log.Warn("authentication throttled", "user", account, "client", ar.Client, "retry_in", wait.Round(time.Second))
	return Outcome{Verdict: Throttled, RetryAfter: wait,
		Msg: fmt.Sprintf("too many failed sign-ins for %s from %s; try again in %s", account, addr, wait.Round(time.Second))}, true
}

// succeed records a sign-in.
func (c *Credentials) succeed(ar AuthRequest, account string) {
	now := c.cfg.Now()
	if addr := signInNetwork(ar); c.lockout.succeed(account, addr, now) {
		c.tell(signIn{Account: account, Addr: addr, OK: true, At: now.UnixMilli()})
	}
}

// signInNetwork is the address the throttling counts a sign-in under:
// an IPv6 client's /64 (events.SenderNetwork), as connections and
// senders are counted, for one host may sign in from every address of
// its /64; an IPv4 address itself.
func signInNetwork(ar AuthRequest) string { return events.SenderNetwork(ar.Client) }

// tell tells the other gateways of a sign-in, once the lockout is shared.
func (c *Credentials) tell(s signIn) {
	if share := c.share.Load(); share != nil {
		(*share)(s)
	}
}

// ShareLockout shares the throttling of failed sign-ins with every other
// gateway that shares it on nc's cluster (and its sites, over their leaf
// connections): this gateway tells them of its failures and of the
// successes that change the throttling, and applies theirs, so that
// guesses spread over gateways count as if they came to one. gateway
// names this one in errors. stop ends the sharing. Notes go on core
// NATS, unstored: one lost on the way (a link down) makes the others
// throttle a little later, no more. Whoever may publish on the cluster's
// NATS may send notes, as it may append requests: NATS permissions that
// keep clients of other accounts off rvp.> keep them off these too.
func (c *Credentials) ShareLockout(nc *nats.Conn, gateway string) (stop func(), err error) {
	tell, unsubscribe, err := ShareNotes(nc, events.SignInSubject, c.log, c.cfg.Now,
		func(s signIn) bool { return s.Account != "" && s.Addr != "" },
		func(s signIn) { c.lockout.apply(s, c.cfg.Now()) })
	if err != nil {
		return nil, fmt.Errorf("gateway %s: share the sign-in throttling: %w", gateway, err)
	}
	share := func(s signIn) {
		if err := tell(s); err != nil {
			c.log.Warn("sign-in not told to the other gateways", "user", s.Account, "client", s.Addr, "err", err)
		}
	}
	c.share.Store(&share)
	return func() {
		c.share.Store(nil)
		unsubscribe()
	}, nil
}

// lookup maps a user name as a client gave it (alias, alias@domain,
// DOMAIN\alias, DOMAIN/alias) to an enabled user of ar's domain and its
// NT hash. With digest, it also gives the user's Digest verifiers
// (opened once, then kept).
func (c *Credentials) lookup(ar AuthRequest, name string, digest bool) (events.User, [16]byte, *rvp.Verifiers, error) {
	var nt [16]byte
	if ar.Domain == nil {
		return events.User{}, nt, nil, errors.New("no IM domain for the request")
	}
	alias := name
	if i := strings.LastIndexAny(alias, `\/`); i >= 0 {
		alias = alias[i+1:]
	}
	if i := strings.IndexByte(alias, '@'); i >= 0 {
		alias = alias[:i]
	}
	u := events.NewUser(ar.Domain.Domain, alias)
	rec, err := c.cfg.Directory.User(u)
	if err != nil {
		return u, nt, nil, err
	}
	if rec == nil || !rec.Enabled {
		return u, nt, nil, fmt.Errorf("%s is not an enabled user", u)
	}
	sealed, err := c.cfg.Directory.Password(u)
	if err != nil {
		return u, nt, nil, err
	}
	if sealed == nil {
		return u, nt, nil, fmt.Errorf("%s has no password set", u)
	}
	key := verifierKey(events.UserSubject(u), sealed)
	c.mu.Lock()
	cv, ok := c.cache[key]
	c.mu.Unlock()
	if ok && (!digest || cv.digest != nil) {
		return u, cv.nt, cv.digest, nil
	}
	v, err := c.cfg.Keyring.OpenVerifiers(sealed, events.UserSubject(u))
	if err != nil {
		return u, nt, nil, err
	}
	if len(v.NT) != len(cv.nt) {
		// Not kept: a zero NT hash must never stand for one.
		if digest {
			return u, nt, v, nil
		}
		return u, nt, nil, fmt.Errorf("%s has no NT hash in its verifiers", u)
	}
	copy(cv.nt[:], v.NT)
	if digest {
		cv.digest = v
	}
	c.mu.Lock()
	if len(c.cache) > 100_000 {
		clear(c.cache)
	}
	c.cache[key] = cv
	c.mu.Unlock()
	return u, cv.nt, cv.digest, nil
}

func (c *Credentials) ntlm(st *ConnState, ar AuthRequest, scheme, token string) Outcome {
	msg, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return c.challenge(ar, false)
	}
	typ, err := ntlmType(msg)
	if err != nil {
		return c.challenge(ar, false)
	}
	switch typ {
	case 1:
		h := &NTLMHandshake{}
		type2, err := h.Challenge(msg, ntDomain(ar.Domain), c.cfg.Server, c.cfg.Now())
		if err != nil {
			return c.challenge(ar, false)
		}
		st.Scheme = h
		st.Identity = events.Identity{}
		value := scheme + " " + base64.StdEncoding.EncodeToString(type2)
		if scheme == "Negotiate" {
			value = "Negotiate " + base64.StdEncoding.EncodeToString(spnegoChallenge(type2))
		}
		// The connection stays open: the answer must come on it.
		return Outcome{Verdict: Challenged, Challenge: []string{value}, Msg: "NTLM challenge"}
	case 3:
		h, ok := st.Scheme.(*NTLMHandshake)
		st.Scheme = nil
		if !ok || c.cfg.Now().Sub(h.Issued()) > c.cfg.HandshakeLife {
			// No challenge on this connection: start over.
			return c.challenge(ar, false)
		}
		a, err := parseAuthenticate(msg, h.ch.flags)
		if err != nil {
			return c.refuse(ar, "?", "ntlm", err.Error())
		}
		if c.cfg.NoNTLMv1 && len(a.nt) == 24 {
			// Refused before the password is tried (no guess is made),
			// and before the user is looked up: the answer is the same
			// for every name, so it says nothing of who the users are.
			c.log.Info("authentication refused: NTLMv1 is switched off (-auth.ntlmv1=false)", "user", a.user, "client", ar.Client)
			out := c.challenge(ar, false)
			out.Verdict, out.Msg = Refused, "NTLMv1 is not accepted here; use NTLMv2"
			return out
		}
		u, nt, _, err := c.lookup(ar, a.user, false)
		account := u.String()
		if out, ok := c.throttled(ar, account); ok {
			return out
		}
		if err != nil {
			return c.refuse(ar, account, "ntlm", err.Error())
		}
		version, ok := verifyNTLM(a, nt[:], h.ch.challenge)
		if !ok {
			return c.refuse(ar, account, "ntlm", "wrong password")
		}
		c.succeed(ar, account)
		id := events.Identity{Scheme: "ntlm", User: u}
		st.Identity = id
		if c.log.Enabled(context.Background(), slog.LevelDebug) { // its arguments, made for nothing, were 1% of a sign-in's objects
			c.log.Debug("authenticated", "user", account, "client", ar.Client, "scheme", version)
		}
		return authenticated(id)
	}
	return c.challenge(ar, false)
}

func (c *Credentials) digest(ar AuthRequest, token string) Outcome {
	p, err := digestParams(token)
	if err != nil {
		return c.refuse(ar, "?", "digest", err.Error())
	}
	nonce, issued := c.nonces.check(p["nonce"], ar.Client, c.cfg.Now())
	switch nonce {
	case nonceUnknown:
		return c.challenge(ar, false)
	case nonceElsewhere:
		// Not a guess at the password (nothing is counted): whoever sent
		// it has seen another client's request, or the client's address
		// changed between the challenge and its answer.
		c.log.Warn("Digest credentials refused: their nonce was issued to another address (a captured request replayed, or a client whose address changed)",
			"user", p["username"], "client", ar.Client, "nonce_issued", issued.UTC().Format(time.RFC3339))
		out := c.challenge(ar, false)
		out.Verdict = Replayed
		return out
	case nonceStale:
		return c.challenge(ar, true)
	}
	u, _, v, err := c.lookup(ar, p["username"], true)
	account := u.String()
	if out, ok := c.throttled(ar, account); ok {
		return out
	}
	if err != nil {
		return c.refuse(ar, account, "digest", err.Error())
	}
	if !sameTarget(p["uri"], ar.Req.Target) {
		return c.refuse(ar, account, "digest", fmt.Sprintf("digest uri %q is not the request target %q", p["uri"], ar.Req.Target))
	}
	if err := verifyDigest(p, ar.Req.Method, v); err != nil {
		return c.refuse(ar, account, "digest", err.Error())
	}
	// Recorded only once verified: credentials nobody could have made
	// without the password cannot use up someone else's nonce.
	replayed, retry := c.replays.use(replayKey(p), issued, c.cfg.Now())
	if replayed {
		// The response proves the password for this nonce, which is used:
		// stale=true lets a client that resent its request retry.
		c.log.Warn("Digest credentials refused: already used at this gateway (a captured request replayed, or a client that resent one)",
			"user", account, "client", ar.Client, "qop", p["qop"], "nc", p["nc"])
		out := c.challenge(ar, true)
		out.Verdict, out.Msg = Replayed, "these Digest credentials were used already; answer the fresh challenge"
		return out
	}
	if retry > 0 {
		c.log.Warn("Digest credentials refused: the gateway already remembers as many accepted Digest credentials as it may, until their nonces die (NTLM is not affected)",
			"user", account, "client", ar.Client, "max", c.cfg.DigestReplays, "retry_in", retry.Round(time.Second))
		return Outcome{Verdict: Busy, RetryAfter: retry,
			Msg: fmt.Sprintf("this server is taking too many Digest sign-ins to check them for replay; try again in %s", retry.Round(time.Second))}
	}
	c.succeed(ar, account)
	return authenticated(events.Identity{Scheme: "digest", User: u})
}

// sameTarget compares a Digest uri with the request target, either of
// which may be absolute.
func sameTarget(a, b string) bool {
	path := func(s string) string {
		if i := strings.Index(s, "://"); i >= 0 {
			s = s[i+3:]
			if j := strings.IndexByte(s, '/'); j >= 0 {
				return s[j:]
			}
			return "/"
		}
		return s
	}
	return a == b || path(a) == path(b)
}

func (c *Credentials) basic(ar AuthRequest, token string) Outcome {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return c.refuse(ar, "?", "basic", "malformed credentials")
	}
	name, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return c.refuse(ar, "?", "basic", "malformed credentials")
	}
	u, nt, _, err := c.lookup(ar, name, false)
	account := u.String()
	if out, ok := c.throttled(ar, account); ok {
		return out
	}
	if err != nil {
		return c.refuse(ar, account, "basic", err.Error())
	}
	if subtle.ConstantTimeCompare(rvp.NTHash(password), nt[:]) != 1 {
		return c.refuse(ar, account, "basic", "wrong password")
	}
	c.succeed(ar, account)
	return authenticated(events.Identity{Scheme: "basic", User: u})
}
