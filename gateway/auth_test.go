package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// macKeyring is a Keyring for tests of nonces: an HMAC under a fixed key,
// and no verifiers.
type macKeyring string

func (k macKeyring) MAC(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, []byte(string(k)+purpose))
	m.Write(data)
	return m.Sum(nil)
}

func (macKeyring) OpenVerifiers([]byte, string) (*rvp.Verifiers, error) {
	return nil, errors.New("no verifiers in this keyring")
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The test vectors of MS-NLMP §4.2 (user "User", domain "Domain",
// password "Password", server challenge 0123456789abcdef, client
// challenge aaaaaaaaaaaaaaaa).
func TestNTLMVectors(t *testing.T) {
	nt := rvp.NTHash("Password")
	if got := hex.EncodeToString(nt); got != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Fatalf("NT hash %s", got)
	}
	var sc [8]byte
	copy(sc[:], unhex(t, "0123456789abcdef"))
	v1 := &ntlmAuthenticate{nt: unhex(t, "67c43011f30298a2ad35ece64f16331c44bdbed927841f94"), user: "User", domain: "Domain"}
	if ver, ok := verifyNTLM(v1, nt, sc); !ok || ver != "NTLMv1" {
		t.Errorf("NTLMv1 vector: %q %v", ver, ok)
	}
	ess := &ntlmAuthenticate{
		lm:    unhex(t, "aaaaaaaaaaaaaaaa00000000000000000000000000000000"),
		nt:    unhex(t, "7537f803ae367128ca458204bde7caf81e97ed2683267232"),
		flags: ntlmExtendedSecure, user: "User", domain: "Domain",
	}
	if ver, ok := verifyNTLM(ess, nt, sc); !ok || ver != "NTLMv1-ESS" {
		t.Errorf("NTLMv1 extended session security vector: %q %v", ver, ok)
	}
	avs := unhex(t, "02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000")
	blob := append(unhex(t, "0101000000000000"+"0000000000000000"+"aaaaaaaaaaaaaaaa"+"00000000"), avs...)
	blob = append(blob, 0, 0, 0, 0)
	v2 := &ntlmAuthenticate{nt: append(unhex(t, "68cd0ab851e51c96aabc927bebef6a1c"), blob...), user: "User", domain: "Domain"}
	if ver, ok := verifyNTLM(v2, nt, sc); !ok || ver != "NTLMv2" {
		t.Errorf("NTLMv2 vector: %q %v", ver, ok)
	}
	v2.nt[0] ^= 1
	if _, ok := verifyNTLM(v2, nt, sc); ok {
		t.Error("a changed NTLMv2 proof verified")
	}
	if _, ok := verifyNTLM(&ntlmAuthenticate{nt: make([]byte, 24)}, nt, sc); ok {
		t.Error("zeros verified")
	}
}

func TestChallengeMessage(t *testing.T) {
	c := &ntlmChallenge{}
	copy(c.challenge[:], "12345678")
	msg := buildChallenge(c, ntlmUnicode|ntlmExtendedSecure, "EXAMPLE", "RVPD", time.Unix(0, 0))
	if typ, err := ntlmType(msg); err != nil || typ != 2 {
		t.Fatalf("type %d %v", typ, err)
	}
	if c.flags&ntlmUnicode == 0 || c.flags&ntlmExtendedSecure == 0 || c.flags&ntlmTargetInfo == 0 {
		t.Errorf("flags %#x", c.flags)
	}
	name, err := secBuf(msg, 12)
	if err != nil || fromUTF16le(name) != "EXAMPLE" {
		t.Errorf("target name %q %v", name, err)
	}
	if string(msg[24:32]) != "12345678" {
		t.Error("challenge not in the message")
	}
	// librvp's real negotiate (digest, librvp-wire.md §8).
	raw, _ := base64.StdEncoding.DecodeString("TlRMTVNTUAABAAAABwIAAAcABwAxAAAACQAJACgAAAAIkwBQDwAAADEyNy4wLjAuMUVYQU1QTEU=")
	if f, err := parseNegotiate(raw); err != nil || f != 0x207 {
		t.Errorf("librvp negotiate: %#x %v", f, err)
	}
}

func FuzzParseAuthenticate(f *testing.F) {
	f.Add([]byte("NTLMSSP\x00\x03\x00\x00\x00" + strings.Repeat("\x00", 60)))
	f.Add([]byte("NTLMSSP\x00\x03\x00\x00\x00\x18\x00\x18\x00\x40\x00\x00\x00" + strings.Repeat("\x01", 80)))
	f.Add([]byte("NTLMSSP\x00\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff" + strings.Repeat("\x00", 50)))
	f.Fuzz(func(t *testing.T, msg []byte) {
		a, err := parseAuthenticate(msg, ntlmUnicode)
		if err != nil {
			return
		}
		var sc [8]byte
		verifyNTLM(a, make([]byte, 16), sc) // must not panic
	})
}

func FuzzDigestParams(f *testing.F) {
	for _, s := range []string{
		`username="EXAMPLE\alice", realm="RVPSTUB", qop="auth", algorithm="MD5", uri="/instmsg/aliases/alice", nonce="79f1490c", nc=00000001, cnonce="7cc2", response="25a0d658"`,
		`username="EXAMPLE/alice", realm="r", nonce="n", uri="/x", qop="auth", nc="00000001", cnonce="c", algorithm="MD5", response="r"`,
		`username="a\"b", realm=x`,
		`,,, a=b`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := digestParams(s)
		if err != nil {
			return
		}
		for k := range p {
			if k != strings.ToLower(k) {
				t.Fatalf("key %q not lower-cased", k)
			}
		}
		verifyDigest(p, "SUBSCRIBE", &rvp.Verifiers{Realm: p["realm"], HA1: map[string]string{p["username"]: "00"}})
	})
}

