package homenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestDirectoryWaitHoldsNoOneElse: home1's directory projection is stuck
// behind; three requests of ann's come routed with a newer directory
// (a gateway that read a move or a new user a moment earlier), then one
// of ben's. Each of ann's waited for the directory in the deciding loop,
// a second each, and ben's, behind them, was answered after all three:
// while the directory was stuck, the node decided one request a second,
// and a move heard meanwhile was handed off that late
// (TestForwardedHandoffAfterMovesBackAndForth failed on it). Ann's now
// wait beside the loop: ben is answered first, and ann's, decided with
// the directory as it is once their wait ends, in the order they came.
func TestDirectoryWaitHoldsNoOneElse(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "ben")
	until(t, 30*time.Second, "home1's node did not start", func() bool { return h.node.Ready() == nil })
	lag.stop()
	// The directory moves on without home1's projection.
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.EnableUser(t.Context(), directory.UserSpec{User: events.NewUser("example.test", "cid"), Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	until(t, 10*time.Second, "the directory did not move on", func() bool { return h.dir.Position() > lag.dir.Position() })

	var ids []string
	for i := range 3 {
		req := annDescription(fmt.Sprintf("ann-%d", i))
		req.DirPos = h.dir.Position() // ahead of home1's
		h.sendTo("home1", req)
		ids = append(ids, req.ID)
	}
	ben := &events.PropFind{Req: movedUserReq("ben-reads", "ben", "ben"), Props: []events.Prop{events.PropMobileDescription}}
	h.sendTo("home1", ben)
	ids = append(ids, ben.ID)

	var order []string
	for len(order) < len(ids) {
		select {
		case r := <-h.replies:
			if r.Status != 207 {
				t.Errorf("request %s: %d %s", r.ID, r.Status, r.Error)
			}
			order = append(order, r.ID)
		case <-time.After(30 * time.Second):
			t.Fatalf("answered %v of %v", order, ids)
		}
	}
	if want := []string{ben.ID, ids[0], ids[1], ids[2]}; fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("answered in the order %v, want %v: ben's first (it waits for nothing), then ann's in the order they came", order, want)
	}
	if n := h.logs.count("directory behind the gateway's; deciding with ours"); n != 3 {
		t.Errorf("%d of ann's requests logged as decided with the directory behind, want 3", n)
	}
}
