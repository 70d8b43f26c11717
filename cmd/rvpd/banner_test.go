package main

import (
	"bytes"
	osexec "os/exec"
	"regexp"
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

// TestBannerRvpctlCommand: the rvpctl command the banner offers for the
// demo administrator is one rvpctl takes (its administrator flag follows
// the command: "rvpctl -admin admin" is refused with rvpctl's usage). Run
// with no password to give, it gets as far as asking for one.
func TestBannerRvpctlCommand(t *testing.T) {
	rvpctl := buildCommand(t, "../rvpctl", "rvpctl")
	ns, err := server.NewServer(&server.Options{DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printBanner(&b, "127.0.0.1:8080", ns, "./data", "pw", "ntlm")
	m := regexp.MustCompile(`\(rvpctl ([^)]*)\)`).FindStringSubmatch(b.String())
	if m == nil {
		t.Fatalf("the banner offers no rvpctl command:\n%s", b.String())
	}
	cmd := osexec.Command(rvpctl, strings.Fields(m[1])...)
	cmd.Env = []string{"RVPCTL_NATS=nats://127.0.0.1:1"} // nothing listens; no password given
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "flag provided but not defined") || strings.Contains(string(out), "usage:") ||
		!strings.Contains(string(out), "no password for administrator admin") {
		t.Errorf("rvpctl %s, as the banner offers it:\n%s", m[1], out)
	}
}
