package rvp

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://IM.EXAMPLE.COM:80/instmsg/aliases/bob/": "http://im.example.com/instmsg/aliases/bob",
		" http://im.example.com/instmsg/aliases/Bob ":   "http://im.example.com/instmsg/aliases/Bob",
		"http://127.0.0.1:18180/instmsg/aliases/alice":  "http://127.0.0.1:18180/instmsg/aliases/alice",
		"http://10.0.0.21:3044":                         "http://10.0.0.21:3044",
		"HTTP://10.0.0.30/":                             "http://10.0.0.30",
		"http://[::1]:80/x?y#z":                         "http://[::1]/x",
		"http://[::1]:8080/x":                           "http://[::1]:8080/x",
		"http://IM.Example.COM:8080/instmsg":            "http://im.example.com:8080/instmsg",
		// A name written in full is the same name.
		"http://IM.Example.COM./instmsg/aliases/bob": "http://im.example.com/instmsg/aliases/bob",
		"http://im.example.com.:80/":                 "http://im.example.com",
		"http://im.example.com.:8080/x":              "http://im.example.com:8080/x",
	} {
		u, err := ParseURL(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseURL(%q) = %q, %v; want %q", in, u.String(), err, want)
		}
	}
	for _, bad := range []string{"", "im.example.com/x", "https://x/y", "http:///x", "http://a b/", "http://x:port/", "http://user@x/", "http://./", "http://0/ 0", "http://h/instmsg/aliases/a b", "http://h/a\x7f", "http://h/a\tb/"} {
		if u, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) = %q, want error", bad, u)
		}
	}
}

func TestParseNodePath(t *testing.T) {
	for in, want := range map[string]NodeRef{
		"/instmsg/aliases/Bob":     {Alias: "bob"},
		"/instmsg/aliases/bob/":    {Alias: "bob"},
		"/InstMsg/Aliases/bob":     {Alias: "bob"},
		"/aliases/bob":             {Alias: "bob"},
		"/instmsg/aliases/j%2Edoe": {Alias: "j.doe"},
		"/instmsg/local/IM.example.com/instmsg/aliases/carol":  {IMHost: "im.example.com", Alias: "carol"},
		"/instmsg/local/im.example.com:80/instmsg/aliases/bob": {IMHost: "im.example.com", Alias: "bob"},
	} {
		got, err := ParseNodePath(in)
		if err != nil || got != want {
			t.Errorf("ParseNodePath(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"/", "/instmsg/aliases/", "/instmsg/aliases/a/b", "/instmsg/local/x", "/other/bob", "/instmsg/aliases/%zz", "/instmsg/aliases/a%20b"} {
		if got, err := ParseNodePath(bad); err == nil {
			t.Errorf("ParseNodePath(%q) = %+v, want error", bad, got)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"http://im.example.com/instmsg/aliases/alice", "http://10.0.0.21:3044", "http://IM.EXAMPLE.COM:80/instmsg/aliases/bob/", "http://[::1]:8080/", "http://x:/", "http://a../x", "http://im.example.com.:8080/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			return
		}
		again, err := ParseURL(u.String())
		if err != nil || again != u {
			t.Fatalf("ParseURL(%q) = %+v, but its String %q parses to %+v, %v", s, u, u.String(), again, err)
		}
		if strings.HasSuffix(u.String(), "/") || strings.ContainsAny(u.String(), " \t\r\n") {
			t.Fatalf("normalised URL %q has a trailing slash or whitespace", u.String())
		}
	})
}

func FuzzParseNodePath(f *testing.F) {
	for _, s := range []string{"/instmsg/aliases/alice", "/aliases/bob", "/instmsg/local/im.example.com/instmsg/aliases/carol", "/instmsg/aliases/%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ref, err := ParseNodePath(p)
		if err != nil {
			return
		}
		if ref.Alias == "" || ref.Alias != strings.ToLower(ref.Alias) || strings.ContainsAny(ref.Alias, "/ \t\r\n") {
			t.Fatalf("ParseNodePath(%q) = %+v", p, ref)
		}
		// The URL built for the alias names the same node.
		back, err := ParseNodePath(strings.TrimPrefix(LogicalURL("h", ref.Alias), "http://h"))
		if err != nil || back.Alias != ref.Alias {
			t.Fatalf("LogicalURL of %q parses to %+v, %v", ref.Alias, back, err)
		}
	})
}

