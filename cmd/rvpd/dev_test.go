package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/testcluster"
)

// syncBuffer is an io.Writer safe for concurrent use that can be waited on.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wake: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.wake)
	b.wake = make(chan struct{})
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitMatch waits until re matches the buffer, and returns the submatches.
func (b *syncBuffer) waitMatch(re *regexp.Regexp, d time.Duration, failed <-chan error) ([]string, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		wake := b.wake
		b.mu.Unlock()
		if m != nil {
			return m, nil
		}
		select {
		case <-wake:
		case err := <-failed:
			return nil, errors.Join(errors.New("stopped before it served"), err)
		case <-deadline.C:
			return nil, fmt.Errorf("no %q in its output in time", re)
		}
	}
}

// devProc is `rvpd dev` running inside the test process, through the
// same exec function main calls.
type devProc struct {
	addr    string // host:port of the RVP listener
	natsURL string // "" when started without a NATS listener
	stdout  *syncBuffer
	stderr  *syncBuffer
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

var (
	listenRE = regexp.MustCompile(`listening on http://(\S+)`)
	natsRE   = regexp.MustCompile(`NATS:\s+(nats://\S+)`)
)

// startDev runs rvpd dev on data with short minimum leases and lifetimes
// (so tests can watch them lapse) and waits until it serves.
func startDev(t *testing.T, data string, extra ...string) *devProc {
	t.Helper()
	args := append([]string{"dev", "-data", data, "-http", "127.0.0.1:0", "-nats", "127.0.0.1:0",
		"-lease.min", "1s", "-sub.min-lifetime", "1s", "-demo-password", testPassword, "-log.level", "debug"}, extra...)
	p, m := startExec(t, args, listenRE)
	p.addr = m[1]
	if n := natsRE.FindStringSubmatch(p.stdout.String()); n != nil {
		p.natsURL = n[1]
	}
	p.waitHomeServing(t)
	return p
}

// waitHomeServing waits until the process's home node serves. The
// gateway listens before (the node takes its lease, catches up, and on
// a takeover appends its fence): a test that reads the streams' ends, or
// the metrics, as they were before its requests waits for it.
func (p *devProc) waitHomeServing(t *testing.T) {
	t.Helper()
	if _, err := p.stderr.waitMatch(homeServingRE, 60*time.Second, nil); err != nil {
		t.Fatalf("rvpd dev: its home node: %v\nstderr:\n%s", err, tail(p.stderr.String(), 50))
	}
}

// homeServingRE matches the log line of a home node that serves.
var homeServingRE = regexp.MustCompile(`msg="home node serving"`)

// startExec runs rvpd with args inside the test process, through the same
// exec function main calls, and waits until its output matches ready; the
// match is returned. The test's cleanup stops it.
func startExec(t *testing.T, args []string, ready *regexp.Regexp) (*devProc, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &devProc{stdout: newSyncBuffer(), stderr: newSyncBuffer(), cancel: cancel, done: make(chan error, 1)}
	noEnv := func(string) (string, bool) { return "", false }
	go func() { p.done <- exec(ctx, args, noEnv, p.stdout, p.stderr) }()
	failed := make(chan error, 1)
	go func() {
		// Forward an early exit to waitMatch without consuming p.done
		// for good.
		select {
		case err := <-p.done:
			p.done <- err
			failed <- err
		case <-ctx.Done():
		}
	}()
	m, err := p.stdout.waitMatch(ready, 60*time.Second, failed)
	if err != nil {
		cancel()
		t.Fatalf("rvpd %s: %v\nstderr:\n%s", args[0], err, p.stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rvpd %s log:\n%s", args[0], tail(p.stderr.String(), 200))
		}
		p.stop(t)
	})
	return p, m
}

// buildRvpd builds the rvpd binary for tests that run it as a process.
func buildRvpd(t *testing.T) string { return buildCommand(t, ".", "rvpd") }

// buildCommand builds the command in dir (relative to this package) as
// name, for tests that run it as an operator would.
func buildCommand(t *testing.T, dir, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs " + name)
	}
	bin := filepath.Join(t.TempDir(), name)
	if out, err := osexec.Command("go", "build", "-o", bin, dir).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// stop cancels the process and waits until exec returns, which must be
// within a few seconds and without an error.
func (p *devProc) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("rvpd dev: %v", err)
		}
	case <-time.After(10 * time.Second):
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Fatalf("rvpd dev did not stop within 10s; goroutines:\n%s", b.String())
	}
}

// testPassword is the demo password the tests' rvpd dev runs with.
const testPassword = "test-secret-pw"

// newClient returns a simulated client of alias that signs in with NTLMv1,
// as librvp does.
func newClient(t *testing.T, server, alias string) *testcluster.Client {
	c := testcluster.NewClient(t, server, alias)
	c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: alias, Domain: demoNTDomain, Password: testPassword}
	return c
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
