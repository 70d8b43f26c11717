package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
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
	// The lookups stream too: a hub without home servers has one (its
	// gateways') and no requests stream.
	switch _, err := js.Stream(ctx, events.StreamLookups); {
	case err == nil:
		names = append(names, events.StreamLookups)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s: %w (rvpctl status shows whether it is offline); nothing was changed", events.StreamLookups, err)
	}
	if len(names) == 0 {
		return fmt.Errorf("no requests or lookups stream at %s (is this a site's NATS? a home node creates its requests stream at start)", natsclient.RedactURLs(g.nats))
	}
	rows := [][]string{{"STREAM", "SETTING", "WAS", "NOW"}}
	if dryRun {
		rows[0][3] = "WOULD BE"
	}
	var changes []streamChange
	// show prints the changes made, or that would be.
	show := func() error {
		if g.json {
			for _, c := range changes {
				if err := printJSON(g.out, c); err != nil {
					return err
				}
			}
			return nil
		}
		if len(changes) > 0 {
			table(g.out, rows)
		}
		return nil
	}
	for _, name := range names {
		cs, err := projections.UpgradeStream(ctx, js, name, dryRun)
		if err != nil {
			if dryRun {
				return err
			}
			// What was changed before is shown.
			return errors.Join(show(), fmt.Errorf("%w; the streams before it were upgraded, those after it not: run the command again once this is fixed", err))
		}
		for _, c := range cs {
			sc := streamChange{Stream: name, Setting: c.Setting, Was: c.Was, Now: c.Now, Changed: !dryRun}
			changes = append(changes, sc)
			rows = append(rows, []string{sc.Stream, sc.Setting, sc.Was, sc.Now})
		}
	}
	if len(changes) == 0 && !g.json {
		return e.ok("nothing to change: %s as this version creates them", strings.Join(names, ", "))
	}
	return show()
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
