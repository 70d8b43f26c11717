package events

import (
	"regexp"
	"testing"
)

var tokenRE = regexp.MustCompile(`^[-=a-zA-Z0-9]+$`)

func TestToken(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice", "alice"},
		{"example.test", "example=2Etest"},
		{"Bob", "=42ob"},
		{"", "="},
		{"a*b>c d", "a=2Ab=3Ec=20d"},
		{"=", "=3D"},
	} {
		if got := Token(tt.in); got != tt.want {
			t.Errorf("Token(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUntokenRejects(t *testing.T) {
	for _, in := range []string{"", "a.b", "=4", "=zz", "=61", "A", "a b"} {
		if got, err := Untoken(in); err == nil {
			t.Errorf("Untoken(%q) = %q, want error", in, got)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"alice", "example.test", "", "=", "a.b.c", "ÄÖ", "*", ">", "im.example.test", "home1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := Token(s)
		if !tokenRE.MatchString(tok) {
			t.Fatalf("Token(%q) = %q: not a valid NATS token / KV key", s, tok)
		}
		back, err := Untoken(tok)
		if err != nil || back != s {
			t.Fatalf("Untoken(Token(%q)) = %q, %v", s, back, err)
		}
		// Untoken of arbitrary input must not panic, and what it accepts
		// must be canonical: Token(Untoken(x)) == x.
		if u, err := Untoken(s); err == nil && Token(u) != s {
			t.Fatalf("Untoken(%q) = %q but Token of that is %q", s, u, Token(u))
		}
	})
}

// TestNewUserSettled: a user made from a user's parts is the same user
// (its domain's trailing dots dropped all at once, not one a time).
func TestNewUserSettled(t *testing.T) {
	for _, d := range []string{"example.test", "Example.Test.", "example.test..", "EXAMPLE.TEST..."} {
		u := NewUser(d, "Alice")
		if again := NewUser(u.Domain, u.Alias); again != u || u.Domain != "example.test" {
			t.Errorf("NewUser(%q, Alice) = %v, and again %v; want alice@example.test both times", d, u, again)
		}
	}
}
