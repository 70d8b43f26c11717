package events

import "testing"

// TestHostname pins the one host helper: a bracketed IPv6 address keeps
// its brackets with and without a port (the two used to disagree: the
// gateway's copy gave "::1" for "[::1]:8080" and "[::1]" for "[::1]").
func TestHostname(t *testing.T) {
	for in, want := range map[string]string{
		"im.example.test":      "im.example.test",
		"im.example.test:8080": "im.example.test",
		"127.0.0.1:80":         "127.0.0.1",
		"[::1]":                "[::1]",
		"[::1]:8080":           "[::1]",
		"[fe80::1%25eth0]:80":  "[fe80::1%25eth0]",
		"::1":                  "::1",
		"[::1":                 "[::1",
		"":                     "",
	} {
		if got := Hostname(in); got != want {
			t.Errorf("Hostname(%q) = %q, want %q", in, got, want)
		}
	}
}
