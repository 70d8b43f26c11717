package testcluster

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The interop tests drive Pidgin's RVP plugin (librvp, Debian's
// pidgin-librvp) through rvpdriver, a headless libpurple program in
// testcluster/librvp. They run when libpurple and librvp are installed and
// are skipped visibly otherwise; with RVP_INTEROP=1 (make interop) a
// missing client fails the test instead.

const pluginPath = "/usr/lib/x86_64-linux-gnu/purple-2/librvp.so"

var (
	driverOnce sync.Once
	driverPath string
	driverErr  error
)

// InteropRequired reports whether the interop tests must run (make
// interop) rather than skip when the real client is missing.
func InteropRequired() bool { return os.Getenv("RVP_INTEROP") == "1" }

// Driver builds rvpdriver once per test binary and returns its path. It
// skips the test (or fails it, under make interop) when libpurple, librvp
// or a C compiler is missing.
func Driver(t testing.TB) string {
	t.Helper()
	driverOnce.Do(func() { driverPath, driverErr = buildDriver() })
	if driverErr != nil {
		if InteropRequired() {
			t.Fatalf("the real RVP client cannot run: %v", driverErr)
		}
		t.Skipf("SKIPPED, the real RVP client cannot run: %v (install pidgin-librvp, libpurple-dev, libgcrypt20-dev, gcc, pkg-config; make interop requires it)", driverErr)
	}
	return driverPath
}

func buildDriver() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "librvp", "rvpdriver.c")
	code, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(pluginPath); err != nil {
		return "", fmt.Errorf("librvp not installed (%s)", pluginPath)
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "purple").Output()
	if err != nil {
		return "", fmt.Errorf("pkg-config purple: %v (libpurple-dev missing?)", err)
	}
	sum := sha256.Sum256(append(code, flags...))
	out := filepath.Join(os.TempDir(), "rvpdriver-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	// Built under a name of this process's own: the test binaries of
	// several packages (go test ./cmd/rvpd ./testcluster) build it at
	// once, and one's rename took the other's file from under it.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	args := append([]string{"-O1", "-Wall", "-o", tmp, src}, strings.Fields(string(flags))...)
	args = append(args, "-lgcrypt", "-ldl", "-rdynamic")
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build rvpdriver: %v\n%s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// Pidgin is one librvp client, signed on through rvpdriver.
type Pidgin struct {
	t     testing.TB
	Name  string // alias@domain
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu    sync.Mutex
	lines []string
	wake  chan struct{}
	done  chan struct{}
}

// PidginOptions configure a client.
type PidginOptions struct {
	User     string // alias@domain
	Password string
	Server   string // host:port the SRV lookup of the domain answers
	Domain   string // the "Auth Domain" option (the Windows domain)
	// MyHost is the "My Hostname" option, the host of the client's
	// Call-Back. Default 127.0.0.1.
	MyHost string
	Debug  bool // libpurple's debug log to the test log
}

// StartPidgin starts a librvp client; the test's cleanup stops it.
func StartPidgin(t testing.TB, o PidginOptions) *Pidgin {
	t.Helper()
	args := []string{"-user", o.User, "-password", o.Password, "-server", o.Server, "-domain", o.Domain, "-dir", t.TempDir()}
	if o.MyHost != "" {
		args = append(args, "-myhost", o.MyHost)
	}
	if o.Debug {
		args = append(args, "-debug")
	}
	p := &Pidgin{t: t, Name: o.User, cmd: exec.Command(Driver(t), args...), wake: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	if o.Debug {
		p.cmd.Stderr = &stderr
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.wake)
			p.wake = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.Quit()
		if t.Failed() {
			t.Logf("%s's events:\n  %s", p.Name, strings.Join(p.Lines(), "\n  "))
			if o.Debug {
				t.Logf("%s's libpurple log:\n%s", p.Name, stderr.String())
			}
		}
	})
	p.Wait(10*time.Second, "^READY$")
	return p
}

// Do sends a command to the driver.
func (p *Pidgin) Do(cmd string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		p.t.Fatalf("%s: command %q: %v", p.Name, cmd, err)
	}
}

// Lines returns the events printed so far.
func (p *Pidgin) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Wait waits for an event matching the regular expression and returns it.
func (p *Pidgin) Wait(d time.Duration, pattern string) string {
	p.t.Helper()
	line, _ := p.WaitFrom(0, d, pattern)
	return line
}

// WaitFrom waits for an event at index from or later matching pattern, and
// returns it with its index.
func (p *Pidgin) WaitFrom(from int, d time.Duration, pattern string) (string, int) {
	p.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	find := func() (string, int, chan struct{}) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := from; i < len(p.lines); i++ {
			if re.MatchString(p.lines[i]) {
				return p.lines[i], i, nil
			}
		}
		return "", -1, p.wake
	}
	for {
		line, i, wake := find()
		if i >= 0 {
			return line, i
		}
		select {
		case <-wake:
		case <-p.done:
			// Every line is in once the driver has exited: one more look.
			if line, i, _ := find(); i >= 0 {
				return line, i
			}
			p.t.Fatalf("%s exited without %q; events:\n  %s", p.Name, pattern, strings.Join(p.Lines(), "\n  "))
		case <-deadline.C:
			p.t.Fatalf("%s: no %q within %v; events:\n  %s", p.Name, pattern, d, strings.Join(p.Lines(), "\n  "))
		}
	}
}

// Count returns how many events match pattern.
func (p *Pidgin) Count(pattern string) int {
	re := regexp.MustCompile(pattern)
	n := 0
	for _, l := range p.Lines() {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// Quit signs the client off and waits for the driver to exit.
func (p *Pidgin) Quit() {
	select {
	case <-p.done:
	default:
		io.WriteString(p.stdin, "quit\n")
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.cmd.Wait()
}

// Befriend waits until a and b have signed on, has each add the other as a
// buddy, and waits until each sees the other online.
func Befriend(d time.Duration, a, b *Pidgin) {
	a.t.Helper()
	a.Wait(d, "^SIGNED_ON$")
	b.Wait(d, "^SIGNED_ON$")
	a.Do("add " + b.Name)
	b.Do("add " + a.Name)
	a.Wait(d, `^PRESENCE `+regexp.QuoteMeta(b.Name)+` online 1$`)
	b.Wait(d, `^PRESENCE `+regexp.QuoteMeta(a.Name)+` online 1$`)
}
