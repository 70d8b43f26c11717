package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

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

// cmdStreamsUpgrade gives the requests streams of the site js reaches
// the settings this version needs of them and nodes never change on an
// existing stream: per-message TTLs, without which a handoff (a moved
// user's watchers' subscriptions, presence and ACL) is kept only the
// stream's max age.
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
	rows := [][]string{{"STREAM", "SETTING", "WAS", "NOW"}}
	var changes []streamChange
	for _, name := range names {
		c := streamChange{Stream: name, Setting: "allow_msg_ttl", Was: "true", Now: "true"}
		allowed, err := allowsMsgTTLs(ctx, js, name)
		if err != nil {
			return err
		}
		if !allowed {
			c.Was = "false"
			if dryRun {
				c.Now = "false (dry run)"
			} else {
				if _, err := projections.AllowMsgTTLs(ctx, js, name); err != nil {
					return fmt.Errorf("%w; the streams listed before it were upgraded, run the command again once it is fixed", err)
				}
				c.Changed = true
			}
		}
		changes = append(changes, c)
		rows = append(rows, []string{c.Stream, c.Setting, c.Was, c.Now})
	}
	if g.json {
		for _, c := range changes {
			if err := printJSON(g.out, c); err != nil {
				return err
			}
		}
		return nil
	}
	table(g.out, rows)
	return nil
}

// allowsMsgTTLs reports whether stream name allows per-message TTLs.
func allowsMsgTTLs(ctx context.Context, js jetstream.JetStream, name string) (bool, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", name, err)
	}
	return info.Config.AllowMsgTTL, nil
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
