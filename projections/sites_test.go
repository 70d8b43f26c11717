package projections

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// TestCopyAheadOfTheHub: a site's copy of the directory that holds more
// than the hub's stream (joined to another deployment's hub, or the hub's
// stream made again) is left as it is, and the error says how many
// events each holds, in words an operator reads as written ("1 event",
// where it said "1 events").
func TestCopyAheadOfTheHub(t *testing.T) {
	user := func(alias string) *events.UserEnabled {
		return &events.UserEnabled{Meta: events.Meta{At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, User: events.NewUser("example.test", alias), Home: "home1"}
	}
	for _, tt := range []struct {
		copied, hub []string
		want        string
	}{
		{[]string{"ann"}, nil, "holds 1 event, the hub's stream 0"},
		{[]string{"ann", "ben"}, []string{"ann"}, "holds 2 events, the hub's stream 1"},
	} {
		site, hub := startJetStream(t), startJetStream(t)
		for _, a := range tt.copied {
			appendDirectory(t, site, user(a))
		}
		for _, a := range tt.hub {
			appendDirectory(t, hub, user(a))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		copied, err := CopyDirectoryNow(ctx, CopyConfig{Site: "a", Local: site, Hub: hub})
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) || copied != 0 {
			t.Errorf("a copy of the users %q, the hub's of %q: copied %d, %v; want nothing copied and an error saying %q",
				tt.copied, tt.hub, copied, err, tt.want)
		}
	}
}
