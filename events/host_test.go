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

// TestSenderNetwork: an anonymous sender is charged by its IPv4 address or
// by its IPv6 /64, so that a host rotating through its /64 has one share.
func TestSenderNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                  "192.0.2.7",
		"::ffff:192.0.2.7":           "192.0.2.7",
		"2001:db8:1:2:aaaa::1":       "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::99": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":            "2001:db8:1:3::/64",
		"fe80::1%eth0":               "fe80::/64",
		"not an address":             "not an address",
	} {
		if got := SenderNetwork(in); got != want {
			t.Errorf("SenderNetwork(%q) = %q, want %q", in, got, want)
		}
	}
}
