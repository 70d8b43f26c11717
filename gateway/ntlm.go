package gateway

import (
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
)

// NTLM, server side (MS-NLMP): the negotiate (type 1), challenge (type 2)
// and authenticate (type 3) messages, and verification of NTLMv1, NTLMv1
// with extended session security, NTLMv2 and LMv2 responses against the NT
// hash. LM responses (v1) are never accepted: they would need the LM
// hash, which is not kept.

const ntlmSignature = "NTLMSSP\x00"

// Negotiate flags.
const (
	ntlmUnicode        = 0x00000001
	ntlmOEM            = 0x00000002
	ntlmRequestTarget  = 0x00000004
	ntlmNTLM           = 0x00000200
	ntlmAlwaysSign     = 0x00008000
	ntlmTargetDomain   = 0x00010000
	ntlmExtendedSecure = 0x00080000
	ntlmTargetInfo     = 0x00800000
	ntlmVersion        = 0x02000000
	ntlm128            = 0x20000000
	ntlmKeyExchange    = 0x40000000
	ntlm56             = 0x80000000
)

// ntlmType returns the message type of an NTLM message.
func ntlmType(b []byte) (uint32, error) {
	if len(b) < 12 || string(b[:8]) != ntlmSignature {
		return 0, errors.New("not an NTLM message")
	}
	return binary.LittleEndian.Uint32(b[8:12]), nil
}

// parseNegotiate returns the flags of a type 1 message.
func parseNegotiate(b []byte) (uint32, error) {
	if t, err := ntlmType(b); err != nil || t != 1 {
		return 0, errors.New("not an NTLM negotiate (type 1) message")
	}
	if len(b) < 16 {
		return ntlmNTLM | ntlmOEM, nil
	}
	return binary.LittleEndian.Uint32(b[12:16]), nil
}

// ntlmChallenge is the state of a handshake between type 2 and type 3.
type ntlmChallenge struct {
	challenge [8]byte
	flags     uint32
	issued    time.Time
}

func utf16le(s string) []byte { return appendUTF16le(make([]byte, 0, utf16Len(s)), s) }

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// filetime returns t as a Windows FILETIME (100 ns since 1601).
func filetime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100) + 116444736000000000
}

// buildChallenge returns a type 2 message answering a negotiate with
// clientFlags, for the Windows domain target and server name.
func buildChallenge(c *ntlmChallenge, clientFlags uint32, target, server string, now time.Time) []byte {
	flags := uint32(ntlmNTLM | ntlmRequestTarget | ntlmTargetDomain | ntlmTargetInfo)
	if clientFlags&ntlmUnicode != 0 {
		flags |= ntlmUnicode
	} else {
		flags |= ntlmOEM
	}
	flags |= clientFlags & (ntlmExtendedSecure | ntlmAlwaysSign | ntlm128 | ntlm56 | ntlmKeyExchange | ntlmVersion)
	c.flags = flags

	upper, lower := strings.ToUpper(target), strings.ToLower(target)
	serverUpper, serverLower := strings.ToUpper(server), strings.ToLower(server)
	const header = 56
	nameLen := len(upper)
	if flags&ntlmUnicode != 0 {
		nameLen = utf16Len(upper)
	}
	infoLen := 5*4 + 4 + 8 + utf16Len(upper) + utf16Len(serverUpper) + utf16Len(lower) + utf16Len(serverLower)
	msg := make([]byte, header, header+nameLen+infoLen)
	copy(msg, ntlmSignature)
	binary.LittleEndian.PutUint32(msg[8:], 2)
	putSecBuf(msg[12:], nameLen, header)
	binary.LittleEndian.PutUint32(msg[20:], flags)
	copy(msg[24:32], c.challenge[:])
	putSecBuf(msg[40:], infoLen, header+nameLen)
	// Version: 6.1 build 7601, NTLM revision 15.
	copy(msg[48:56], []byte{6, 1, 0xb1, 0x1d, 0, 0, 0, 15})
	if flags&ntlmUnicode != 0 {
		msg = appendUTF16le(msg, upper)
	} else {
		msg = append(msg, upper...)
	}
	av := func(id uint16, s string) {
		msg = binary.LittleEndian.AppendUint16(msg, id)
		msg = binary.LittleEndian.AppendUint16(msg, uint16(utf16Len(s)))
		msg = appendUTF16le(msg, s)
	}
	av(2, upper)                                   // MsvAvNbDomainName
	av(1, serverUpper)                             // MsvAvNbComputerName
	av(4, lower)                                   // MsvAvDnsDomainName
	av(3, serverLower)                             // MsvAvDnsComputerName
	msg = binary.LittleEndian.AppendUint16(msg, 7) // MsvAvTimestamp
	msg = binary.LittleEndian.AppendUint16(msg, 8)
	msg = binary.LittleEndian.AppendUint64(msg, filetime(now))
	return binary.LittleEndian.AppendUint32(msg, 0) // MsvAvEOL
}

// utf16Len returns the length of s in UTF-16LE bytes.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += 2 * utf16.RuneLen(r)
	}
	return n
}

