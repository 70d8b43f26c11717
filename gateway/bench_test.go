package gateway

import (
	"encoding/base64"
	"encoding/binary"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// librvpNegotiate is the type 1 message librvp sends (domain EXAMPLE,
// workstation 127.0.0.1).
const librvpNegotiate = "TlRMTVNTUAABAAAABwIAAAcABwAxAAAACQAJACgAAAAIkwBQDwAAADEyNy4wLjAuMUVYQU1QTEU="

// authenticateMessage builds a type 3 message with the given LM and NT
// responses for user in domain (OEM strings, as librvp sends them).
func authenticateMessage(lm, nt []byte, domain, user string) []byte {
	ws := "127.0.0.1"
	const header = 64
	msg := make([]byte, header)
	copy(msg, ntlmSignature)
	binary.LittleEndian.PutUint32(msg[8:], 3)
	off := header
	for i, f := range [][]byte{lm, nt, []byte(domain), []byte(user), []byte(ws)} {
		putSecBuf(msg[12+8*i:], len(f), off)
		off += len(f)
	}
	binary.LittleEndian.PutUint32(msg[60:], ntlmNTLM|ntlmOEM)
	for _, f := range [][]byte{lm, nt, []byte(domain), []byte(user), []byte(ws)} {
		msg = append(msg, f...)
	}
	return msg
}

// BenchmarkNTLM measures the server's side of a librvp NTLM sign-in: the
// challenge answering its negotiate message (with the base64 of the
// header), and the check of its NTLMv1 answer (MS-NLMP's test vector).
func BenchmarkNTLM(b *testing.B) {
	negotiate, err := base64.StdEncoding.DecodeString(librvpNegotiate)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	b.Run("challenge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var h NTLMHandshake
			type2, err := h.Challenge(negotiate, "EXAMPLE", "RVPD", now)
			if err != nil {
				b.Fatal(err)
			}
			_ = "NTLM " + base64.StdEncoding.EncodeToString(type2)
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		nt := rvp.NTHash("Password")
		var h NTLMHandshake
		copy(h.ch.challenge[:], []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef})
		h.ch.flags = ntlmNTLM | ntlmOEM
		msg := authenticateMessage(make([]byte, 24), unhex(b, "67c43011f30298a2ad35ece64f16331c44bdbed927841f94"), "Domain", "User")
		for b.Loop() {
			user, ok, err := h.Verify(msg, nt)
			if err != nil || !ok || user != "User" {
				b.Fatalf("verify: %q %v %v", user, ok, err)
			}
		}
	})
}
