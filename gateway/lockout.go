package gateway

import (
	"hash/maphash"
	"sync"
	"time"
)

// Failed sign-ins are throttled, never locked out (NIST SP 800-63B
// §5.2.2), in a way that cannot be turned against the user:
//
//   - Failures count per account and address together. After Free of them
//     each further one makes that pair wait, twice as long each time (from
//     BaseDelay up to MaxDelay). Another address's failures do not delay
//     the real user on its own address.
//   - An address an account signed in from (a known address, remembered
//     for KnownFor) is exempt from everything but its own pair: so a user
//     behind a NAT shared with an attacker, or whose account is being
//     guessed from elsewhere, still signs in.
//   - From addresses the account never signed in from, failures also
//     count per account (Free×4 free) and per address (Free×10 free, for
//     many accounts tried from one address), with the same growing
//     delays: guessing one account from many addresses, or many accounts
//     from one, stays slow.
//   - A success clears its pair; the account's and address's counts are
//     forgotten only when they have been quiet for Forget, so an attacker
//     gains nothing from the real user's sign-ins.
//
// The state is kept by each gateway process, bounded, and shared with
// the others (Credentials.ShareLockout): each failure, and each success
// that clears a pair's failures or makes an address known (again, at
// most once a day), is told to every gateway of the cluster and of its
// sites, so that spreading guesses over gateways gains nothing. A
// gateway that starts knows only what it hears from then on.

// LockoutConfig configures the throttling of failed sign-ins.
type LockoutConfig struct {
	// Free is how many failures an account and address may have before
	// they wait. Default 10.
	Free int
	// BaseDelay is the first wait, doubled at each further failure up to
	// MaxDelay. Defaults 1s and 15m.
	BaseDelay, MaxDelay time.Duration
	// Forget is how long failures are remembered without a new one.
	// Default 24h.
	Forget time.Duration
	// KnownFor is how long an address an account signed in from stays
	// known. Default 30 days.
	KnownFor time.Duration
}

// Defaults of LockoutConfig, written once: rvpd's flags read them.
const (
	DefaultLockoutFree     = 10
	DefaultLockoutDelay    = time.Second
	DefaultLockoutMaxDelay = 15 * time.Minute
)

func (c LockoutConfig) withDefaults() LockoutConfig {
	if c.Free <= 0 {
		c.Free = DefaultLockoutFree
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = DefaultLockoutDelay
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = DefaultLockoutMaxDelay
	}
	if c.MaxDelay < c.BaseDelay {
		c.MaxDelay = c.BaseDelay
	}
	if c.Forget <= 0 {
		c.Forget = 24 * time.Hour
	}
	if c.KnownFor <= 0 {
		c.KnownFor = 30 * 24 * time.Hour
	}
	return c
}

// failures is a count of failures and the wait it imposes.
type failures struct {
	n     int
	last  time.Time
	until time.Time
}

// maxLockoutEntries bounds each of the lockout's maps of failures.
const maxLockoutEntries = 100_000

// maxKnown bounds the known pairs: those of every gateway of the cluster
// (16 bytes each, about 40 with the map's own), made by sign-ins that
// succeeded only.
const maxKnown = 1_000_000

type lockout struct {
	cfg LockoutConfig

	mu       sync.Mutex
	pairs    map[[2]string]*failures
	accounts map[string]*failures
	addrs    map[string]*failures
	// known holds the (account, address) pairs of successful sign-ins,
	// one for nearly every user signed in: each by a 64-bit hash of the
	// pair under a seed of this process (knownKey), with the Unix time
	// in seconds of its last sign-in told to the other gateways
	// (succeed). 16 bytes a pair where the names
	// and a time.Time took about 100, and the hash cannot be aimed at:
	// two pairs share one with a chance of 2⁻⁶⁴, and an address taken
	// for known by that only skips the account's and address's own
	// counts, never the pair's.
	known    map[uint64]int64
	maxKnown int // maxKnown; tests lower it
	seed     maphash.Seed
}

func newLockout(cfg LockoutConfig) *lockout {
	return &lockout{cfg: cfg.withDefaults(), pairs: map[[2]string]*failures{}, accounts: map[string]*failures{},
		addrs: map[string]*failures{}, known: map[uint64]int64{}, maxKnown: maxKnown, seed: maphash.MakeSeed()}
}

