package directory_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// adminFixture is a directory stream on an in-process JetStream server.
type adminFixture struct {
	t     testing.TB
	ns    *server.Server
	js    jetstream.JetStream
	stopB func() // stops the projection of twoAdmins' b following
}

func newAdminFixture(t testing.TB) *adminFixture { return newAdminFixtureOn(t, false) }

// newAdminFixtureOn is newAdminFixture, with a server listening on a
// loopback port too when listen is set (for connections of a client's own).
func newAdminFixtureOn(t testing.TB, listen bool) *adminFixture {
	t.Helper()
	var opts []natstest.Option
	if listen {
		opts = append(opts, natstest.Listen())
	}
	ns := natstest.Start(t, opts...)
	_, js := natstest.Connect(t, ns)
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &adminFixture{t: t, ns: ns, js: js}
}

// directory opens a directory projection of its own (in memory).
func (f *adminFixture) directory() *projections.Directory {
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		f.t.Fatal(err)
	}
	return dir
}

// follow feeds dir from the stream until the returned stop is called.
func (f *adminFixture) follow(dir *projections.Directory) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		err := projections.Follow(ctx, f.js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}, dir)
		if err != nil && ctx.Err() == nil {
			f.t.Errorf("directory projection stopped following: %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	f.t.Cleanup(stop)
	return stop
}

// lastEvent returns the last directory event of subject.
func (f *adminFixture) lastEvent(subject string) events.Event {
	st, err := f.js.Stream(f.t.Context(), events.StreamDirectory)
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(f.t.Context(), subject)
	if err != nil {
		f.t.Fatal(err)
	}
	ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

// exampleAdmin returns an administrator, on a directory projection that
// follows the stream, of a directory with the IM domain example.test and
// the home server home1.
func (f *adminFixture) exampleAdmin(ctx context.Context) *directory.Admin {
	f.t.Helper()
	dir := f.directory()
	f.follow(dir)
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a", Keyring: newKeyring(f.t)}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		f.t.Fatal(err)
	}
	if err := a.CreateHomeServer(ctx, "home1", "imhome1.example.test", "", true); err != nil {
		f.t.Fatal(err)
	}
	return a
}

// twoAdmins returns two administrators, each on a directory projection
// of its own that follows the stream: b's can be made to lag (lagging).
func (f *adminFixture) twoAdmins() (a, b *directory.Admin) {
	dirA, dirB := f.directory(), f.directory()
	f.follow(dirA)
	f.stopB = f.follow(dirB)
	return &directory.Admin{JetStream: f.js, Directory: dirA, Actor: "a"}, &directory.Admin{JetStream: f.js, Directory: dirB, Actor: "b"}
}

// lagging makes the change first with a once b's projection has caught
// up with a's and stopped following, then the change second with b while
// its projection lags behind the first: b's projection follows again
// once second returns, or after 300 ms. It returns second's error.
func (f *adminFixture) lagging(ctx context.Context, a, b *directory.Admin, first, second func() error) error {
	f.t.Helper()
	if err := b.Directory.WaitFor(ctx, a.Directory.Position()); err != nil {
		f.t.Fatal(err)
	}
	f.stopB()
	if err := first(); err != nil {
		f.t.Fatal(err)
	}
	return raceStale(second, func() { f.follow(b.Directory) })
}

// TestAdminStaleProjection: two directory services (two rvpd nodes),
// one of whose directory projections is behind the stream. An
// administrator moves alice from home1 to home2 through the first; another
// moves her to home3 through the second, which still sees her on home1.
// The second change was decided on what the first changed: it must fail
// as a conflict (the optimistic concurrency the directory is written
// with), or be decided on alice's record as the first left it — never
// append a move "from home1" of a user who is on home2, which sends her
// handoff to the wrong home server and loses her state.
func TestAdminStaleProjection(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b := f.twoAdmins()
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"home1", "home2", "home3"} {
		if err := a.CreateHomeServer(ctx, h, "im"+h+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
	}
	alice := events.NewUser("example.test", "alice")
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	// b's change waits for its projection to reach alice's record as a
	// left it; decided on the stale one, it would be done at once.
	errB := f.lagging(ctx, a, b, func() error { return a.MoveUser(ctx, alice, "home2") }, func() error { return b.MoveUser(ctx, alice, "home3") })

	if errB != nil {
		if !strings.Contains(errB.Error(), "changed while") && !errors.Is(errB, directory.ErrExists) {
			t.Fatalf("the second move failed otherwise than as a conflict: %v", errB)
		}
		return
	}
	mv, ok := f.lastEvent(events.UserSubject(alice)).(*events.UserMoved)
	if !ok {
		t.Fatalf("alice's last event is not a move")
	}
	if mv.From != "home2" {
		t.Errorf("the second move was appended as from %s to %s, while alice was on home2: "+
			"decided on a stale projection, and not refused as a conflict", mv.From, mv.Home)
	}
}

// TestCreateDomainsSharingAHost: two administrators create two IM
// domains claiming the same host name at once, one of them on a node
// whose projection lags. Each creation was fenced by its own domain's
// subject alone, so both were appended and the host reached two domains.
// Creations are now fenced by every domain's subject together: the second
// sees the first and is refused.
func TestCreateDomainsSharingAHost(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b := f.twoAdmins()
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "zero.test", IMHost: "im.zero.test"}); err != nil {
		t.Fatal(err)
	}
	errB := f.lagging(ctx, a, b,
		func() error {
			return a.CreateDomain(ctx, directory.DomainSpec{Domain: "one.test", IMHost: "im.one.test", Hosts: []string{"im.shared.test"}})
		},
		func() error {
			return b.CreateDomain(ctx, directory.DomainSpec{Domain: "two.test", IMHost: "im.two.test", Hosts: []string{"im.shared.test"}})
		})
	if errB == nil {
		t.Fatalf("two.test was created with im.shared.test, which one.test already has")
	}
	if !strings.Contains(errB.Error(), "already reaches") && !strings.Contains(errB.Error(), "changed while") {
		t.Errorf("the second creation failed otherwise than as a conflict: %v", errB)
	}
	st, err := f.js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := st.GetLastMsgForSubject(ctx, events.DomainSubject("two.test")); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("two.test's subject holds %v (%v)", m, err)
	}
}

