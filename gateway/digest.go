package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// HTTP Digest (RFC 2617), server side: MD5 and MD5-sess, qop "auth" or
// none, parameters quoted or not (Miranda and librvp quote nc, qop and
// algorithm).
//
// Nonces are stateless: an issue time and a random part, signed with a
// key derived from the cluster key, so any gateway can check any nonce.
// The signature covers the address of the client the nonce was issued
// to (the TCP peer's IP address, not its port: librvp reconnects after a
// 401 when the server closes), so a nonce presented from another address
// is refused at every gateway like an unknown one: 401 with a fresh
// challenge, logged, nothing recorded. A nonce lives NonceLife (5 min);
// after that the answer says stale=true.
//
// Within its life, each gateway accepts a set of credentials once
// (digestReplays): with qop=auth, a (nonce, cnonce, nc) it accepted
// before is a replay (RFC 2617 §3.2.2); without qop (RFC 2069), where
// nothing but the nonce varies, a nonce it accepted before is. A replay
// is answered 401 with stale=true and a fresh nonce, so that a client
// that resends retries without asking its user. librvp and Miranda ask
// for a fresh nonce for every request and send nc=00000001 with a fresh
// cnonce: never a replay; an RFC 2617 client that counts nc up on one
// nonce is served too. The set is per gateway: a captured request
// replayed at another gateway from the same address within the nonce's
// life is not caught there (the address binding holds everywhere, the
// replay set only where the credentials were used). Digest without TLS
// still lets whoever is on the path read, and change, what it carries.

// digestParams parses the parameters of a Digest Authorization header.
func digestParams(s string) (map[string]string, error) {
	p := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return p, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, errors.New("malformed Digest parameters")
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				// RFC 7616 quoted-pair (\" and \\); a backslash before
				// anything else is itself, as real clients send
				// username="EXAMPLE\alice" unescaped.
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated quoted Digest parameter")
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := p[key]; dup {
			return nil, fmt.Errorf("Digest parameter %s given twice", key)
		}
		p[key] = val
	}
}

// digestNonces makes and checks nonces.
type digestNonces struct {
	keyring Keyring
	life    time.Duration
}

// A nonce is 32 bytes, base64url: the issue time (Unix nanoseconds, 8
// bytes), 8 random bytes, then two signatures of 8 bytes each: of the
// first 16 bytes (the nonce is ours) and of those with the client's
// address (it was issued to this client). Forging either takes 2^64
// requests on average, each answered alike.

// nonceCheck is what checking a nonce found.
type nonceCheck int

const (
	nonceFresh     nonceCheck = iota // ours, issued to this address, within its life
	nonceUnknown                     // not ours: garbled, forged, or from before the address was signed
	nonceElsewhere                   // ours, but issued to another address
	nonceStale                       // ours, issued to this address, past its life
)

// nonceAddr is the form of a client address a nonce is signed for: an
// IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 address.
func nonceAddr(client string) string {
	if a, err := netip.ParseAddr(client); err == nil {
		return a.Unmap().String()
	}
	return client
}

func (n digestNonces) sign(b []byte, client string) {
	copy(b[16:24], n.keyring.MAC("digest-nonce", b[:16])[:8])
	// 0x01 sets the address signature's input apart from the first's.
	data := append(append(append(make([]byte, 0, 17+len(client)), b[:16]...), 1), nonceAddr(client)...)
	copy(b[24:32], n.keyring.MAC("digest-nonce", data)[:8])
}

// make returns a nonce for client (an IP address), issued now.
func (n digestNonces) make(client string, now time.Time) string {
	var b [32]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:16])
	n.sign(b[:], client)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check says whether nonce is ours, issued to client and within its
// life, and when it was issued.
func (n digestNonces) check(nonce, client string, now time.Time) (nonceCheck, time.Time) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 32 {
		return nonceUnknown, time.Time{}
	}
	var want [32]byte
	copy(want[:16], b[:16])
	n.sign(want[:], client)
	if !hmac.Equal(b[16:24], want[16:24]) {
		return nonceUnknown, time.Time{}
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	if !hmac.Equal(b[24:32], want[24:32]) {
		return nonceElsewhere, issued
	}
	if now.Sub(issued) > n.life || issued.After(now.Add(time.Minute)) {
		return nonceStale, issued
	}
	return nonceFresh, issued
}