// Lockout throttles another service's failed sign-ins as the gateways
// throttle theirs (above): the operator console's, whose administrators'
// failures count per name and client address, per name from addresses it
// never signed in from, and per address. The service tells its other
// processes of each sign-in itself and applies theirs here.
type Lockout struct{ l *lockout }

// NewLockout returns a Lockout configured by cfg (its zero fields take
// LockoutConfig's defaults).
func NewLockout(cfg LockoutConfig) *Lockout { return &Lockout{l: newLockout(cfg)} }

// Wait returns how long account must wait at now before trying from
// addr again; 0 when it may try.
func (x *Lockout) Wait(account, addr string, now time.Time) time.Duration {
	return x.l.wait(account, addr, now)
}

// Fail records a failed sign-in of account from addr at now.
func (x *Lockout) Fail(account, addr string, now time.Time) { x.l.fail(account, addr, now) }

// Succeed records a sign-in of account from addr at now: the pair's
// failures are cleared and addr becomes known for account. It reports
// whether that changed what the service's other processes know (the pair
// had failures, or was not known lately).
func (x *Lockout) Succeed(account, addr string, now time.Time) bool {
	return x.l.succeed(account, addr, now)
}

// knownKey is the key of (account, addr) in known.
func (l *lockout) knownKey(account, addr string) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	maphash.WriteComparable(&h, len(account)) // ("a", "bc") is not ("ab", "c")
	h.WriteString(account)
	h.WriteString(addr)
	return h.Sum64()
}

func (l *lockout) isKnown(account, addr string, now time.Time) bool {
	t, ok := l.known[l.knownKey(account, addr)]
	return ok && now.Sub(time.Unix(t, 0)) < l.cfg.KnownFor
}

// wait returns how long account must wait before trying from addr again;
// 0 when it may try now.
func (l *lockout) wait(account, addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waitLocked(account, addr, l.isKnown(account, addr, now), now)
}

// waitLocked is wait with l.mu held and whether the pair is known.
func (l *lockout) waitLocked(account, addr string, known bool, now time.Time) time.Duration {
	w := waitOf(l.pairs[[2]string{account, addr}], now)
	if !known {
		w = max(w, waitOf(l.accounts[account], now), waitOf(l.addrs[addr], now))
	}
	return w
}

