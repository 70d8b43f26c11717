package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Owners follows the home servers' ownership leases (the KV bucket
// events.BucketOwners of the gateway's site, homenode.Lease) with a watch
// of the bucket, so that a gateway knows, without reading the bucket,
// which of its site's home servers no node owns: it exports
// rvpd_home_owned{home} (Metrics) and says so in the line of a request
// for one answered 504 (Config.Owners). Run follows the bucket until its
// context ends.
//
// A lease is live until the bucket's TTL after it was last written,
// counted from when the NATS server stored that write (its clock, which
// also ages the key out of the bucket): a gateway whose clock runs ahead
// of the NATS server's by more than two thirds of the TTL would see
// leases lapse between renewals. Keep the machines' clocks in step (NTP).
type Owners struct {
	// JetStream reaches the site's lease bucket. Required.
	JetStream jetstream.JetStream
	Logger    *slog.Logger

	mu      sync.Mutex
	current bool                 // the watch delivered the bucket's values and runs
	since   time.Time            // when it began to
	ttl     time.Duration        // the bucket's, read at most ttlEvery ago
	leases  map[string]leaseSeen // by key (events.OwnerKey)
}

// leaseSeen is a lease as the watch last saw it.
type leaseSeen struct {
	holder  string    // the node holding it; "" when let go
	letGo   string    // the node that let it go cleanly
	written time.Time // the NATS server's clock
}

// leaseReleased is the prefix of the value of a lease its node let go
// cleanly, before that node's name (homenode's released).
const leaseReleased = "released:"

// ownersRetry bounds the wait before a watch that failed or ended is
// made again.
const ownersRetry = 5 * time.Second

// ttlEvery is how often a watch reads the bucket's TTL again: its TTL
// (at least a second, at most a minute). The TTL may change under a
// running watch (rvpd init -home.lease-ttl imposes its own on a bucket
// the nodes made first), and NATS ages leases out by the new one.
func ttlEvery(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return time.Minute
	}
	return min(max(ttl, time.Second), time.Minute)
}

// Run follows the lease bucket until ctx ends; it returns nil then. A
// bucket not there yet (no node ever started), or a watch that fails or
// ends (the NATS connection closed), is looked at again; meanwhile what
// the gateway knows of the leases is unknown, and nothing is exported.
func (o *Owners) Run(ctx context.Context) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	warned := ""
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, ownersRetry) {
		err := o.watch(ctx, func() { wait, warned = 100*time.Millisecond, "" })
		o.mu.Lock()
		o.current = false
		o.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && err.Error() != warned {
			warned = err.Error()
			log.Warn("home-server leases not followed; rvpd_home_owned is not exported and 504s do not say whether a node owns the home server until they are; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// watch follows the bucket until ctx ends or the watch does; following
// is called once the bucket's values are all in.
func (o *Owners) watch(ctx context.Context, following func()) error {
	kv, err := o.JetStream.KeyValue(ctx, events.BucketOwners)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("KV bucket %s does not exist yet (no home node has started against these NATS servers)", events.BucketOwners)
	}
	if err != nil {
		return fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch home-server leases (KV bucket %s): %w", events.BucketOwners, err)
	}
	defer w.Stop()
	ttl := st.TTL()
	check := time.NewTimer(ttlEvery(ttl))
	defer check.Stop()
	initial := map[string]leaseSeen{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			// A failed read keeps the TTL known: owned says nothing
			// while the connection is down.
			sctx, cancel := context.WithTimeout(ctx, ownersRetry)
			if st, err := kv.Status(sctx); err == nil {
				ttl = st.TTL()
				o.mu.Lock()
				o.ttl = ttl
				o.mu.Unlock()
			}
			cancel()
			check.Reset(ttlEvery(ttl))
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch of home-server leases (KV bucket %s) ended", events.BucketOwners)
			}
			if e == nil { // the bucket's values are all in
				o.mu.Lock()
				o.current, o.since, o.ttl, o.leases = true, time.Now(), ttl, initial
				o.mu.Unlock()
				initial = nil
				following()
				continue
			}
			l := leaseSeen{written: e.Created()}
			if e.Operation() == jetstream.KeyValuePut {
				v := string(e.Value())
				if by, free := strings.CutPrefix(v, leaseReleased); free {
					l.letGo = by
				} else {
					l.holder = v
				}
			}
			if initial != nil {
				initial[e.Key()] = l
				continue
			}
			o.mu.Lock()
			o.leases[e.Key()] = l
			o.mu.Unlock()
		}
	}
}

// owned reports whether some node holds a live lease of home at now, and
// whether that is known: the watch delivered the bucket and runs, and
// the NATS connection is up (a gateway cut off from NATS hears no
// renewal, and says nothing rather than that no node owns any home
// server). When no node owns it, why says since when.
func (o *Owners) owned(home string, now time.Time) (owned, known bool, why string) {
	if o == nil {
		return false, false, ""
	}
	if nc := o.JetStream.Conn(); nc == nil || nc.Status() != nats.CONNECTED {
		return false, false, ""
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.current {
		return false, false, ""
	}
	l, ok := o.leases[events.OwnerKey(home)]
	lapses := l.written.Add(o.ttl)
	switch {
	case !ok:
		return false, true, fmt.Sprintf("it has had no lease since this gateway began following them at %s: its node never started, or its lease lapsed before", o.since.UTC().Format(time.RFC3339))
	case l.letGo != "":
		return false, true, fmt.Sprintf("node %s let it go at %s", l.letGo, l.written.UTC().Format(time.RFC3339))
	case l.holder == "":
		return false, true, fmt.Sprintf("its lease was deleted at %s", l.written.UTC().Format(time.RFC3339))
	case o.ttl > 0 && !now.Before(lapses):
		return false, true, fmt.Sprintf("its lease, last renewed by node %s, lapsed at %s", l.holder, lapses.UTC().Format(time.RFC3339))
	}
	return true, true, ""
}

// unowned is what a request for home answered 504 says when no node
// owns home now; "" when one does, or that is not known.
func (o *Owners) unowned(home string, now time.Time) string {
	owned, known, why := o.owned(home, now)
	if owned || !known {
		return ""
	}
	return fmt.Sprintf("no node owns home server %s (%s): start its node; rvpctl status shows the owners", home, why)
}

// watched returns the home servers of dir whose ownership a gateway at
// site reports: those of its own site (the lease bucket it follows is
// its site's) that host users, or have a user enabled on them still. One
// taken out of service (rvpctl home deny-users, its users moved away,
// its node stopped) is not reported: no node is wanted for it.
func watched(dir *projections.Directory, site string) []string {
	homes, err := dir.HomeServers()
	if err != nil {
		return nil
	}
	var out []string
	for _, h := range homes {
		if site != "" && h.Site != "" && h.Site != site {
			continue
		}
		if !h.HostsUsers {
			if u, err := dir.EnabledUserOn(h.Name); err != nil || u == nil {
				continue
			}
		}
		out = append(out, h.Name)
	}
	return out
}
