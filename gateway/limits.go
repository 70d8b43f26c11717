package gateway

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// SenderLimits are each sender's share of the service at one gateway: how
// many messages (NOTIFYs) a second, and how many bytes a second of request
// bodies (what is appended to the requests stream, and for messages kept
// in the facts), each a token bucket that holds a burst. A request past
// either is refused with 429 and Retry-After before anything is appended.
//
// A third bucket bounds what a sender has kept: BytesPerDay of request
// bodies (the facts keep messages, ACLs and properties, for the audit, as
// long as the streams keep facts), refilled over a day; a request that
// may leave facts draws requestOverhead on it besides, body or none (a
// renewal's subscription.renewed is some 650 bytes kept), and a read,
// which keeps nothing, draws nothing. What a decision keeps beyond the
// body (an ACL write's acl.set holds the whole ACL: Reply.Kept) is
// charged when the answer comes, below empty if need be. The rates alone
// let one sender store 20 GiB a day.
//
// A sender is the authenticated user. Requests without credentials (from
// other organisations, and redirects) are charged to their client address,
// with AnonymousFactor times the share: one organisation's server carries
// many users' traffic from one address. Zero rates switch a limit off.
type SenderLimits struct {
	MessagesPerSecond int
	MessageBurst      int
	BytesPerSecond    int
	ByteBurst         int
	BytesPerDay       int
	AnonymousFactor   int
}

// Defaults of SenderLimits, written once: rvpd's flags read them.
const (
	// DefaultMessagesPerSecond: a user types in a few conversations at
	// once (typing indicators every few seconds each) and a line to a
	// multi-party conversation is one NOTIFY per participant.
	DefaultMessagesPerSecond = 20
	DefaultMessageBurst      = 100
	// DefaultBytesPerSecond and DefaultByteBurst: a message is a few
	// hundred bytes; a burst holds several of the largest bodies allowed
	// (256 KiB).
	DefaultBytesPerSecond  = 256 << 10
	DefaultByteBurst       = 4 << 20
	DefaultAnonymousFactor = 10
	// DefaultBytesPerDay: a busy user sends a few thousand lines a day
	// of a few hundred bytes each; the bound is many times that.
	DefaultBytesPerDay = 64 << 20
)

// DefaultSenderLimits returns the default limits.
func DefaultSenderLimits() SenderLimits {
	return SenderLimits{MessagesPerSecond: DefaultMessagesPerSecond, MessageBurst: DefaultMessageBurst,
		BytesPerSecond: DefaultBytesPerSecond, ByteBurst: DefaultByteBurst, BytesPerDay: DefaultBytesPerDay,
		AnonymousFactor: DefaultAnonymousFactor}
}

// requestOverhead is what a request event costs beyond its body: its
// header fields, ids and routing, charged to the byte bucket, so that
// bodiless requests are not free.
const requestOverhead = 512

// bucket is a token bucket.
type bucket struct {
	tokens      float64
	last        time.Time
	rate, burst float64 // its sender's share
}

// refill adds what b's rate gives since its last use, up to its burst.
func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+dt*b.rate)
	}
	b.last = now
}

// wait returns how long until b holds n tokens (0 when it does). A
// request larger than a whole burst waits for a full bucket.
func (b *bucket) wait(n float64) (float64, time.Duration) {
	n = math.Min(n, b.burst)
	if b.tokens >= n {
		return n, 0
	}
	return n, time.Duration((n - b.tokens) / b.rate * float64(time.Second))
}

// maxBuckets bounds the senders a limiter remembers. Past it, buckets that
// have refilled (which hold nothing a fresh one would not) are forgotten.
const maxBuckets = 100_000

// limiter holds the buckets of every sender.
type limiter struct {
	cfg SenderLimits
	mu  sync.Mutex
	msg map[string]*bucket
	byt map[string]*bucket
	day map[string]*bucket // bytes a day
}

func newLimiter(cfg SenderLimits) *limiter {
	if cfg.AnonymousFactor <= 0 {
		cfg.AnonymousFactor = DefaultAnonymousFactor
	}
	if cfg.MessageBurst < cfg.MessagesPerSecond {
		cfg.MessageBurst = cfg.MessagesPerSecond
	}
	if cfg.ByteBurst < cfg.BytesPerSecond {
		cfg.ByteBurst = cfg.BytesPerSecond
	}
	return &limiter{cfg: cfg, msg: map[string]*bucket{}, byt: map[string]*bucket{}, day: map[string]*bucket{}}
}

