package directory_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// serviceFixture is a directory service (one rvpd node's) over the
// fixture's NATS server, with the organisation administrator root, the IM
// domain example.test and the home server home1; client returns an
// rvpctl of root's.
type serviceFixture struct {
	*adminFixture
	admin *directory.Admin
	svc   *directory.Service
	conn  *nats.Conn
}

func newServiceFixture(t *testing.T, ctx context.Context) *serviceFixture {
	t.Helper()
	f := newAdminFixture(t)
	a := f.exampleAdmin(ctx)
	v, err := directory.NewAdminVerifier("root-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAdmin(ctx, "root", events.RoleOrganization, nil, v); err != nil {
		t.Fatal(err)
	}
	nc := f.js.Conn()
	svc := &directory.Service{Admin: a, Conn: nc}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := svc.Run(runCtx); err != nil {
			t.Errorf("directory service: %v", err)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	return &serviceFixture{adminFixture: f, admin: a, svc: svc, conn: nc}
}

func (f *serviceFixture) client() *directory.Client {
	return &directory.Client{Conn: f.conn, Name: "root", Password: "root-pw"}
}

// hold makes the next directory event the service's administrators stamp
// wait until release is called; entered is closed once one does.
func (f *serviceFixture) hold() (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	armed.Store(true)
	f.admin.Now = func() time.Time {
		if armed.CompareAndSwap(true, false) {
			close(in)
			<-out
		}
		return time.Now()
	}
	var once sync.Once
	release = func() { once.Do(func() { close(out) }) }
	f.t.Cleanup(release)
	return in, release
}

// TestServiceAnswersWhileAChangeIsSlow: one administrator's request that
// takes long (an import of a thousand users, a change waiting for this
// node's directory to catch up, a fenced change retried while an import
// appends) must not hold every other administrator's: the service
// answered one request at a time, and an "rvpctl user show" or "rvpctl
// whoami" sent meanwhile waited for it to end, up to its 30 s, and then
// found its own 30 s spent ("ask the directory service: context deadline
// exceeded (is rvpd running?)"). Here the import is held at its first
// event; another administrator's reads, and a change of another user,
// must be answered meanwhile.
func TestServiceAnswersWhileAChangeIsSlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	f := newServiceFixture(t, ctx)
	alice := events.NewUser("example.test", "alice")
	if err := f.admin.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	importer, other := f.client(), f.client()

	entered, release := f.hold()
	var spec directory.ImportSpec
	for i := range 50 {
		spec.Users = append(spec.Users, directory.ImportUser{Spec: directory.UserSpec{User: events.NewUser("example.test", fmt.Sprintf("user%d", i)), Home: "home1"}})
	}
	var importErr error
	var results []directory.ImportResult
	var wg sync.WaitGroup
	wg.Go(func() { results, importErr = importer.ImportUsers(ctx, spec) })
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the import never reached its first event")
	}

	// What should take milliseconds is given seconds.
	octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
	start := time.Now()
	sum, err := other.User(octx, alice)
	if err != nil {
		t.Errorf("rvpctl user show during an import: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
	} else if !sum.Enabled {
		t.Errorf("alice: %+v", sum)
	}
	bob := events.NewUser("example.test", "bob")
	if err := other.EnableUser(octx, directory.UserSpec{User: bob, Home: "home1"}); err != nil {
		t.Errorf("rvpctl user enable bob during an import: %v", err)
	}
	ocancel()

	release()
	wg.Wait()
	if importErr != nil {
		t.Fatalf("the import: %v", importErr)
	}
	for i, r := range results {
		if r.Outcome != directory.ImportCreated || r.Error != "" {
			t.Errorf("user%d: %+v", i, r)
		}
	}
}

// TestServiceDeleteAndEnableAtOnce: two administrators, through one
// directory service that now carries out their requests at once, delete
// an IM domain (or a home server) while the other enables a user in it
// (on it), or moves one to it. One of the two must fail: never a user
// enabled in a domain, or homed on a home server, that no longer exists.
func TestServiceDeleteAndEnableAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	f := newServiceFixture(t, ctx)
	deleter, enabler := f.client(), f.client()
	bob := events.NewUser("example.test", "bob")
	if err := f.admin.EnableUser(ctx, directory.UserSpec{User: bob, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	both, deleted, changed := 0, 0, 0
	for i := range 30 {
		dom, home := fmt.Sprintf("d%d.test", i), fmt.Sprintf("h%d", i)
		if err := f.admin.CreateDomain(ctx, directory.DomainSpec{Domain: dom, IMHost: "im." + dom}); err != nil {
			t.Fatal(err)
		}
		if err := f.admin.CreateHomeServer(ctx, home, home+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
		var u events.User
		var delErr, enErr error
		var wg sync.WaitGroup
		switch i % 3 {
		case 0: // a user enabled in the domain deleted
			u = events.NewUser(dom, "alice")
			wg.Go(func() { delErr = deleter.DeleteDomain(ctx, dom) })
			wg.Go(func() { enErr = enabler.EnableUser(ctx, directory.UserSpec{User: u, Home: "home1"}) })
		case 1: // a user enabled on the home server deleted
			u = events.NewUser("example.test", "u"+home)
			wg.Go(func() { delErr = deleter.DeleteHomeServer(ctx, home) })
			wg.Go(func() { enErr = enabler.EnableUser(ctx, directory.UserSpec{User: u, Home: home}) })
		case 2: // bob moved to the home server deleted
			u = bob
			wg.Go(func() { delErr = deleter.DeleteHomeServer(ctx, home) })
			wg.Go(func() { enErr = enabler.MoveUser(ctx, bob, home) })
		}
		wg.Wait()
		if delErr == nil {
			deleted++
		}
		if enErr == nil {
			changed++
		}
		if delErr == nil && enErr == nil {
			both++
			t.Errorf("round %d: both the deletion and the change of %s succeeded", i, u)
		}
		// Whatever won, the directory holds no user where nothing is.
		if err := f.admin.SetInternetCapable(ctx, false); err != nil { // catches the projection up
			t.Fatal(err)
		}
		rec, _ := f.admin.Directory.User(u)
		if rec != nil && rec.Enabled {
			d, _ := f.admin.Directory.Domain(u.Domain)
			h, _ := f.admin.Directory.HomeServer(rec.Home)
			if d == nil || h == nil {
				t.Errorf("round %d: %s enabled on %s in %s, one of which is deleted (deletion: %v; change: %v)", i, u, rec.Home, u.Domain, delErr, enErr)
			}
		}
		if i%3 == 2 && enErr == nil { // bob back on home1 for the next round
			if err := f.admin.MoveUser(ctx, bob, "home1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("of 30 rounds: %d deletions and %d changes made; %d both", deleted, changed, both)
}