// TestDeleteDomainOfDisabledUsers: an IM domain whose users are all
// disabled can be deleted. The directory has no operation that removes a
// user (a disabled user's record stays, as a home server's deletion
// knows), so an IM domain that ever had one could never be deleted, and
// the refusal told the administrator to "remove them first", which no
// command does.
func TestDeleteDomainOfDisabledUsers(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := f.directory()
	f.follow(dir)
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a"}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateHomeServer(ctx, "home1", "imhome1.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteDomain(ctx, "example.test"); err == nil || !strings.Contains(err.Error(), "alice") && !strings.Contains(err.Error(), "1 ") {
		t.Fatalf("deleting a domain with an enabled user: %v, want a refusal", err)
	}
	if err := a.DisableUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteDomain(ctx, "example.test"); err != nil {
		t.Fatalf("deleting a domain whose one user is disabled: %v", err)
	}
	if dom, _ := dir.Domain("example.test"); dom != nil {
		t.Errorf("example.test is still in the directory after its deletion")
	}
}

// TestEnableRefusesUnaddressableAlias: an alias no RVP URL can name (a
// control character, DEL, longer than rvp.MaxAliasLen: what the gateway
// refuses in a request's path) is refused when the user is enabled or
// imported, as a space or a '/' are. Enabled, the user exists in the
// directory and in listings, exports and imports, and no request can ever
// reach its node.
func TestEnableRefusesUnaddressableAlias(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	// "ren\xe9" is not UTF-8: lower-cased, it became "ren\uFFFD", and so
	// did "ren\xe8": two users one (helper-80's review).
	for _, alias := range []string{"bo\nb", "bob\r", "bo\x01b", "bob\x7f", strings.Repeat("b", rvp.MaxAliasLen+1), "ren\xe9"} {
		u := events.NewUser("example.test", alias)
		if _, err := rvp.ParseNodePath(rvp.LogicalURL("im.example.test", alias)[len("http://im.example.test"):]); err == nil {
			t.Fatalf("%q: the gateway takes it in a path; the test is wrong", alias)
		}
		if err := a.EnableUser(ctx, directory.UserSpec{User: u, Home: "home1"}); err == nil {
			t.Errorf("EnableUser(%q) enabled a user no request can address", alias)
		}
		res, err := a.ImportUsers(ctx, directory.ImportSpec{Users: []directory.ImportUser{{Spec: directory.UserSpec{User: events.NewUser("example.test", alias+"x"), Home: "home1"}}}},
			func(string) error { return nil })
		if err != nil || len(res) != 1 || res[0].Outcome != directory.ImportRefused {
			t.Errorf("ImportUsers(%q): %+v %v, want it refused", alias+"x", res, err)
		}
	}
}