func waitOf(f *failures, now time.Time) time.Duration {
	if f == nil || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// fail records a failed sign-in of account from addr.
//
// It reports whether the other gateways are to be told: not when the
// account was already waiting at that address (a client that goes on
// failing while throttled, with malformed credentials say, which are
// refused before the wait is looked at), so that one connection cannot
// make every gateway of the cluster handle a note a request.
func (l *lockout) fail(account, addr string, now time.Time) (tell bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := l.isKnown(account, addr, now)
	waiting := l.waitLocked(account, addr, known, now) > 0
	l.count(entry(l.pairs, [2]string{account, addr}, l.cfg.Forget, now), l.cfg.Free, now)
	if !known {
		l.count(entry(l.accounts, account, l.cfg.Forget, now), 4*l.cfg.Free, now)
		l.count(entry(l.addrs, addr, l.cfg.Forget, now), 10*l.cfg.Free, now)
	}
	return !waiting
}

func (l *lockout) count(f *failures, free int, now time.Time) {
	if now.Sub(f.last) > l.cfg.Forget {
		f.n = 0
	}
	f.n++
	if now.After(f.last) {
		f.last = now
	}
	if over := f.n - free; over > 0 {
		d := l.cfg.MaxDelay
		if over < 32 && l.cfg.BaseDelay<<(over-1) < d {
			d = l.cfg.BaseDelay << (over - 1)
		}
		// Never sooner than a wait already set: another gateway's note
		// may come late, with an older time.
		if until := now.Add(d); until.After(f.until) {
			f.until = until
		}
	}
}

// entry returns m's entry for k, made when missing; past the bound, room
// is made first (forgetFewest).
func entry[K comparable](m map[K]*failures, k K, forget time.Duration, now time.Time) *failures {
	f := m[k]
	if f != nil {
		return f
	}
	if len(m) >= maxLockoutEntries {
		forgetFewest(m, forget, now)
	}
	f = &failures{}
	m[k] = f
	return f
}

// forgetFewest makes room in m, full, rather than let it grow: the
// entries that count nothing any more (quiet for forget) go, then, while
// it is over three quarters full, those not waiting with the fewest
// failures, one, then two, four... Entries waiting stay. A flood of names
// or addresses that failed once each goes before an account or address
// guessed at many times: every entry not waiting went at once before, so
// that 100,000 made-up names (a thousand IPv6 /64s, each within its own
// free failures) made the gateways forget an account whose last wait had
// run out, and gave its guesser the account's free failures again, flood
// after flood (TestLockoutFloodForgetsNoGuessedAccount).
func forgetFewest[K comparable](m map[K]*failures, forget time.Duration, now time.Time) {
	for most := 0; len(m) >= maxLockoutEntries*3/4; most = max(1, 2*most) {
		more := false
		for k, x := range m {
			n := x.n
			if now.Sub(x.last) > forget {
				n = 0 // count starts again at the next failure (count)
			}
			switch {
			case !now.After(x.until): // waiting
			case n <= most:
				delete(m, k)
			default:
				more = true
			}
		}
		if !more {
			return
		}
	}
}

// knownRefresh is how old a known pair's last sign-in may be before a
// sign-in of it is told to the other gateways again (their KnownFor
// counts from what they heard).
const knownRefresh = 24 * time.Hour

// succeed records a sign-in of account from addr: the pair's failures are
// cleared and the address becomes known for the account. It reports
// whether that changed what the other gateways know: the pair had
// failures, or was not known, or not since knownRefresh.
//
// A pair's time in known is that of the last sign-in told, not of the
// last sign-in: so a user who signs in every hour at one gateway is told
// to the others once a day, and stays known everywhere; here she stays
// known for KnownFor from at most a day ago.
func (l *lockout) succeed(account, addr string, now time.Time) (changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pair := [2]string{account, addr}
	f, failed := l.pairs[pair]
	if failed && f.last.After(now) {
		// A note of a success from before the pair's last failure (it
		// came late): that failure stands.
		return false
	}
	key := l.knownKey(account, addr)
	t, known := l.known[key]
	changed = failed || !known || now.Sub(time.Unix(t, 0)) > knownRefresh
	delete(l.pairs, pair)
	if !changed {
		return false
	}
	if len(l.known) >= l.maxKnown {
		l.forgetKnown(now)
	}
	if now.Unix() > t {
		l.known[key] = now.Unix()
	}
	return true
}

// forgetKnown makes room in known: the pairs no longer known go, then,
// while it is still over three quarters full, those told longest ago,
// halving the age kept each time, rather than all at once (every gateway
// holds every gateway's pairs: all would forget every user together).
func (l *lockout) forgetKnown(now time.Time) {
	for age := l.cfg.KnownFor; age >= time.Second; age /= 2 {
		for k, t := range l.known {
			if now.Sub(time.Unix(t, 0)) > age {
				delete(l.known, k)
			}
		}
		if len(l.known) < l.maxKnown*3/4 {
			return
		}
	}
	if len(l.known) >= l.maxKnown {
		clear(l.known) // all told in the last second: a flood
	}
}

// signIn is what a gateway tells the others of one sign-in
// (events.SignInSubject): a failure, or a success that changed the
// lockout (lockout.succeed).
type signIn struct {
	Account string `json:"account"`
	Addr    string `json:"addr"`
	OK      bool   `json:"ok,omitempty"`
	// At is when it happened, in Unix milliseconds: a note heard late
	// counts from then, not from its arrival.
	At int64 `json:"at"`
}

// noteSkew bounds how far from this process's clock a note's time is
// taken: core NATS delivers in milliseconds, so a time further off is
// another clock's, and a note from far back would count nothing (a wait
// over already, a count forgotten) where it should count now.
const noteSkew = 2 * time.Second

// NoteTime is the time a note of a sign-in another process made at
// atMillis (Unix milliseconds) counts from here: within noteSkew before
// now, never after it. The operator console's notes are taken so too.
func NoteTime(atMillis int64, now time.Time) time.Time {
	at := time.UnixMilli(atMillis)
	if at.After(now) {
		return now
	}
	if floor := now.Add(-noteSkew); at.Before(floor) {
		return floor
	}
	return at
}

// apply takes another gateway's sign-in as if it had happened here, at
// NoteTime.
func (l *lockout) apply(s signIn, now time.Time) {
	at := NoteTime(s.At, now)
	if s.OK {
		l.succeed(s.Account, s.Addr, at)
		return
	}
	l.fail(s.Account, s.Addr, at)
}
