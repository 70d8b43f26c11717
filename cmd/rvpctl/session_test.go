package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/testcluster"
)

// rvpdProcess runs the rvpd binary in dev mode and returns its RVP and
// NATS addresses; the test's cleanup stops it.
func rvpdProcess(t *testing.T, password string) (httpAddr, natsURL string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rvpd")
	if out, err := osexec.Command("go", "build", "-o", bin, "../rvpd").CombinedOutput(); err != nil {
		t.Fatalf("go build rvpd: %v\n%s", err, out)
	}
	cmd := osexec.Command(bin, "dev", "-data", t.TempDir(), "-http", "127.0.0.1:0", "-nats", "127.0.0.1:0", "-demo-password", password)
	stdout, _ := cmd.StdoutPipe()
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("rvpd did not stop within 10s")
		}
		if t.Failed() {
			t.Logf("rvpd log:\n%s", stderr.String())
		}
	})
	sc := bufio.NewScanner(stdout)
	listen := regexp.MustCompile(`listening on http://(\S+)`)
	nats := regexp.MustCompile(`NATS:\s+(nats://\S+)`)
	for sc.Scan() {
		if m := listen.FindStringSubmatch(sc.Text()); m != nil {
			httpAddr = m[1]
		}
		if m := nats.FindStringSubmatch(sc.Text()); m != nil {
			natsURL = m[1]
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if httpAddr == "" || natsURL == "" {
		t.Fatalf("no addresses in rvpd's banner; log:\n%s", stderr.String())
	}
	return httpAddr, natsURL
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ctl runs rvpctl in-process with the given administrator, standard input
// and arguments, and returns its output.
type ctl struct {
	t        *testing.T
	natsURL  string
	admin    string
	password string
}

func (c ctl) run(stdin string, args ...string) (string, error) {
	out, errOut, err := c.exec(stdin, args...)
	if err != nil {
		err = errors.Join(err, errors.New(errOut))
	}
	return out, err
}

// exec runs rvpctl, returning what it wrote on stdout and on stderr.
func (c ctl) exec(stdin string, args ...string) (out, errOut string, err error) {
	env := map[string]string{"RVPCTL_NATS": c.natsURL, "RVPCTL_ADMIN": c.admin, "RVPCTL_ADMIN_PASSWORD": c.password}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = exec(ctx, args, lookup, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), err
}

func (c ctl) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, _ := c.okWarned(stdin, args...)
	return out
}

// okWarned is ok, with what the command wrote on stderr.
func (c ctl) okWarned(stdin string, args ...string) (out, warned string) {
	c.t.Helper()
	out, warned, err := c.exec(stdin, args...)
	if err != nil {
		c.t.Fatalf("rvpctl %s: %v", strings.Join(args, " "), errors.Join(err, errors.New(warned)))
	}
	return out, warned
}

func (c ctl) fails(want string, args ...string) {
	c.t.Helper()
	out, err := c.run("some-password-1\n", args...)
	if err == nil {
		c.t.Fatalf("rvpctl %s succeeded (%q); want an error containing %q", strings.Join(args, " "), out, want)
	}
	if !strings.Contains(err.Error(), want) {
		c.t.Fatalf("rvpctl %s: error %q does not contain %q", strings.Join(args, " "), err, want)
	}
}

// TestSession administers a running rvpd through rvpctl: a domain, a home
// server, a router, a user with a password who logs in over RVP, is
// disabled and refused; a domain administrator confined to its domain.
func TestSession(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd")
	}
	const orgPassword = "org-admin-pw-1"
	httpAddr, natsURL := rvpdProcess(t, orgPassword)
	org := ctl{t: t, natsURL: natsURL, admin: "admin", password: orgPassword}

	if out := org.ok("", "whoami"); !strings.Contains(out, "organization") {
		t.Errorf("whoami: %q", out)
	}
	org.fails("wrong name or password", "whoami", "-admin", "admin", "-admin-password-file", writeFile(t, "not it"))

	org.ok("", "domain", "create", "acme.test", "-nt-domain", "ACME")
	if out := org.ok("", "domain", "list"); !strings.Contains(out, "acme.test") || !strings.Contains(out, "im.acme.test") || !strings.Contains(out, "ACME") {
		t.Errorf("domain list:\n%s", out)
	}
	org.fails("already", "domain", "create", "acme.test")
	org.ok("", "home", "create", "store1", "-host", "store1.acme.test", "-no-users")
	org.ok("", "router", "create", "router-acme", "-domain", "acme.test", "-host", "im.acme.test")
	if out := org.ok("", "router", "list"); !strings.Contains(out, "router-acme") {
		t.Errorf("router list:\n%s", out)
	}
	// Errors name the fix.
	org.fails("does not host user accounts; allow it (rvpctl home allow-users store1)", "user", "enable", "dave@acme.test", "-home", "store1")
	org.fails("IM domain nowhere.test does not exist; create it first", "user", "enable", "dave@nowhere.test", "-home", "home1")
	org.fails("home server nohome does not exist", "user", "enable", "dave@acme.test", "-home", "nohome")

	org.ok("", "user", "enable", "dave@acme.test", "-home", "home1", "-name", "Dave Acme")
	org.ok("dave-password-1\n", "password", "set", "dave@acme.test")
	show := org.ok("", "user", "show", "dave@acme.test")
	for _, want := range []string{"dave@acme.test", "http://im.acme.test/instmsg/aliases/dave", "http://home1.example.test/instmsg/local/im.acme.test/instmsg/aliases/dave", "password set:", "true"} {
		if !strings.Contains(show, want) {
			t.Errorf("user show lacks %q:\n%s", want, show)
		}
	}

	// Dave logs in over RVP, with NTLMv2 and his Windows domain.
	dave := testcluster.NewClient(t, httpAddr, "dave")
	dave.UseHost("im.acme.test")
	dave.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv2, User: "dave", Domain: "ACME", Password: "dave-password-1"}
	if r := dave.Login(3600); r.Status != 200 {
		t.Fatalf("dave's login: %d %s", r.Status, r.Body)
	}
	dave.Creds.Password = "wrong"
	if r := dave.Login(3600); r.Status != 401 {
		t.Fatalf("dave's login with a wrong password: %d", r.Status)
	}
	dave.Creds.Password = "dave-password-1"
	// The operator's view: streams, consumers, and who owns home1.
	if out := org.ok("", "status"); !strings.Contains(out, "RVP_FACTS") || !strings.Contains(out, "home_home1") ||
		!regexp.MustCompile(`(?m)^home1\s+dev\s+20`).MatchString(out) {
		t.Errorf("rvpctl status:\n%s", out)
	}
	// The auditor's question, for dave now: logged in, no state set.
	if out := org.ok("", "presence", "dave@acme.test"); !strings.Contains(out, "dave@acme.test at ") ||
		!strings.Contains(out, "state: offline to others, offline to its own clients") || !strings.Contains(out, "watched by nobody") {
		t.Errorf("rvpctl presence:\n%s", out)
	}
	org.fails("want alias@domain", "presence", "dave")

	// A domain administrator of acme.test only.
	org.ok("ops-password-1\n", "admin", "add", "ops", "-role", "domain", "-domains", "acme.test")
	ops := ctl{t: t, natsURL: natsURL, admin: "ops", password: "ops-password-1"}
	ops.ok("", "user", "enable", "erin@acme.test", "-home", "home1")
	ops.fails("may not user.enable in IM domain example.test", "user", "enable", "frank@example.test", "-home", "home1")
	ops.fails("may not user.disable in IM domain example.test", "user", "disable", "alice@example.test")
	ops.fails("may not domain.create", "domain", "create", "other.test")
	ops.fails("may not firewall.set", "firewall", "set", "10.0.0.0/8")
	ops.fails("may not federation.set", "federation", "set", "on")
	ops.fails("may not home.create", "home", "create", "home9", "-host", "h9")
	ops.fails("may not admin.set", "admin", "add", "eve", "-role", "organization")
	// Dave's client names the server by a new DNS alias: not served as
	// acme.test's until the domain's administrator gives it that name.
	dave.UseHost("chat.acme.test")
	if r := dave.Login(3600); r.Status == 200 {
		t.Fatalf("dave's login by a host of no IM domain: %d %s, want it refused", r.Status, r.Body)
	}
	if out := ops.ok("", "domain", "hosts", "acme.test", "-add", "chat.acme.test,old.acme.test", "-email-add", "mail.acme.test"); !strings.Contains(out, "chat.acme.test,old.acme.test") ||
		!strings.Contains(out, "mail.acme.test") {
		t.Errorf("domain hosts -add:\n%s", out)
	}
	if r := dave.Login(3600); r.Status != 200 {
		t.Fatalf("dave's login by a host given to acme.test: %d %s", r.Status, r.Body)
	}
	if out := ops.ok("", "domain", "hosts", "acme.test", "-remove", "old.acme.test"); !strings.Contains(out, "chat.acme.test") || strings.Contains(out, "old.acme.test") {
		t.Errorf("domain hosts -remove:\n%s", out)
	}
	dave.UseHost("im.acme.test")
	ops.fails("may not domain.hosts in IM domain example.test", "domain", "hosts", "example.test", "-add", "chat.example.test")
	ops.fails("cannot be removed", "domain", "hosts", "acme.test", "-remove", "im.acme.test")
	ops.fails("give the host names to add or remove", "domain", "hosts", "acme.test")
	ops.fails("home server store1 does not host user accounts", "user", "move", "erin@acme.test", "-home", "store1")
	ops.fails("already on home server home1", "user", "move", "erin@acme.test", "-home", "home1")
	ops.fails("may not user.move in IM domain example.test", "user", "move", "alice@example.test", "-home", "home1")
	org.ok("", "home", "allow-users", "store1")
	if out, warned := ops.okWarned("", "user", "move", "erin@acme.test", "-home", "store1"); !strings.Contains(out, "erin@acme.test moved to home server store1") ||
		!strings.Contains(warned, "no node serves home server store1") {
		t.Errorf("user move to store1, which no node serves:\n%s\nstderr:\n%s", out, warned)
	}
	if out := ops.ok("", "user", "show", "erin@acme.test"); !strings.Contains(out, "http://store1.acme.test/instmsg/local/im.acme.test/instmsg/aliases/erin") {
		t.Errorf("a moved user's physical URL:\n%s", out)
	}
	// Taking store1 out of service: every user on it moves back.
	org.fails("give the home server to move them to", "home", "move-users", "store1")
	if out, warned := org.okWarned("", "home", "move-users", "store1", "-home", "home1"); !strings.Contains(out, "erin@acme.test moved") ||
		!strings.Contains(out, "1 user of home server store1 moved to home1") || strings.Contains(warned, "no node serves") {
		t.Errorf("home move-users to home1, which rvpd dev serves:\n%s\nstderr:\n%s", out, warned)
	}
	if out := ops.ok("", "user", "show", "erin@acme.test"); !strings.Contains(out, "http://home1.example.test/instmsg/local/im.acme.test/instmsg/aliases/erin") {
		t.Errorf("a user moved back:\n%s", out)
	}
	if out := ops.ok("", "user", "list"); !strings.Contains(out, "erin@acme.test") || strings.Contains(out, "alice@example.test") {
		t.Errorf("a domain administrator's user list shows other domains or misses its own:\n%s", out)
	}

	// Organisation settings.
	org.ok("", "firewall", "set", "10.0.0.0/8,192.168.1.7/24")
	org.ok("", "federation", "set", "on")
	if out := org.ok("", "federation", "show"); !strings.Contains(out, "10.0.0.0/8, 192.168.1.0/24") || !strings.Contains(out, "true") {
		t.Errorf("settings:\n%s", out)
	}

	// Disabled, dave is refused at his next login.
	ops.ok("", "user", "disable", "dave@acme.test")
	if r := dave.Login(3600); r.Status != 404 {
		t.Fatalf("a disabled user's login: %d %s, want 404", r.Status, r.Body)
	}
	// The audit shows who did it.
	if out := org.ok("", "audit", "-type", "user.disabled"); !strings.Contains(out, "admin:ops") || !strings.Contains(out, "dave@acme.test") {
		t.Errorf("audit of the disabling:\n%s", out)
	}
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
