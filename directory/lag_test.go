package directory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestChangeRecordedProjectionBehind: a change the stream took, whose
// node's directory projection does not apply it within the time given,
// failed with the bare "context deadline exceeded": the administrator was
// told it failed, and it was done (a move made again is then refused as
// "already on home server"). The error now says it was recorded, and
// what becomes of it.
func TestChangeRecordedProjectionBehind(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := f.directory()
	stop := f.follow(dir)
	a := &directory.Admin{JetStream: f.js, Directory: dir, Actor: "a"}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"home1", "home2"} {
		if err := a.CreateHomeServer(ctx, h, "im"+h+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
	}
	alice := events.NewUser("example.test", "alice")
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	stop() // the projection falls behind
	mctx, mcancel := context.WithTimeout(ctx, time.Second)
	err := a.MoveUser(mctx, alice, "home2")
	mcancel()
	if err == nil {
		t.Fatal("the move was answered although the projection could not apply it")
	}
	mv, ok := f.lastEvent(events.UserSubject(alice)).(*events.UserMoved)
	if !ok || mv.Home != "home2" {
		t.Fatalf("the stream does not have the move: %v", f.lastEvent(events.UserSubject(alice)))
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "recorded") || !strings.Contains(err.Error(), events.TypeUserMoved) {
		t.Errorf("the move was made, and its error does not say so: %v", err)
	}
}