// challengeHeader is the WWW-Authenticate value offering Digest to client
// (its IP address). Exactly
// qop="auth": Miranda echoes the value it is given.
func (n digestNonces) challengeHeader(realm, client string, stale bool, now time.Time) string {
	h := fmt.Sprintf(`Digest qop="auth", realm="%s", nonce="%s", algorithm=MD5`, realm, n.make(client, now))
	if stale {
		h += ", stale=true"
	}
	return h
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// librvpHex is how librvp writes a binary MD5 digest in hex: as a C
// string, so it stops at the first zero byte. librvp's Digest responses
// are computed with it throughout (found against the real client: a user
// whose HA1 has a zero byte cannot sign on with a correct server).
func librvpHex(sum []byte) string {
	if i := bytes.IndexByte(sum, 0); i >= 0 {
		sum = sum[:i]
	}
	return hex.EncodeToString(sum)
}

func librvpMD5(s string) string {
	sum := md5.Sum([]byte(s))
	return librvpHex(sum[:])
}

// librvpMinSecret is how many bytes librvp's truncation must leave of
// each digest that carries the secret (HA1, MD5-sess's session HA1, and
// the response itself) for its response to be accepted: with fewer, the
// response would prove too little of the password (none at all when one
// of them starts with a zero byte: a response of "" then matches, and an
// attacker who sends one with cnonce after cnonce gets in once in 256).
const librvpMinSecret = 8

// verifyDigest checks a Digest response for method against the user's
// verifiers. The username must be one of the forms the verifiers hold an
// HA1 for. A response computed as librvp computes it (digests truncated
// at zero bytes, see librvpHex) is accepted when at least librvpMinSecret
// bytes of HA1, of the session HA1 (MD5-sess) and of the response remain.
func verifyDigest(p map[string]string, method string, v *rvp.Verifiers) error {
	err := verifyDigestWith(p, method, v, md5hex, func(ha1 string) string { return ha1 }, 0)
	if err == nil {
		return nil
	}
	bin, herr := hex.DecodeString(v.HA1[p["username"]])
	if herr != nil || bytes.IndexByte(bin, 0) < 0 || bytes.IndexByte(bin, 0) < librvpMinSecret {
		return err
	}
	if verifyDigestWith(p, method, v, librvpMD5, func(string) string { return librvpHex(bin) }, 2*librvpMinSecret) == nil {
		return nil
	}
	return err
}

// verifyDigestWith checks a response with md5hex (which may truncate)
// and HA1 as ha1Of gives it; minHex, when not 0, is how many hex digits
// the session HA1 and the expected response must keep.
func verifyDigestWith(p map[string]string, method string, v *rvp.Verifiers, md5hex func(string) string, ha1Of func(string) string, minHex int) error {
	user, realm := p["username"], p["realm"]
	if realm != v.Realm {
		return fmt.Errorf("realm %q is not %q", realm, v.Realm)
	}
	ha1, ok := v.HA1[user]
	if !ok {
		return fmt.Errorf("no Digest verifier for user name %q", user)
	}
	ha1 = ha1Of(ha1)
	switch strings.ToLower(p["algorithm"]) {
	case "", "md5":
	case "md5-sess":
		if p["cnonce"] == "" {
			return errors.New("MD5-sess without cnonce")
		}
		ha1 = md5hex(ha1 + ":" + p["nonce"] + ":" + p["cnonce"])
		if len(ha1) < minHex {
			return errors.New("MD5-sess session key too short to prove the password")
		}
	default:
		return fmt.Errorf("algorithm %q not supported", p["algorithm"])
	}
	ha2 := md5hex(method + ":" + p["uri"])
	var want string
	switch qop := strings.ToLower(p["qop"]); qop {
	case "":
		want = md5hex(ha1 + ":" + p["nonce"] + ":" + ha2)
	case "auth":
		if p["nc"] == "" || p["cnonce"] == "" {
			return errors.New("qop=auth without nc or cnonce")
		}
		want = md5hex(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2)
	default:
		return fmt.Errorf("qop %q not supported (only auth)", qop)
	}
	if len(want) < minHex {
		return errors.New("response too short to prove the password")
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(p["response"]))) != 1 {
		return errors.New("wrong response")
	}
	return nil
}

// digestReplays is the set of Digest credentials a gateway accepted
// whose nonce still lives, kept in buckets by the minute the nonce was
// issued; a bucket is dropped, on the next use, once its nonces are all
// past their life. It holds at most max credentials: when full, new
// ones are refused (use says how long until a bucket goes), never
// accepted unrecorded, for a replay must not pass because the set was
// flooded.
type digestReplays struct {
	life time.Duration
	max  int

	mu      sync.Mutex
	minutes map[int64]map[[16]byte]struct{}
	n       int
}

func newDigestReplays(life time.Duration, max int) *digestReplays {
	return &digestReplays{life: life, max: max, minutes: map[int64]map[[16]byte]struct{}{}}
}

// replayKey is what identifies a use of Digest credentials: with
// qop=auth, the nonce, cnonce and nc (all covered by the response);
// without qop, the nonce alone (nothing else is).
func replayKey(p map[string]string) [16]byte {
	h := sha256.New()
	h.Write([]byte(p["nonce"]))
	if strings.EqualFold(p["qop"], "auth") {
		h.Write([]byte{0})
		h.Write([]byte(p["cnonce"]))
		h.Write([]byte{0})
		h.Write([]byte(p["nc"]))
	}
	return [16]byte(h.Sum(nil))
}

// use records the credentials key, whose nonce was issued at issued, as
// used now. It reports whether they had been used before, or, when the
// set is full, how long until room is made (retry > 0); then nothing is
// recorded.
func (r *digestReplays) use(key [16]byte, issued, now time.Time) (replayed bool, retry time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A nonce issued in minute m lives until at most (m+1) minutes + life.
	until := func(m int64) time.Time { return time.Unix((m+1)*60, 0).Add(r.life) }
	var next time.Time
	for m, keys := range r.minutes {
		if end := until(m); !now.Before(end) {
			r.n -= len(keys)
			delete(r.minutes, m)
		} else if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	m := issued.Unix() / 60 // a fresh nonce's issue time is after 1970
	keys := r.minutes[m]
	if _, ok := keys[key]; ok {
		return true, 0
	}
	if r.n >= r.max {
		return false, max(next.Sub(now), time.Second)
	}
	if keys == nil {
		keys = map[[16]byte]struct{}{}
		r.minutes[m] = keys
	}
	keys[key] = struct{}{}
	r.n++
	return false, 0
}
