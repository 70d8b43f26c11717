package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// verifyRow is what rvpctl verify took on one server, once the load has
// left its facts: the rebuild of the home projection (facts applied, in
// how long) and the whole verification (both rebuilds and comparisons).
type verifyRow struct {
	target     string
	facts      uint64
	rebuild    time.Duration
	total, cpu time.Duration
	ok         bool
}

func (v verifyRow) rate() float64 { return float64(v.facts) / v.rebuild.Seconds() }

// verify asks t's home node to verify its projections, as rvpctl verify
// does (through t's NATS listener), and records how fast the home
// projection was rebuilt, from the node's own report of its progress.
func (b *bench) verify(t *target) error {
	nc, err := nats.Connect("nats://"+t.nats, nats.Name("rvpload"), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	var mu sync.Mutex
	var home projections.Progress
	inbox := nats.NewInbox()
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		var p projections.Progress
		if json.Unmarshal(m.Data, &p) == nil && p.Projection == "home home1" {
			mu.Lock()
			home = p
			mu.Unlock()
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	req := nats.NewMsg(events.HomeAdminSubject("home1", "verify"))
	req.Header.Set(projections.HeaderProgress, inbox)
	var answer *nats.Msg
	wall, cpu, err := measure(t, func() error {
		var err error
		answer, err = nc.RequestMsg(req, 5*time.Minute)
		return err
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	nc.Flush()
	var resp struct {
		Results []projections.Verification `json:"results"`
		Error   string                     `json:"error"`
	}
	if err := json.Unmarshal(answer.Data, &resp); err != nil {
		return fmt.Errorf("verify's answer: %w", err)
	}
	ok := resp.Error == "" && len(resp.Results) > 0
	for _, v := range resp.Results {
		ok = ok && v.OK()
		if !v.OK() {
			b.fail("%s: %s differs from its rebuild: %s", t.name, v.Projection, v.Diff)
		}
	}
	if resp.Error != "" {
		b.fail("%s: verify: %s", t.name, resp.Error)
	}
	mu.Lock()
	defer mu.Unlock()
	if !home.Done {
		return fmt.Errorf("verify: no final progress report of home1's rebuild")
	}
	b.verified = append(b.verified, verifyRow{target: t.name, facts: home.Applied, rebuild: home.Elapsed, total: wall, cpu: cpu, ok: ok})
	progress(b.log, "%s: verify rebuilt %d facts of home1 in %.2fs (%.0f/s); the whole verification took %.2fs, %.2f CPU-s", t.name, home.Applied, home.Elapsed.Seconds(), float64(home.Applied)/home.Elapsed.Seconds(), wall.Seconds(), cpu.Seconds())
	return nil
}
