package testcluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// siteDirectory is a directory projection of a site, fed by its copy of
// the hub's directory stream, with the copier running.
type siteDirectory struct {
	dir *projections.Directory
	js  jetstream.JetStream
}

func startSiteDirectory(t *testing.T, top *Topology, site string) *siteDirectory {
	t.Helper()
	s := top.Sites[site]
	nc := s.Connect("dir-" + site)
	js, _ := jetstream.New(nc)
	hub, err := jetstream.NewWithDomain(nc, top.Hub.Name)
	if err != nil {
		t.Fatal(err)
	}
	background(t, func(ctx context.Context) {
		projections.CopyDirectory(ctx, projections.CopyConfig{Site: site, Local: js, Hub: hub, Poll: 200 * time.Millisecond, Logger: quiet()})
	})
	return &siteDirectory{dir: followDirectory(t, js, site), js: js}
}

// followDirectory follows the directory stream js reaches into a new
// projection until the test ends, again whenever following stops.
func followDirectory(t *testing.T, js jetstream.JetStream, name string) *projections.Directory {
	t.Helper()
	db, err := projections.Open(filepath.Join(t.TempDir(), name), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	background(t, func(ctx context.Context) {
		for ctx.Err() == nil {
			projections.Follow(ctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: quiet()}, dir)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return dir
}

// background runs f until the test ends, and waits for it then.
func background(t *testing.T, f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func ensureSite(t *testing.T, top *Topology, s *SiteNATS) {
	t.Helper()
	js := s.JetStream("ensure-" + s.Name)
	if err := projections.EnsureStreams(context.Background(), js, projections.StreamOptions{Site: s.Name, Hub: top.Hub.Name}); err != nil {
		t.Fatalf("streams of site %s: %v", s.Name, err)
	}
}

// TestSiteStreams lays out the streams of a hub and two sites (docs/sites.md)
// and shows what stays in a site and what crosses: the lease buckets and
// lookups stay apart, a directory write made at a site is stored at the
// hub, and each site's copy holds it under the hub's sequence.
func TestSiteStreams(t *testing.T) {
	top := StartTopology(t, TopologyOptions{})
	ctx := context.Background()
	for _, s := range []*SiteNATS{top.Hub, top.Sites["a"], top.Sites["b"]} {
		ensureSite(t, top, s)
	}
	hubJS := top.Hub.JetStream("hub")
	dirA, dirB := startSiteDirectory(t, top, "a"), startSiteDirectory(t, top, "b")

	// The lease buckets have one name and stay apart.
	kvA, err := dirA.js.KeyValue(ctx, events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvA.Put(ctx, events.OwnerKey("home1"), []byte("node-a")); err != nil {
		t.Fatal(err)
	}
	kvB, err := dirB.js.KeyValue(ctx, events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kvB.Get(ctx, events.OwnerKey("home1")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("site b's lease bucket holds site a's lease: %v %v", e, err)
	}

	// A lookup of a gateway at a is stored at a only.
	ack, err := dirA.js.Publish(ctx, events.LookupSubject("a"), []byte("{}"))
	if err != nil || ack.Domain != "a" {
		t.Fatalf("lookup at a: %+v, %v", ack, err)
	}
	if n := LastSeq(t, dirB.js, events.StreamLookups); n != 0 {
		t.Errorf("site b's lookups stream holds %d lookups of site a", n)
	}

	// An administrator at site a writes through the hub.
	hubFromA, err := jetstream.NewWithDomain(top.Sites["a"].Connect("admin-a"), top.Hub.Name)
	if err != nil {
		t.Fatal(err)
	}
	admin := &directory.Admin{JetStream: hubFromA, Directory: dirA.dir, Actor: "test"}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := admin.CreateDomain(wctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateHomeServer(wctx, "home2", "imhome2.example.test", "b", true); err != nil {
		t.Fatal(err)
	}
	hubSeq := LastSeq(t, hubJS, events.StreamDirectory)
	if hubSeq != 2 {
		t.Fatalf("the hub's directory holds %d events, want 2", hubSeq)
	}
	for _, site := range []string{"a", "b"} {
		js := map[string]*siteDirectory{"a": dirA, "b": dirB}[site]
		Eventually(t, 10*time.Second, func() error {
			if n := LastSeq(t, js.js, events.StreamDirectory); n != hubSeq {
				return fmt.Errorf("site %s's copy at %d, the hub at %d", site, n, hubSeq)
			}
			return nil
		})
		st, err := js.js.Stream(ctx, events.StreamDirectory)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(ctx, events.HomeServerSubject("home2"))
		if err != nil || m.Sequence != 2 || m.Header.Get(events.HeaderType) == "" {
			t.Errorf("site %s's copy of home2: %+v, %v; want sequence 2 with its type", site, m, err)
		}
		if err := js.dir.WaitFor(wctx, hubSeq); err != nil {
			t.Fatal(err)
		}
		if hs, err := js.dir.HomeServer("home2"); err != nil || hs == nil || hs.Site != "b" {
			t.Errorf("site %s's directory: home2 = %+v, %v", site, hs, err)
		}
	}
}

// TestSiteCutOffDirectory cuts site b off the hub (its leaf connection
// severed, then its server stopped): b keeps its directory, a write made
// from b fails at once, and a user the hub's administrator creates
// meanwhile reaches b when it is back.
func TestSiteCutOffDirectory(t *testing.T) {
	top := StartTopology(t, TopologyOptions{})
	ctx := context.Background()
	for _, s := range []*SiteNATS{top.Hub, top.Sites["a"], top.Sites["b"]} {
		ensureSite(t, top, s)
	}
	dirHub := followDirectory(t, top.Hub.JetStream("dir-hub"), "hub")
	dirB := startSiteDirectory(t, top, "b")
	admin := &directory.Admin{JetStream: top.Hub.JetStream("admin"), Directory: dirHub, Actor: "test"}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := admin.CreateDomain(wctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateHomeServer(wctx, "home2", "imhome2.example.test", "b", true); err != nil {
		t.Fatal(err)
	}
	addUser := func(alias string) events.User {
		t.Helper()
		u := events.NewUser("example.test", alias)
		if err := admin.EnableUser(wctx, directory.UserSpec{User: u, Home: "home2"}); err != nil {
			t.Fatal(err)
		}
		return u
	}
	hasUser := func(dir *projections.Directory, u events.User) func() error {
		return func() error {
			rec, err := dir.User(u)
			if err != nil || rec == nil {
				return fmt.Errorf("%s not in the directory (%v)", u, err)
			}
			return nil
		}
	}
	bob := addUser("bob")
	Eventually(t, 10*time.Second, hasUser(dirB.dir, bob))

	for _, cut := range []struct {
		name      string
		off, back func()
	}{
		{"severed", top.Sites["b"].Sever, top.Sites["b"].Heal},
		{"stopped", top.Sites["b"].Stop, top.Sites["b"].Start},
	} {
		cut.off()
		Eventually(t, 10*time.Second, func() error {
			if top.Reachable(top.Hub, "b") == nil {
				return errors.New("the hub still reaches b")
			}
			return nil
		})
		u := addUser("new-while-" + cut.name)
		if cut.name == "severed" {
			// b keeps what it has, and cannot write.
			if err := hasUser(dirB.dir, bob)(); err != nil {
				t.Fatal(err)
			}
			hubFromB, _ := jetstream.NewWithDomain(top.Sites["b"].Connect("admin-b"), top.Hub.Name)
			start := time.Now()
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := hubFromB.Publish(pctx, events.UserSubject(events.NewUser("example.test", "x")), []byte("{}"))
			pcancel()
			if !errors.Is(err, jetstream.ErrNoStreamResponse) {
				t.Errorf("a directory write from a site cut off: %v, want %v", err, jetstream.ErrNoStreamResponse)
			}
			t.Logf("a directory write from b, cut off, failed after %v: %v", time.Since(start), err)
			if err := hasUser(dirB.dir, u)(); err == nil {
				t.Fatalf("%s reached b while it was cut off", u)
			}
		}
		back := time.Now()
		cut.back()
		top.Sites["b"].WaitConnected()
		Eventually(t, 20*time.Second, func() error {
			if err := hasUser(dirB.dir, u)(); err != nil {
				return fmt.Errorf("%w (b reaches the hub: %v); b's copy at %d, the hub's at %d, b's projection at %d", err, top.Reachable(top.Sites["b"], top.Hub.Name), LastSeq(t, dirB.js, events.StreamDirectory), LastSeq(t, top.Hub.JetStream("x"), events.StreamDirectory), dirB.dir.Position())
			}
			return nil
		})
		t.Logf("%s: the user created at the hub meanwhile reached b %v after it was back", cut.name, time.Since(back))
	}
}
