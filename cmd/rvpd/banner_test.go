package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestBannerWithoutNATSListener: rvpd dev -nats "" has no NATS listener,
// and its banner says so without offering a nats CLI command that names
// none as a server ("nats --server none (-nats \"\") stream ls").
func TestBannerWithoutNATSListener(t *testing.T) {
	ns, err := server.NewServer(&server.Options{DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printBanner(&b, "127.0.0.1:8080", ns, "./data", "pw", "ntlm")
	var line string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, "NATS:") {
			line = l
		}
	}
	if !strings.Contains(line, "none") || strings.Contains(line, "--server") {
		t.Errorf("banner's NATS line without a listener: %q", line)
	}
}