// appendUTF16le appends s in UTF-16LE.
func appendUTF16le(b []byte, s string) []byte {
	for _, r := range s {
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			b = binary.LittleEndian.AppendUint16(b, uint16(r1))
			r = r2
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return b
}

func putSecBuf(b []byte, n, offset int) {
	binary.LittleEndian.PutUint16(b, uint16(n))
	binary.LittleEndian.PutUint16(b[2:], uint16(n))
	binary.LittleEndian.PutUint32(b[4:], uint32(offset))
}

func secBuf(msg []byte, at int) ([]byte, error) {
	if len(msg) < at+8 {
		return nil, nil // an old, short message: the field is absent
	}
	n := int(binary.LittleEndian.Uint16(msg[at:]))
	off := int(binary.LittleEndian.Uint32(msg[at+4:]))
	if n == 0 {
		return nil, nil
	}
	if off < 0 || off > len(msg) || n > len(msg)-off {
		return nil, fmt.Errorf("NTLM field at %d points outside the message", at)
	}
	return msg[off : off+n], nil
}

// ntlmAuthenticate is a parsed type 3 message.
type ntlmAuthenticate struct {
	lm, nt                    []byte
	domain, user, workstation string
	flags                     uint32
}

func parseAuthenticate(b []byte, negotiated uint32) (*ntlmAuthenticate, error) {
	if t, err := ntlmType(b); err != nil || t != 3 {
		return nil, errors.New("not an NTLM authenticate (type 3) message")
	}
	if len(b) < 52 {
		return nil, errors.New("NTLM authenticate message too short")
	}
	a := &ntlmAuthenticate{flags: negotiated}
	if len(b) >= 64 {
		a.flags = binary.LittleEndian.Uint32(b[60:64])
	}
	var fields [5][]byte
	for i, at := range []int{12, 20, 28, 36, 44} {
		f, err := secBuf(b, at)
		if err != nil {
			return nil, err
		}
		fields[i] = f
	}
	a.lm, a.nt = fields[0], fields[1]
	str := func(f []byte) string {
		if a.flags&ntlmUnicode != 0 || (a.flags&ntlmOEM == 0 && negotiated&ntlmUnicode != 0) {
			return fromUTF16le(f)
		}
		return string(f)
	}
	a.domain, a.user, a.workstation = str(fields[2]), str(fields[3]), str(fields[4])
	return a, nil
}

// desKey expands 7 key bytes to the 8 DES wants (parity bits are unused).
func desKey(k []byte) [8]byte {
	return [8]byte{k[0], k[0]<<7 | k[1]>>1, k[1]<<6 | k[2]>>2, k[2]<<5 | k[3]>>3, k[3]<<4 | k[4]>>4, k[4]<<3 | k[5]>>5, k[5]<<2 | k[6]>>6, k[6] << 1}
}

// desl is MS-NLMP's DESL: the 16-byte key padded to 21 bytes, three DES
// encryptions of data.
func desl(key16, data []byte) []byte {
	var k [21]byte
	copy(k[:], key16)
	out := make([]byte, 24)
	for i := range 3 {
		key := desKey(k[7*i : 7*i+7])
		c, _ := des.NewCipher(key[:])
		c.Encrypt(out[8*i:], data[:8])
	}
	return out
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// verifyNTLM checks a type 3's responses for the server challenge against
// the NT hash. It returns the protocol version that matched.
func verifyNTLM(a *ntlmAuthenticate, ntHash []byte, challenge [8]byte) (string, bool) {
	switch {
	case len(a.nt) == 24:
		// NTLMv1; with extended session security the LM field carries the
		// client challenge, padded with zeros.
		if len(a.lm) == 24 && a.flags&ntlmExtendedSecure != 0 && allZero(a.lm[8:]) {
			sum := md5.Sum(append(challenge[:], a.lm[:8]...))
			if subtle.ConstantTimeCompare(desl(ntHash, sum[:8]), a.nt) == 1 {
				return "NTLMv1-ESS", true
			}
		}
		if subtle.ConstantTimeCompare(desl(ntHash, challenge[:]), a.nt) == 1 {
			return "NTLMv1", true
		}
	case len(a.nt) > 24:
		key := hmacMD5(ntHash, utf16le(strings.ToUpper(a.user)+a.domain))
		if subtle.ConstantTimeCompare(hmacMD5(key, challenge[:], a.nt[16:])[:16], a.nt[:16]) == 1 {
			return "NTLMv2", true
		}
	case len(a.nt) == 0 && len(a.lm) == 24:
		key := hmacMD5(ntHash, utf16le(strings.ToUpper(a.user)+a.domain))
		if subtle.ConstantTimeCompare(hmacMD5(key, challenge[:], a.lm[16:])[:16], a.lm[:16]) == 1 {
			return "LMv2", true
		}
	}
	return "", false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// NTLMHandshake is the server side of one NTLM handshake without any
// storage: the challenge answering a client's negotiate message, and the
// check of the authenticate message that answers it. Credentials drives
// it with the directory's verifiers, throttling and the connection's
// identity; the load benchmark's bare relay with one known NT hash.
type NTLMHandshake struct{ ch ntlmChallenge }

// Challenge returns the challenge message (type 2) answering negotiate
// (type 1), for the Windows domain target and the server's name.
func (h *NTLMHandshake) Challenge(negotiate []byte, target, server string, now time.Time) ([]byte, error) {
	flags, err := parseNegotiate(negotiate)
	if err != nil {
		return nil, err
	}
	h.ch = ntlmChallenge{issued: now}
	rand.Read(h.ch.challenge[:])
	return buildChallenge(&h.ch, flags, target, server, now), nil
}

// Issued returns when the challenge was made.
func (h *NTLMHandshake) Issued() time.Time { return h.ch.issued }

// Verify checks authenticate (type 3), the answer to the challenge, against
// the NT hash of the user's password; it returns the user name the client
// gave (as given: alias, DOMAIN\alias...) and whether the responses match.
func (h *NTLMHandshake) Verify(authenticate, ntHash []byte) (string, bool, error) {
	a, err := parseAuthenticate(authenticate, h.ch.flags)
	if err != nil {
		return "", false, err
	}
	_, ok := verifyNTLM(a, ntHash, h.ch.challenge)
	return a.user, ok, nil
}