// TestEnableLowerCases: a user enabled with capitals in its name (by a
// client of the directory service other than rvpctl, which lower-cases)
// is kept lower-case, as requests look users up, one at a time or in a
// batch; it was kept as given, and no request could find it.
func TestEnableLowerCases(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := f.directory()
	f.follow(dir)
	key, _ := directory.NewKeyring(make([]byte, directory.KeySize))
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a", Keyring: key}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateHomeServer(ctx, "home1", "imhome1.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	if err := a.EnableUser(ctx, directory.UserSpec{User: events.User{Domain: "Example.Test", Alias: "Alice"}, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if n, err := a.EnableUsers(ctx, []directory.NewUser{{Spec: directory.UserSpec{User: events.User{Domain: "example.test", Alias: "BOB"}, Home: "home1"}}}); err != nil || n != 1 {
		t.Fatalf("EnableUsers: %d, %v", n, err)
	}
	for _, alias := range []string{"alice", "bob"} {
		if rec, err := dir.User(events.NewUser("example.test", alias)); err != nil || rec == nil || !rec.Enabled {
			t.Errorf("%s, enabled with capitals, is not found lower-case: %+v %v", alias, rec, err)
		}
	}
}

// TestCreateDomainsAtOnce: administrators creating IM domains that share
// no host name at the same time all succeed. A creation is fenced by
// every domain's events (TestCreateDomainsSharingAHost); another domain
// created meanwhile must send it back to look again, not fail it.
func TestCreateDomainsAtOnce(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const n = 8
	admins := make([]*directory.Admin, n)
	for i := range admins {
		dir := f.directory()
		f.follow(dir)
		admins[i] = &directory.Admin{JetStream: f.js, Directory: dir, Actor: "admin" + string(rune('a'+i))}
	}
	for round := range 3 {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, a := range admins {
			wg.Go(func() {
				name := string(rune('a'+i)) + string(rune('0'+round)) + ".test"
				errs[i] = a.CreateDomain(ctx, directory.DomainSpec{Domain: name, IMHost: "im." + name})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: administrator %d: %v", round, i, err)
			}
		}
	}
}

// TestAdminReadsFromLeader: the versions an administrator's change is
// fenced by, and the cluster's record, are read from the directory
// stream's leader, not by direct get: a replica behind answers those
// with an older version, or none.
func TestAdminReadsFromLeader(t *testing.T) {
	f := newAdminFixture(t)
	ctx := t.Context()
	a := f.exampleAdmin(ctx)
	nc := f.js.Conn()
	direct, err := nc.SubscribeSync("$JS.API.DIRECT.GET." + events.StreamDirectory + ".>")
	if err != nil {
		t.Fatal(err)
	}
	directSeq, err := nc.SubscribeSync("$JS.API.DIRECT.GET." + events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	leader, err := nc.SubscribeSync("$JS.API.STREAM.MSG.GET." + events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	if err := a.EnableUser(ctx, directory.UserSpec{User: events.NewUser("example.test", "ann"), Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := directory.ReadCluster(ctx, f.js); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	count := func(s *nats.Subscription) int {
		n := 0
		for {
			if _, err := s.NextMsg(100 * time.Millisecond); err != nil {
				return n
			}
			n++
		}
	}
	if d, l := count(direct)+count(directSeq), count(leader); d != 0 || l == 0 {
		t.Errorf("%d direct gets, %d leader gets; want none and some", d, l)
	}
}

// answerLostJS is a JetStream client whose first publish is stored but
// answered "server is disconnected", as a request is whose connection
// broke before its answer came.
type answerLostJS struct {
	jetstream.JetStream
	lost bool
}

func (j *answerLostJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && !j.lost {
		j.lost = true
		return nil, nats.ErrDisconnected
	}
	return ack, err
}

// TestMoveAnswerLostWithConnection: a move whose append was stored, its
// answer lost as the connection broke ("nats: server is disconnected"),
// is asked again under the same message id and reported made. Before,
// the administrator was told it failed (chaos: "dave not moved … server
// is disconnected"), though the directory had moved him.
func TestMoveAnswerLostWithConnection(t *testing.T) {
	f := newAdminFixture(t)
	ctx := t.Context()
	a := f.exampleAdmin(ctx)
	if err := a.CreateHomeServer(ctx, "home2", "imhome2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	dave := events.NewUser("example.test", "dave")
	if err := a.EnableUser(ctx, directory.UserSpec{User: dave, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	lossy := &answerLostJS{JetStream: f.js}
	b := &directory.Admin{JetStream: lossy, Directory: a.Directory, Actor: "a"}
	if err := b.MoveUser(ctx, dave, "home2"); err != nil {
		t.Fatalf("move whose answer was lost: %v", err)
	}
	if !lossy.lost {
		t.Fatal("no answer was lost: the test tests nothing")
	}
	rec, err := a.Directory.User(dave)
	if err != nil || rec == nil || rec.Home != "home2" {
		t.Fatalf("dave's record %+v, %v; want him on home2", rec, err)
	}
	moves := 0
	st, err := f.js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		if m, err := st.GetMsg(ctx, seq); err == nil && m.Header.Get(events.HeaderType) == events.TypeUserMoved {
			moves++
		}
	}
	if moves != 1 {
		t.Errorf("%d moves stored, want 1", moves)
	}
}
