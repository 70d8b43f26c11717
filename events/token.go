package events

import (
	"errors"
	"fmt"
	"strings"
)

// Token encodes s as a single NATS subject token that is also a valid
// JetStream KV key and Pebble key component. Lower-case ASCII letters,
// digits and '-' stand for themselves; every other byte is written as '='
// followed by two upper-case hex digits. The empty string is "=".
//
// Token is injective: Untoken(Token(s)) == s for every s.
func Token(s string) string {
	safe := s != ""
	for i := 0; i < len(s) && safe; i++ {
		safe = tokenSafe(s[i])
	}
	if safe {
		return s
	}
	return string(AppendToken(make([]byte, 0, len(s)+8), s))
}

// subject returns root followed by the Token of each part, each after a
// dot. It is made on the stack and copied once: joining the tokens made a
// string for each token that needed escaping (a domain's dots) and one
// for the join.
func subject(root string, parts ...string) string {
	var buf [128]byte
	b := append(buf[:0], root...)
	for _, p := range parts {
		b = AppendToken(append(b, '.'), p)
	}
	return string(b)
}

// AppendToken appends Token(s) to b.
func AppendToken(b []byte, s string) []byte {
	if s == "" {
		return append(b, '=')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenSafe(c) {
			b = append(b, c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b = append(b, '=', hex[c>>4], hex[c&0x0f])
	}
	return b
}

// Untoken reverses Token.
func Untoken(t string) (string, error) {
	if t == "=" {
		return "", nil
	}
	if t == "" {
		return "", errors.New("untoken: empty token")
	}
	var b strings.Builder
	b.Grow(len(t))
	for i := 0; i < len(t); i++ {
		c := t[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		if c != '=' || i+2 >= len(t) {
			return "", fmt.Errorf("untoken %q: bad byte at %d", t, i)
		}
		hi, ok1 := unhex(t[i+1])
		lo, ok2 := unhex(t[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("untoken %q: bad escape at %d", t, i)
		}
		v := hi<<4 | lo
		if tokenSafe(v) {
			// Token never escapes a safe byte; accepting it would make
			// two tokens decode to one name.
			return "", fmt.Errorf("untoken %q: needless escape at %d", t, i)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

func tokenSafe(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
