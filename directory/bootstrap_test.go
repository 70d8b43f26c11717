package directory_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

func newKeyring(t testing.TB) *directory.Keyring {
	t.Helper()
	key := make([]byte, directory.KeySize)
	rand.Read(key)
	k, err := directory.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestInit initialises an empty three-server cluster: R3 streams and
// lease bucket, the cluster's record with its key check, the first
// administrator, domain and home server. Run again, or at the same time
// as another, it refuses; a node's key is checked against the record.
func TestInit(t *testing.T) {
	nats := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})
	nc := nats.Connect("init")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := newKeyring(t)
	v, err := directory.NewAdminVerifier("first-admin-pw")
	if err != nil {
		t.Fatal(err)
	}
	spec := directory.InitSpec{
		Streams: projections.StreamOptions{Replicas: 3, LeaseTTL: 5 * time.Second},
		Admin:   "root", Verifier: v,
		Domain: &directory.DomainSpec{Domain: "acme.test", IMHost: "im.acme.test"},
		Home:   &directory.HomeServerSpec{Name: "home1", Host: "imhome1.acme.test", HostsUsers: true},
	}

	// Two at once: one sets the cluster up, the other is refused.
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = directory.Init(ctx, js, k, spec) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, directory.ErrInitialized):
			t.Errorf("concurrent init: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of two concurrent inits succeeded (%v)", ok, errs)
	}

	for _, name := range []string{events.StreamRequests, events.StreamDirectory, events.StreamLookups, "KV_" + events.BucketOwners} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s: %d replicas, want 3", name, r)
		}
	}
	kv, err := js.KeyValue(ctx, events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.TTL() != 5*time.Second {
		t.Errorf("lease bucket TTL %v, want 5s", st.TTL())
	}
	c, err := directory.ReadCluster(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if c.Created == nil || c.Created.KeyCheck != k.KeyCheck() || c.Created.Replicas != 3 || strings.Join(c.Admins, ",") != "root" {
		t.Fatalf("cluster record %+v, administrators %v", c.Created, c.Admins)
	}

	// What init wrote is the directory every role follows.
	db, err := projections.Open("dir", projections.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir, _ := projections.OpenDirectory(db)
	err = projections.WhileFollowing(ctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}, dir, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	adm, _ := dir.Administrator("root")
	dom, _ := dir.Domain("acme.test")
	hs, _ := dir.HomeServer("home1")
	if adm == nil || adm.Role != events.RoleOrganization || dom == nil || dom.NTDomain != "ACME" || hs == nil || hs.Host != "imhome1.acme.test" {
		t.Fatalf("directory after init: admin %+v, domain %+v, home %+v", adm, dom, hs)
	}
	opened, err := k.OpenAdminVerifier(adm.Verifiers, "root")
	if err != nil || !opened.Check("first-admin-pw") {
		t.Errorf("the administrator's verifier: %v", err)
	}

	// Again: refused, saying by whom and what to do; nothing written.
	seq := dir.Position()
	err = directory.Init(ctx, js, k, spec)
	if !errors.Is(err, directory.ErrInitialized) || !strings.Contains(err.Error(), "rvpctl") || !strings.Contains(err.Error(), "root") {
		t.Errorf("a second init: %v", err)
	}
	if st, _ := js.Stream(ctx, events.StreamDirectory); st.CachedInfo().State.LastSeq != seq {
		t.Errorf("a refused init wrote to the directory: %d → %d", seq, st.CachedInfo().State.LastSeq)
	}

	// Nodes check their key.
	if err := directory.CheckKey(ctx, js, k); err != nil {
		t.Errorf("the cluster's own key: %v", err)
	}
	if err := directory.CheckKey(ctx, js, newKeyring(t)); err == nil || !strings.Contains(err.Error(), "not the one this cluster was initialised with") {
		t.Errorf("another key: %v", err)
	}
}

// TestInitRefusesDevCluster: a cluster with administrators but no record
// of rvpd init (set up by rvpd dev) is initialised already.
func TestInitRefusesDevCluster(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	v, _ := directory.NewAdminVerifier("pw-12345")
	if err := c.Admin.SetAdmin(t.Context(), "admin", events.RoleOrganization, nil, v); err != nil {
		t.Fatal(err)
	}
	err := directory.Init(t.Context(), c.JS, c.Keyring, directory.InitSpec{Admin: "other", Verifier: v})
	if !errors.Is(err, directory.ErrInitialized) || !strings.Contains(err.Error(), "rvpd dev") {
		t.Errorf("init of a dev cluster: %v", err)
	}
}
