package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// HTTP Digest (RFC 2617), server side: MD5 and MD5-sess, qop "auth" or
// none, parameters quoted or not (Miranda and librvp quote nc, qop and
// algorithm). Nonces are stateless, signed with a key derived from the
// cluster key, so any gateway can check any nonce; a nonce may be used
// again (librvp always sends nc=00000001) until it is older than the
// nonce lifetime, after which the answer says stale=true.

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

func (n digestNonces) make(now time.Time) string {
	var b [32]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:16])
	copy(b[16:], n.keyring.MAC("digest-nonce", b[:16])[:16])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check reports whether nonce is ours and whether it is stale.
func (n digestNonces) check(nonce string, now time.Time) (ok, stale bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 32 || !hmac.Equal(b[16:], n.keyring.MAC("digest-nonce", b[:16])[:16]) {
		return false, false
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	if now.Sub(issued) > n.life || issued.After(now.Add(time.Minute)) {
		return true, true
	}
	return true, false
}

// challengeHeader is the WWW-Authenticate value offering Digest. Exactly
// qop="auth": Miranda echoes the value it is given.
func (n digestNonces) challengeHeader(realm string, stale bool, now time.Time) string {
	h := fmt.Sprintf(`Digest qop="auth", realm="%s", nonce="%s", algorithm=MD5`, realm, n.make(now))
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