func TestDigestParams(t *testing.T) {
	// The quoted-pair form (RFC 7616) and the unescaped one real clients
	// send name the same user.
	if q, err := digestParams(`username="EXAMPLE\\alice", realm="a\"b"`); err != nil || q["username"] != `EXAMPLE\alice` || q["realm"] != `a"b` {
		t.Errorf("quoted-pair: %q, %v", q, err)
	}
	p, err := digestParams(`username="EXAMPLE\alice", qop="auth", nc=00000001, algorithm="MD5", uri="/instmsg/aliases/alice"`)
	if err != nil || p["username"] != `EXAMPLE\alice` || p["nc"] != "00000001" || p["qop"] != "auth" || p["algorithm"] != "MD5" {
		t.Errorf("%v %v", p, err)
	}
	for _, bad := range []string{`a="unterminated`, `noequals`, `a=1, a=2`} {
		if _, err := digestParams(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestDigestNonceAndSess(t *testing.T) {
	n := digestNonces{keyring: macKeyring(strings.Repeat("ab", 32)), life: 5 * time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	nonce := n.make("192.0.2.1", t0)
	if got, issued := n.check(nonce, "192.0.2.1", t0.Add(4*time.Minute)); got != nonceFresh || !issued.Equal(t0) {
		t.Errorf("fresh nonce: %v issued %v", got, issued)
	}
	if got, _ := n.check(nonce, "::ffff:192.0.2.1", t0); got != nonceFresh {
		t.Errorf("fresh nonce from the same address written as IPv6: %v", got)
	}
	if got, _ := n.check(nonce, "192.0.2.1", t0.Add(6*time.Minute)); got != nonceStale {
		t.Errorf("old nonce: %v, want stale", got)
	}
	if got, _ := n.check(nonce, "192.0.2.2", t0); got != nonceElsewhere {
		t.Errorf("nonce from another address: %v, want elsewhere", got)
	}
	if got, _ := n.check(nonce[:len(nonce)-2]+"AA", "192.0.2.1", t0); got == nonceFresh {
		t.Error("a nonce with a forged address signature passed")
	}
	b, _ := base64.RawURLEncoding.DecodeString(nonce)
	b[20] ^= 1
	if got, _ := n.check(base64.RawURLEncoding.EncodeToString(b), "192.0.2.1", t0); got != nonceUnknown {
		t.Errorf("a nonce with a forged signature: %v, want unknown", got)
	}
	if h := n.challengeHeader("example.test", "192.0.2.1", true, t0); !strings.HasSuffix(h, ", stale=true") || !strings.HasPrefix(h, `Digest qop="auth", realm="example.test", nonce="`) {
		t.Errorf("stale challenge %q", h)
	}

	// MD5-sess, computed here by hand.
	v := rvp.NewVerifiers(events.NewUser("example.test", "alice"), "EXAMPLE", "", "example.test", "secret-pw")
	ha1 := md5hex(md5hex(`EXAMPLE\alice:example.test:secret-pw`) + ":n1:c1")
	resp := md5hex(ha1 + ":n1:00000001:c1:auth:" + md5hex("SUBSCRIBE:/instmsg/aliases/alice"))
	p := map[string]string{"username": `EXAMPLE\alice`, "realm": "example.test", "nonce": "n1", "uri": "/instmsg/aliases/alice",
		"qop": "auth", "nc": "00000001", "cnonce": "c1", "algorithm": "MD5-sess", "response": resp}
	if err := verifyDigest(p, "SUBSCRIBE", &v); err != nil {
		t.Errorf("MD5-sess: %v", err)
	}
	p["response"] = md5hex("x")
	if err := verifyDigest(p, "SUBSCRIBE", &v); err == nil {
		t.Error("a wrong MD5-sess response verified")
	}
}

// librvp hex-encodes digests as C strings, stopping at a zero byte. A
// response captured from the real client for a user whose HA1 starts
// 11 7a 00 is refused (two bytes of secret); one whose HA1 keeps eight or
// more bytes before the zero is accepted.
func TestDigestLibrvpTruncation(t *testing.T) {
	u := events.NewUser("example.test", "bob")
	v := rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", "test-secret-pw")
	captured := map[string]string{"username": `EXAMPLE\bob`, "realm": "example.test", "qop": "auth", "algorithm": "MD5", "uri": "/instmsg/aliases/bob",
		"nonce": "GOvYegW5swMB2JWmoM8RCzfdX22RjX5-4aduzd67Bvs", "nc": "00000001", "cnonce": "15f10cf517957668954f938bba", "response": "f3860d059534fe5ddb0c583ce555a470"}
	if librvpMD5(`EXAMPLE\bob:example.test:test-secret-pw`) != "117a" {
		t.Fatal("the captured case no longer truncates as expected")
	}
	if err := verifyDigest(captured, "SUBSCRIBE", &v); err == nil {
		t.Error("a librvp response proving two bytes of HA1 was accepted")
	}
	// Find a password whose HA1 has its first zero byte at 8 or later.
	for i := 0; ; i++ {
		pw := "pw-" + strconv.Itoa(i)
		sum := md5.Sum([]byte(`EXAMPLE\bob:example.test:` + pw))
		if z := bytes.IndexByte(sum[:], 0); z < librvpMinSecret {
			continue
		}
		v := rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", pw)
		p := map[string]string{"username": `EXAMPLE\bob`, "realm": "example.test", "qop": "auth", "uri": "/x", "nonce": "n", "nc": "00000001", "cnonce": "c"}
		p["response"] = librvpMD5(librvpHex(sum[:]) + ":n:00000001:c:auth:" + librvpMD5("SUBSCRIBE:/x"))
		if err := verifyDigest(p, "SUBSCRIBE", &v); err != nil {
			t.Errorf("librvp's response with %d bytes of HA1: %v", bytes.IndexByte(sum[:], 0), err)
		}
		p["response"] = md5hex("x")
		if err := verifyDigest(p, "SUBSCRIBE", &v); err == nil {
			t.Error("a wrong response was accepted")
		}
		break
	}
}

// TestDigestLibrvpTruncationProvesNothing: librvp's truncation of digests
// at a zero byte must not let a response that proves nothing of the
// password through. For a user whose HA1 keeps its eight bytes (so the
// librvp form of the check applies), an attacker who does not know the
// password sends response="" with cnonce after cnonce: whenever the
// librvp form of the expected response begins with a zero byte (one
// cnonce in 256), it is "" too, and matched. With MD5-sess, a session
// HA1 that begins with a zero byte is "" and the attacker computes the
// response from it.
func TestDigestLibrvpTruncationProvesNothing(t *testing.T) {
	u := events.NewUser("example.test", "bob")
	var v rvp.Verifiers
	var sum [16]byte
	for i := 0; ; i++ {
		pw := "pw-" + strconv.Itoa(i)
		sum = md5.Sum([]byte(`EXAMPLE\bob:example.test:` + pw))
		if z := bytes.IndexByte(sum[:], 0); z >= librvpMinSecret {
			v = rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", pw)
			break
		}
	}
	ha1 := librvpHex(sum[:]) // what the server knows; the attacker does not
	ha2 := librvpMD5("SUBSCRIBE:/x")
	base := func(cnonce string) map[string]string {
		return map[string]string{"username": `EXAMPLE\bob`, "realm": "example.test", "qop": "auth", "uri": "/x",
			"nonce": "n", "nc": "00000001", "cnonce": cnonce}
	}

	// MD5: an empty response.
	for i := 0; ; i++ {
		c := "c" + strconv.Itoa(i)
		if librvpMD5(ha1+":n:00000001:"+c+":auth:"+ha2) != "" {
			continue // the attacker's try fails here; he tries the next
		}
		p := base(c)
		p["response"] = ""
		if err := verifyDigest(p, "SUBSCRIBE", &v); err == nil {
			t.Errorf("an empty response was accepted (cnonce %q, try %d)", c, i+1)
		}
		break
	}

	// MD5-sess: a session HA1 of nothing, the response computed without
	// the password.
	for i := 0; ; i++ {
		c := "c" + strconv.Itoa(i)
		if librvpMD5(ha1+":n:"+c) != "" {
			continue
		}
		p := base(c)
		p["algorithm"] = "MD5-sess"
		p["response"] = librvpMD5(":n:00000001:" + c + ":auth:" + ha2) // no secret in it
		if err := verifyDigest(p, "SUBSCRIBE", &v); err == nil {
			t.Errorf("an MD5-sess response computed from an empty session key was accepted (cnonce %q, try %d)", c, i+1)
		}
		break
	}
}
