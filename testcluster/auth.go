package testcluster

import (
	"bytes"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// The client side of RVP authentication, written apart from the server's
// code (gateway) so that a shared misreading of the specifications cannot
// make both agree: NTLMv1 as librvp sends it (LM and NT responses),
// NTLMv1 with extended session security, NTLMv2 as Windows SSPI sends it,
// Digest as librvp and as Miranda send it, and Basic.

// Schemes a simulated client can authenticate with.
const (
	SchemeNTLMv1        = "ntlmv1"         // librvp: LM + NT responses, no extended session security
	SchemeNTLMv1ESS     = "ntlmv1-ess"     // NTLM2 session response
	SchemeNTLMv2        = "ntlmv2"         // Windows SSPI style, with the target info blob
	SchemeDigestLibrvp  = "digest-librvp"  // username="DOMAIN\user", qop and algorithm quoted, nc=00000001
	SchemeDigestMiranda = "digest-miranda" // username="DOMAIN/user", nc and algorithm quoted
	SchemeDigestRFC7616 = "digest-rfc7616" // username="DOMAIN\\user": the backslash as a quoted-pair
	SchemeBasic         = "basic"
)

// Credentials are what a simulated client signs in with.
type Credentials struct {
	Scheme   string
	User     string // as the client gives it, e.g. "alice"
	Domain   string // the Windows domain, e.g. "EXAMPLE"
	Password string
	// Preemptive sends an NTLM negotiate with the first request, as librvp
	// does after its first success.
	Preemptive bool
}

func le16(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func ntOWF(password string) []byte {
	h := md4.New()
	h.Write(le16(password))
	return h.Sum(nil)
}

func lmOWF(password string) []byte {
	p := make([]byte, 14)
	copy(p, strings.ToUpper(password))
	out := make([]byte, 0, 16)
	for _, half := range [][]byte{p[:7], p[7:]} {
		c, _ := des.NewCipher(expandKey(half))
		var b [8]byte
		c.Encrypt(b[:], []byte("KGS!@#$%"))
		out = append(out, b[:]...)
	}
	return out
}

func expandKey(k []byte) []byte {
	out := make([]byte, 8)
	out[0] = k[0] >> 1
	out[1] = (k[0]&0x01)<<6 | k[1]>>2
	out[2] = (k[1]&0x03)<<5 | k[2]>>3
	out[3] = (k[2]&0x07)<<4 | k[3]>>4
	out[4] = (k[3]&0x0f)<<3 | k[4]>>5
	out[5] = (k[4]&0x1f)<<2 | k[5]>>6
	out[6] = (k[5]&0x3f)<<1 | k[6]>>7
	out[7] = k[6] & 0x7f
	for i := range out {
		out[i] <<= 1
	}
	return out
}

func desResponse(key16, challenge []byte) []byte {
	k := append(append([]byte(nil), key16...), 0, 0, 0, 0, 0)
	out := make([]byte, 0, 24)
	for i := 0; i < 21; i += 7 {
		c, _ := des.NewCipher(expandKey(k[i : i+7]))
		var b [8]byte
		c.Encrypt(b[:], challenge)
		out = append(out, b[:]...)
	}
	return out
}

// ntlmNegotiate is a type 1 message; librvp's sets Unicode, OEM, request
// target and NTLM, and names its domain and workstation.
func ntlmNegotiate(scheme, domain string) []byte {
	flags := uint32(0x00000207)
	if scheme != SchemeNTLMv1 {
		flags |= 0x00080000 | 0x00008000 | 0xe2000000 // extended session security, always sign, 128, key exchange, 56, version
	}
	ws := "127.0.0.1"
	b := make([]byte, 32, 32+len(domain)+len(ws))
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[12:], flags|0x00003000)
	binary.LittleEndian.PutUint16(b[16:], uint16(len(domain)))
	binary.LittleEndian.PutUint16(b[18:], uint16(len(domain)))
	binary.LittleEndian.PutUint32(b[20:], uint32(32+len(ws)))
	binary.LittleEndian.PutUint16(b[24:], uint16(len(ws)))
	binary.LittleEndian.PutUint16(b[26:], uint16(len(ws)))
	binary.LittleEndian.PutUint32(b[28:], 32)
	b = append(b, ws...)
	return append(b, strings.ToUpper(domain)...)
}

// ntlmAuthenticate answers a type 2 message.
func ntlmAuthenticate(c *Credentials, type2 []byte) ([]byte, error) {
	if len(type2) < 48 || string(type2[:8]) != "NTLMSSP\x00" || binary.LittleEndian.Uint32(type2[8:]) != 2 {
		return nil, fmt.Errorf("not an NTLM challenge: %x", type2)
	}
	flags := binary.LittleEndian.Uint32(type2[20:])
	challenge := type2[24:32]
	var targetInfo []byte
	if n, off := binary.LittleEndian.Uint16(type2[40:]), binary.LittleEndian.Uint32(type2[44:]); n > 0 {
		if int(off)+int(n) > len(type2) {
			return nil, fmt.Errorf("NTLM challenge: target info outside the message")
		}
		targetInfo = type2[off : off+uint32(n)]
	}
	nt := ntOWF(c.Password)
	var lmResp, ntResp []byte
	switch c.Scheme {
	case SchemeNTLMv1:
		lmResp = desResponse(lmOWF(c.Password), challenge)
		ntResp = desResponse(nt, challenge)
	case SchemeNTLMv1ESS:
		if flags&0x00080000 == 0 {
			return nil, fmt.Errorf("server did not grant extended session security")
		}
		cc := make([]byte, 8)
		rand.Read(cc)
		lmResp = append(cc, make([]byte, 16)...)
		sum := md5.Sum(append(append([]byte(nil), challenge...), cc...))
		ntResp = desResponse(nt, sum[:8])
	case SchemeNTLMv2:
		key := hmacMD5(nt, le16(strings.ToUpper(c.User)+c.Domain))
		cc := make([]byte, 8)
		rand.Read(cc)
		blob := []byte{1, 1, 0, 0, 0, 0, 0, 0}
		var ts [8]byte
		binary.LittleEndian.PutUint64(ts[:], uint64(time.Now().UnixNano()/100)+116444736000000000)
		blob = append(blob, ts[:]...)
		blob = append(blob, cc...)
		blob = append(blob, 0, 0, 0, 0)
		blob = append(blob, targetInfo...)
		blob = append(blob, 0, 0, 0, 0)
		proof := hmacMD5(key, challenge, blob)
		ntResp = append(proof, blob...)
		lmResp = append(hmacMD5(key, challenge, cc), cc...)
	default:
		return nil, fmt.Errorf("scheme %q is not NTLM", c.Scheme)
	}
	unicode := flags&1 != 0
	str := func(s string) []byte {
		if unicode {
			return le16(s)
		}
		return []byte(s)
	}
	fields := [][]byte{lmResp, ntResp, str(c.Domain), str(c.User), str("WORKSTATION"), nil}
	const header = 72
	msg := make([]byte, header)
	copy(msg, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(msg[8:], 3)
	off := header
	for i, f := range fields {
		at := 12 + 8*i
		binary.LittleEndian.PutUint16(msg[at:], uint16(len(f)))
		binary.LittleEndian.PutUint16(msg[at+2:], uint16(len(f)))
		binary.LittleEndian.PutUint32(msg[at+4:], uint32(off))
		off += len(f)
	}
	binary.LittleEndian.PutUint32(msg[60:], flags)
	for _, f := range fields {
		msg = append(msg, f...)
	}
	return msg, nil
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// challengeParams parses the parameters of a Digest challenge.
func challengeParams(h string) map[string]string {
	p := map[string]string{}
	h = strings.TrimSpace(strings.TrimPrefix(h, "Digest"))
	for h != "" {
		h = strings.TrimLeft(h, " ,")
		k, rest, ok := strings.Cut(h, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				break
			}
			v, h = rest[1:1+end], rest[2+end:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			v, h = strings.TrimSpace(rest[:end]), rest[end:]
		}
		p[k] = v
	}
	return p
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// digestAuthorization answers a Digest challenge for method and uri.
func digestAuthorization(c *Credentials, challenge, method, uri string) string {
	p := challengeParams(challenge)
	user := c.User
	switch {
	case (c.Scheme == SchemeDigestLibrvp || c.Scheme == SchemeDigestRFC7616) && c.Domain != "":
		user = c.Domain + `\` + c.User
	case c.Scheme == SchemeDigestMiranda && c.Domain != "":
		user = c.Domain + "/" + c.User
	}
	cnonce := make([]byte, 13)
	rand.Read(cnonce)
	cn := hex.EncodeToString(cnonce)
	nc := "00000001"
	ha1 := md5hex(user + ":" + p["realm"] + ":" + c.Password)
	if strings.EqualFold(p["algorithm"], "MD5-sess") {
		ha1 = md5hex(ha1 + ":" + p["nonce"] + ":" + cn)
	}
	ha2 := md5hex(method + ":" + uri)
	qop := p["qop"]
	resp := md5hex(ha1 + ":" + p["nonce"] + ":" + nc + ":" + cn + ":" + qop + ":" + ha2)
	if c.Scheme == SchemeDigestMiranda {
		return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", qop="%s", nc="%s", cnonce="%s", algorithm="MD5", response="%s"`,
			user, p["realm"], p["nonce"], uri, qop, nc, cn, resp)
	}
	quoted := user
	if c.Scheme == SchemeDigestRFC7616 {
		quoted = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(user)
	}
	return fmt.Sprintf(`Digest username="%s", realm="%s", qop="%s", algorithm="MD5", uri="%s", nonce="%s", nc=%s, cnonce="%s", response="%s"`,
		quoted, p["realm"], qop, uri, p["nonce"], nc, cn, resp)
}

// NTLMNegotiate returns the type 1 message the client sends.
func NTLMNegotiate(c *Credentials) []byte { return ntlmNegotiate(c.Scheme, c.Domain) }

// NTLMAuthenticate returns the type 3 message answering type2.
func NTLMAuthenticate(c *Credentials, type2 []byte) ([]byte, error) {
	return ntlmAuthenticate(c, type2)
}

// DigestAuthorization returns the Authorization value answering a Digest
// challenge.
func DigestAuthorization(c *Credentials, challenge, method, uri string) string {
	return digestAuthorization(c, challenge, method, uri)
}

// BasicAuthorization returns the Authorization value of Basic credentials.
func BasicAuthorization(c *Credentials) string { return basicAuthorization(c) }

// withHeader inserts a header line after the request line of raw,
// keeping its line ends.
func withHeader(raw []byte, line string) []byte {
	i := bytes.IndexByte(raw, '\n')
	if i < 0 {
		return raw
	}
	eol := "\n"
	if i > 0 && raw[i-1] == '\r' {
		eol = "\r\n"
	}
	var b bytes.Buffer
	b.Write(raw[:i+1])
	b.WriteString(line + eol)
	b.Write(raw[i+1:])
	return b.Bytes()
}

// requestLine returns the method and target of raw.
func requestLine(raw []byte) (method, target string) {
	f := strings.Fields(firstLine(raw))
	if len(f) < 2 {
		return "", ""
	}
	return f[0], f[1]
}

func basicAuthorization(c *Credentials) string {
	user := c.User
	if c.Domain != "" {
		user = c.Domain + `\` + c.User
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+c.Password))
}