// TestHostnameAndDialAddr: a URL's host without its port is the same with
// and without a port, bracketed IPv6 included, and a dial address always
// has one.
func TestHostnameAndDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"http://[::1]:8080/instmsg/aliases/a": "[::1]",
		"http://[::1]/instmsg/aliases/a":      "[::1]",
		"http://im.example.test:8080/x":       "im.example.test",
		"http://im.example.test/x":            "im.example.test",
	} {
		u, err := ParseURL(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Hostname(); got != want {
			t.Errorf("ParseURL(%q).Hostname() = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"im.example.test":      "im.example.test:80",
		"im.example.test:8080": "im.example.test:8080",
		"[::1]":                "[::1]:80",
		"[::1]:8080":           "[::1]:8080",
		"::1":                  "[::1]:80",
	} {
		if got := DialAddr(in); got != want {
			t.Errorf("DialAddr(%q) = %q, want %q", in, got, want)
		}
	}
	m, err := ParseHostMap("acme.test=[::1], other.test=10.0.0.1:8080")
	if err != nil || m["acme.test"] != "[::1]:80" || m["other.test"] != "10.0.0.1:8080" {
		t.Errorf("ParseHostMap = %v, %v", m, err)
	}
}

// TestNormalizeHostPortSpellings: a port is a number, as a dialer reads
// it, so every spelling of one port is one host. Kept as written,
// host:080 was another host than host:80 and host (which the directory
// keeps), though it reaches the same server; a port above 65535, which
// no dialer takes, is refused.
func TestNormalizeHostPortSpellings(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"im.example.com:080", "im.example.com"},
		{"im.example.com:00080", "im.example.com"},
		{"im.example.com:0000080", "im.example.com"},
		{"im.example.com:08080", "im.example.com:8080"},
		{"10.0.0.21:03044", "10.0.0.21:3044"},
		{"[::1]:080", "[::1]"},
		{"[::1]:08443", "[::1]:8443"},
		{"h:0", "h:0"},
		{"h:000", "h:0"},
		{"h:65535", "h:65535"},
	} {
		if got, err := NormalizeHost(tt.in); err != nil || got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		u, err := ParseURL("http://" + tt.in + "/instmsg/aliases/bob")
		if want := "http://" + tt.want + "/instmsg/aliases/bob"; err != nil || u.String() != want {
			t.Errorf("ParseURL of host %q = %q, %v; want %q", tt.in, u.String(), err, want)
		}
	}
	for _, in := range []string{"h:65536", "h:99999", "h:123456", "[::1]:65536"} {
		if got, err := NormalizeHost(in); err == nil {
			t.Errorf("NormalizeHost(%q) = %q, want an error: no such port", in, got)
		}
	}
}

// TestParseNodePathAliasBound: an alias is bounded as it is kept, lower
// case. A path of 88 bytes that are not UTF-8 (the fuzzer's) was taken,
// each byte lower-cased into a 3-byte replacement character: an alias
// of 264 bytes, over the bound, which its own URL then failed to name,
// and which named the same node as any other 88 such bytes. So was an
// alias of 128 'Ⱥ' (256 bytes), 384 once lower-cased.
func TestParseNodePathAliasBound(t *testing.T) {
	for _, p := range []string{
		"/instmsg/aliases/" + strings.Repeat("\xb8", 88),
		"/instmsg/aliases/" + strings.Repeat("Ⱥ", 128),
		"/instmsg/aliases/al%FFice",
	} {
		if ref, err := ParseNodePath(p); err == nil {
			t.Errorf("ParseNodePath(%q) = %+v (alias of %d bytes), want an error", p, ref, len(ref.Alias))
		}
	}
	if ref, err := ParseNodePath("/instmsg/aliases/" + strings.Repeat("Ⱥ", 64)); err != nil || ref.Alias != strings.Repeat("ⱥ", 64) {
		t.Errorf("64 'Ⱥ': %+v, %v", ref, err)
	}
}

// TestParseNodePathClientAliases: what clients send still parses after
// the UTF-8 check and the bound on the lower-cased alias: ASCII aliases
// (librvp, Windows Messenger) up to MaxAliasLen bytes, in any case;
// UTF-8 names %-escaped or raw, upper case lowered; the three path
// forms.
func TestParseNodePathClientAliases(t *testing.T) {
	long := strings.Repeat("a", MaxAliasLen)
	for p, want := range map[string]NodeRef{
		"/instmsg/aliases/Alice.Smith_1-2":                     {Alias: "alice.smith_1-2"},
		"/aliases/BOB":                                         {Alias: "bob"},
		"/instmsg/local/IM.Example.COM/instmsg/aliases/Carol/": {IMHost: "im.example.com", Alias: "carol"},
		"/instmsg/aliases/Ren%C3%89":                           {Alias: "rené"},
		"/instmsg/aliases/RENÉ":                                {Alias: "rené"},
		"/instmsg/aliases/%E6%9D%8E%E5%9B%9B":                  {Alias: "李四"},
		"/instmsg/aliases/" + strings.ToUpper(long):            {Alias: long},
		"/instmsg/aliases/" + strings.Repeat("%C3%89", 128):    {Alias: strings.Repeat("é", 128)},
	} {
		if got, err := ParseNodePath(p); err != nil || got != want {
			t.Errorf("ParseNodePath(%q) = %+v, %v; want %+v", p, got, err, want)
		}
	}
	if ref, err := ParseNodePath("/instmsg/aliases/" + long + "a"); err == nil {
		t.Errorf("an alias of %d bytes taken: %+v", MaxAliasLen+1, ref)
	}
}
