package directory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestImportAndDeleteHomeServerAtOnce: as
// TestEnableAndDeleteHomeServerAtOnce, with the user enabled by the batch
// import (EnableUsers), whose appends are fenced by the users' subjects
// alone: a home server deleted between the import's check and its
// appends left the user enabled on it, and both successful.
func TestImportAndDeleteHomeServerAtOnce(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	b := &directory.Admin{JetStream: f.js, Directory: a.Directory, Actor: "b"}
	undone := 0
	for i := range 100 {
		home := fmt.Sprintf("h%d", i)
		if err := a.CreateHomeServer(ctx, home, home+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
		u := events.NewUser("example.test", fmt.Sprintf("u%d", i))
		var enErr, delErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			_, enErr = a.EnableUsers(ctx, []directory.NewUser{{Spec: directory.UserSpec{User: u, Home: home}}})
		})
		wg.Go(func() { delErr = b.DeleteHomeServer(ctx, home) })
		wg.Wait()
		if delErr != nil {
			continue
		}
		if enErr != nil {
			undone++
		}
		if rec, err := a.Directory.User(u); err != nil || (rec != nil && rec.Enabled) {
			t.Fatalf("attempt %d: %s enabled on %s (import: %v) and %s deleted: %+v (%v)", i, u, home, enErr, home, rec, err)
		}
	}
	t.Logf("%d imports disabled again after a deletion", undone)
}