// allow charges one request of a sender (key; anonymous ones get the
// larger share): a message if message, its body's bytes (and
// requestOverhead) to the bytes a second, and kept bytes to the bytes a
// day. When the request is past the sender's share it charges nothing and
// returns how long to wait and which limit it hit.
func (l *limiter) allow(key string, anonymous, message bool, bytes, kept int, now time.Time) (time.Duration, string, bool) {
	f := l.share(anonymous)
	l.mu.Lock()
	defer l.mu.Unlock()
	var mb, bb, db *bucket
	var mn, bn, dn float64
	if message && l.cfg.MessagesPerSecond > 0 {
		mb = bucketOf(l.msg, key, f*float64(l.cfg.MessagesPerSecond), f*float64(l.cfg.MessageBurst), now)
		var wait time.Duration
		if mn, wait = mb.wait(1); wait > 0 {
			return wait, "messages per second", false
		}
	}
	if l.cfg.BytesPerSecond > 0 {
		bb = bucketOf(l.byt, key, f*float64(l.cfg.BytesPerSecond), f*float64(l.cfg.ByteBurst), now)
		var wait time.Duration
		if bn, wait = bb.wait(float64(bytes + requestOverhead)); wait > 0 {
			return wait, "bytes per second", false
		}
	}
	if l.cfg.BytesPerDay > 0 && kept > 0 {
		db = l.dayBucket(key, anonymous, now)
		var wait time.Duration
		if dn, wait = db.wait(float64(kept)); wait > 0 {
			return wait, "bytes per day", false
		}
	}
	for _, c := range []struct {
		b *bucket
		n float64
	}{{mb, mn}, {bb, bn}, {db, dn}} {
		if c.b != nil {
			c.b.tokens -= c.n
		}
	}
	return 0, "", true
}

// keep charges n bytes more to a sender's bytes a day (key; anonymous
// ones get the larger share): what a request it let through kept beyond
// what allow charged for it (Reply.Kept). The bucket may go below empty,
// and the sender's next requests that keep anything wait for it to
// refill.
func (l *limiter) keep(key string, anonymous bool, n int, now time.Time) {
	if l.cfg.BytesPerDay <= 0 || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dayBucket(key, anonymous, now).tokens -= float64(n)
}

// share is the factor of a sender's limits: AnonymousFactor for one
// without credentials.
func (l *limiter) share(anonymous bool) float64 {
	if anonymous {
		return float64(l.cfg.AnonymousFactor)
	}
	return 1
}

// dayBucket returns a sender's bytes a day, refilled to now (l.mu held).
func (l *limiter) dayBucket(key string, anonymous bool, now time.Time) *bucket {
	burst := l.share(anonymous) * float64(l.cfg.BytesPerDay)
	return bucketOf(l.day, key, burst/(24*60*60), burst, now)
}

// bucketOf returns key's bucket in m, refilled to now, made of rate and
// burst (a key's share does not change) if need be. Past maxBuckets, those that have refilled (which
// hold nothing a fresh one would not) are forgotten, then if need be
// those holding half their share or more, so that a flood of senders
// neither grows the map nor hands the senders who spent their share a
// fresh one.
func bucketOf(m map[string]*bucket, key string, rate, burst float64, now time.Time) *bucket {
	b := m[key]
	if b == nil {
		if len(m) >= maxBuckets {
			forget(m, now)
		}
		b = &bucket{rate: rate, burst: burst}
		m[key] = b
	}
	b.refill(now)
	return b
}

// forget makes room in m (bucketOf), each bucket judged by its own share,
// in passes over the map (no sort: it runs under the limiter's lock, on
// the request path, once per tens of thousands of new senders). Under a
// flood in which most senders have spent more than half their share, it
// forgets any, to bound the map.
func forget(m map[string]*bucket, now time.Time) {
	for _, least := range []float64{1, 0.5, 0} {
		for k, x := range m {
			if least == 1 {
				x.refill(now)
			}
			if x.tokens >= least*x.burst {
				delete(m, k)
				if least < 1 && len(m) <= maxBuckets/2 {
					return
				}
			}
		}
		if len(m) < maxBuckets*3/4 {
			return
		}
	}
}

// Stats counts what a gateway refused at its trust boundaries, for the
// metrics to export.
type Stats struct {
	// Unauthenticated: requests without credentials that needed them
	// (401 without an Authorization header).
	Unauthenticated uint64
	// Forged: requests speaking for someone other than who authenticated
	// (RVP-From-Principal, or a message's sender), or addressed to a node
	// other than the one they were sent to (403).
	Forged uint64
	// CallBacksRefused: subscriptions whose Call-Back the policy refused.
	CallBacksRefused uint64
	// RateLimited: requests past their sender's share (429).
	RateLimited uint64
	// SignInsThrottled: sign-ins refused while an account and address
	// wait after failures (403 with Retry-After).
	SignInsThrottled uint64
	// Foreign: requests from other organisations taken without
	// credentials.
	Foreign uint64
	// SignInsFailed: sign-ins with wrong or unknown credentials (401
	// with a fresh challenge).
	SignInsFailed uint64
	// ConnectionsRefused: connections refused past MaxConns (503).
	ConnectionsRefused uint64
	// Replayed: credentials presented again after they were accepted
	// (401 with a fresh challenge: Replayed).
	Replayed uint64
}

// counters are the gateway's Stats as they are counted.
type counters struct {
	unauthenticated, forged, callBacksRefused, rateLimited, signInsThrottled, foreign atomic.Uint64
	signInsFailed, connectionsRefused, replayed                                       atomic.Uint64
}

// Stats returns what the gateway has refused so far.
func (g *Gateway) Stats() Stats {
	c := &g.counters
	return Stats{Unauthenticated: c.unauthenticated.Load(), Forged: c.forged.Load(), CallBacksRefused: c.callBacksRefused.Load(),
		RateLimited: c.rateLimited.Load(), SignInsThrottled: c.signInsThrottled.Load(), Foreign: c.foreign.Load(),
		SignInsFailed: c.signInsFailed.Load(), ConnectionsRefused: c.connectionsRefused.Load(), Replayed: c.replayed.Load()}
}
