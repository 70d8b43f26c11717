package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// streamChange is one setting "streams upgrade" changed, or would have.
type streamChange struct {
	Stream  string `json:"stream"`
	Setting string `json:"setting"`
	Was     string `json:"was"`
	Now     string `json:"now"`
	Changed bool   `json:"changed"`
}

// cmdStreamsUpgrade gives the requests and lookups streams of the site js
// reaches the settings this version creates them with and nodes never
// change on an existing stream (projections.UpgradeStream): per-message
// TTLs, without which a handoff (a moved user's watchers' subscriptions,
// presence and ACL) is kept only the stream's max age, and the shorter
// deduplication window.
func cmdStreamsUpgrade(ctx context.Context, e *env, dryRun bool) error {
	g := e.global
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	names, err := requestStreams(ctx, js)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no requests stream at %s (is this a site's NATS? a home node creates its requests stream at start)", g.nats)
	}
	if _, err := js.Stream(ctx, events.StreamLookups); err == nil {
		names = append(names, events.StreamLookups)
	}
	rows := [][]string{{"STREAM", "SETTING", "WAS", "NOW"}}
	if dryRun {
		rows[0][3] = "WOULD BE"
	}
	var changes []streamChange
	for _, name := range names {
		cs, err := projections.UpgradeStream(ctx, js, name, dryRun)
		if err != nil {
			return fmt.Errorf("%w; the streams listed before it were upgraded: run the command again once this is fixed", err)
		}
		for _, c := range cs {
			sc := streamChange{Stream: name, Setting: c.Setting, Was: c.Was, Now: c.Now, Changed: !dryRun}
			changes = append(changes, sc)
			rows = append(rows, []string{sc.Stream, sc.Setting, sc.Was, sc.Now})
		}
	}
	if g.json {
		for _, c := range changes {
			if err := printJSON(g.out, c); err != nil {
				return err
			}
		}
		return nil
	}
	if len(changes) == 0 {
		return e.ok("nothing to change: %s as this version creates them", strings.Join(names, ", "))
	}
	table(g.out, rows)
	return nil
}

// warnNoMsgTTLs says on w which requests streams keep handoffs only their
// max age, and what to run.
func warnNoMsgTTLs(w io.Writer, streams []string) {
	if len(streams) == 0 {
		return
	}
	verb := "do"
	if len(streams) == 1 {
		verb = "does"
	}
	fmt.Fprintf(w, "warning: %s %s %s not allow per-message TTLs: a handoff of a moved user not taken within the stream's max age (-requests.max-age) is lost with her watchers' subscriptions and ACL; run rvpctl streams upgrade\n",
		plural(len(streams), "requests stream"), strings.Join(streams, ", "), verb)
}
