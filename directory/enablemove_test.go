package directory_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestEnableElsewhereMoveOutlastedReportsEnabling: carol, disabled on
// home1, is enabled again on home2: enabled on home1, where she was, then
// moved (4561ae7). Another administrator's changes keep landing between
// each of the move's checks and its append (an import running
// meanwhile), so the move is refused every time, fenced by the whole
// directory. The enabling is made: the error must say so and name the
// move to make, not retry the enabling, which then finds its own change
// and answers that carol "already exists".
func TestEnableElsewhereMoveOutlastedReportsEnabling(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a, b, resume := staleAdmins(t, f, ctx)
	resume()
	carol := events.NewUser("example.test", "carol")
	if err := a.EnableUser(ctx, directory.UserSpec{User: carol, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.DisableUser(ctx, carol); err != nil {
		t.Fatal(err)
	}
	// Each event a stamps after its enabling (the moves) has b's change
	// appended just before it.
	var stamps atomic.Int32
	var interleaveErr atomic.Value
	a.Now = func() time.Time {
		if stamps.Add(1) > 1 {
			if err := b.AllowUsers(ctx, "home2", true); err != nil {
				interleaveErr.Store(err)
			}
		}
		return time.Now()
	}
	err := a.EnableUser(ctx, directory.UserSpec{User: carol, Home: "home2"})
	if e, ok := interleaveErr.Load().(error); ok {
		t.Fatalf("the other administrator's change: %v", e)
	}
	rec, rerr := a.Directory.User(carol)
	if rerr != nil || rec == nil || !rec.Enabled || rec.Home != "home1" {
		t.Fatalf("carol after the enabling: %+v (%v), want enabled on home1", rec, rerr)
	}
	if err == nil {
		t.Fatal("the move outlasted by other changes reported done")
	}
	if errors.Is(err, directory.ErrExists) || !strings.Contains(err.Error(), "enabled again on home server home1") {
		t.Errorf("enabling made, move refused: got %q, want it to say carol is enabled on home1 and not moved", err)
	}
}
