package rvp

import (
	"crypto/md5"
	"encoding/hex"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4"

	"github.com/rvp-im/rvpd/events"
)

// Verifiers are what the server keeps to check a user's password in the
// authentication schemes RVP clients speak: the NT hash (for NTLM, and for
// Basic) and Digest HA1 values, one per user name form a client may send,
// since HA1 covers the name exactly as sent.
//
// They live here, with the wire protocol, because three parties share
// their format: the gateway checks credentials against them, rvpctl and
// rvpd dev compute them where a password is typed, and the directory
// seals them (directory.Keyring) before they enter an event.
type Verifiers struct {
	NT    []byte            `json:"nt"`
	Realm string            `json:"realm"`
	HA1   map[string]string `json:"ha1"` // user name as sent → hex MD5(name:realm:password)
}

// NTHash returns MD4(UTF-16LE(password)), the NT one-way function.
func NTHash(password string) []byte {
	h := md4.New()
	for _, c := range utf16.Encode([]rune(password)) {
		h.Write([]byte{byte(c), byte(c >> 8)})
	}
	return h.Sum(nil)
}

// DigestNames lists the user name forms Digest clients send for a user:
// the alias, alias@domain, and the Windows domain forms librvp
// (DOMAIN\alias) and Miranda (DOMAIN/alias) use.
func DigestNames(u events.User, ntDomain, ntAccount string) []string {
	names := []string{u.Alias, u.Alias + "@" + u.Domain}
	accounts := []string{u.Alias}
	if ntAccount != "" && !strings.EqualFold(ntAccount, u.Alias) {
		accounts = append(accounts, ntAccount)
		names = append(names, ntAccount)
	}
	for _, d := range []string{ntDomain, strings.ToLower(ntDomain), strings.ToUpper(ntDomain), u.Domain} {
		if d == "" {
			continue
		}
		for _, a := range accounts {
			names = append(names, d+`\`+a, d+"/"+a)
		}
	}
	seen := map[string]bool{}
	out := names[:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// NewVerifiers computes the verifiers of password for u.
func NewVerifiers(u events.User, ntDomain, ntAccount, realm, password string) Verifiers {
	v := Verifiers{NT: NTHash(password), Realm: realm, HA1: map[string]string{}}
	for _, name := range DigestNames(u, ntDomain, ntAccount) {
		sum := md5.Sum([]byte(name + ":" + realm + ":" + password))
		v.HA1[name] = hex.EncodeToString(sum[:])
	}
	return v
}
