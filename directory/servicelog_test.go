package directory_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestServiceLogsChanges: the directory service logs each change an
// administrator made ("administrative change", op and administrator, and
// what it was about: "home deny-users" was logged as op=home.allow-users
// alone, the home server and the direction unsaid), and
// not the reads (rvpctl home list, user show, whoami): an operator
// reading the log for who changed what finds the changes alone.
func TestServiceLogsChanges(t *testing.T) {
	f := newAdminFixture(t)
	ctx := t.Context()
	a := f.exampleAdmin(ctx)
	v, err := directory.NewAdminVerifier("org-admin-pw-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAdmin(ctx, "admin", events.RoleOrganization, nil, v); err != nil {
		t.Fatal(err)
	}
	logs := startService(t, a, f.js.Conn())

	c := &directory.Client{Conn: f.js.Conn(), Name: "admin", Password: "org-admin-pw-1"}
	if _, err := c.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HomeServers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateHomeServer(ctx, directory.HomeServerSpec{Name: "home2", Host: "imhome2.example.test", HostsUsers: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.AllowUsers(ctx, "home2", false); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `msg="administrative change" op=home.create admin=admin`) {
		t.Errorf("the change is not logged:\n%s", out)
	}
	// What it was about: which home server, and (home deny-users being
	// home.allow-users with allow false) which way.
	for _, want := range []string{"op=home.create admin=admin from=\"host ", " name=home2", "op=home.allow-users admin=admin", " name=home2 allow=false"} {
		if !strings.Contains(out, want) {
			t.Errorf("the changes' log lines do not say %q:\n%s", want, out)
		}
	}
	for _, read := range []string{"op=whoami", "op=home.list"} {
		if strings.Contains(out, read) {
			t.Errorf("a read (%s) is logged among the changes:\n%s", read, out)
		}
	}
}

// startService runs a directory service of a on nc until the test ends,
// and returns its log.
func startService(t *testing.T, a *directory.Admin, nc *nats.Conn) *lockedLog {
	t.Helper()
	logs := &lockedLog{}
	svc := &directory.Service{Admin: a, Conn: nc, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("directory service: %v", err)
		}
	})
	return logs
}

// lockedLog is a log writer safe for the service's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
