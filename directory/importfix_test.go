package directory_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestImportCompensationLeavesAUserFixedMeanwhile: home3 is deleted
// between the import's check and its append of alice's user.enabled
// (399dcbc): alice is enabled on a home server that no longer exists, and
// the import disables her again. Before it does, another administrator
// moves her to home1 on purpose. The disable, fenced by her import's
// event, is refused, as it should be; but the import then failed, telling
// the administrator to disable alice (rvpctl user disable), who is now a
// user in good standing on home1.
func TestImportCompensationLeavesAUserFixedMeanwhile(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	b := &directory.Admin{JetStream: f.js, Directory: a.Directory, Actor: "b"}
	if err := a.CreateHomeServer(ctx, "home3", "imhome3.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	var stamps atomic.Int32
	var other atomic.Value
	a.Now = func() time.Time {
		switch stamps.Add(1) {
		case 1: // alice's user.enabled: home3 deleted just before it
			if err := b.DeleteHomeServer(ctx, "home3"); err != nil {
				other.Store(err)
			}
		case 2: // the import's disable of alice: b moves her first
			if err := b.MoveUser(ctx, alice, "home1"); err != nil {
				other.Store(err)
			}
		}
		return time.Now()
	}
	n, err := a.EnableUsers(ctx, []directory.NewUser{{Spec: directory.UserSpec{User: alice, Home: "home3"}}})
	if e, ok := other.Load().(error); ok {
		t.Fatalf("the other administrator's change: %v", e)
	}
	rec, rerr := a.Directory.User(alice)
	if rerr != nil || rec == nil || !rec.Enabled || rec.Home != "home1" {
		t.Fatalf("alice: %+v (%v), want enabled on home1, where b moved her", rec, rerr)
	}
	if err != nil && strings.Contains(err.Error(), "user disable") {
		t.Errorf("import: %v; alice, moved to home1 meanwhile, is to be left alone", err)
	}
	if n != 1 {
		t.Errorf("import counted %d users enabled, want alice", n)
	}
}
