package homenode

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// A deployment of several sites (docs/sites.md): each site a JetStream
// domain of its own, joined to the others by leaf connections. A home
// node relays presence to watchers homed at other sites over those
// connections; when a site is lost, its users go offline for the node's
// users, and when it is back, the node re-sends its users' presence to
// the watchers homed there (the other site does the same).

// SiteChange says that a site was lost or is back.
type SiteChange struct {
	Site string
	Lost bool
}

// SiteWatch tells which of the other sites of a deployment can be
// reached: every Every it asks each site named by a home server in the
// directory for its JetStream account ($JS.<site>.API.INFO, over the leaf
// connections). Any answer, a JetStream error too, means the site is
// reachable; no responder, or no answer within Timeout, Misses times in a
// row means it is lost; one answer after that, or the first answer
// after the watch starts, means it is back (a site that starts was lost
// for the others, or may have been). Home nodes take its changes
// (Changes); one watch serves every home node of a process.
type SiteWatch struct {
	// Conn reaches this site's NATS servers. Required.
	Conn *nats.Conn
	// Site is this site's name (its JetStream domain). Required.
	Site string
	// Directory names the sites: those of its home servers. Required.
	Directory *projections.Directory
	// Every, Timeout and Misses: defaults 1s, 1s, 2.
	Every, Timeout time.Duration
	Misses         int
	Logger         *slog.Logger
	// Metrics, when set, gets rvpd_site_reachable{site}: 1 while a site
	// answers, 0 while it is lost.
	Metrics prometheus.Registerer

	reachable *prometheus.GaugeVec

	mu     sync.Mutex
	misses map[string]int
	state  map[string]siteState
	subs   map[chan SiteChange]bool
}

type siteState int

const (
	stateUnknown siteState = iota // not answered yet
	stateUp
	stateLost
)

// Lost reports whether site is lost now; a site never probed is not.
func (w *SiteWatch) Lost(site string) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state[site] == stateLost
}

// Missed tells the watch that something sent to site found no stream
// there (a relay: its leaf connection down a moment, perhaps too short
// for the probes to count the site lost): unless the site is lost
// already, its next answer counts as its return, and the home nodes
// re-send their users' presence to the watchers homed there, as after a
// loss. Without it a relay lost in a blip of a second or two was never
// sent again, and the watcher kept the state from before.
func (w *SiteWatch) Missed(site string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state[site] == stateUp {
		w.state[site] = stateUnknown
	}
}

// Changes returns a channel of the changes from now on, and the function
// that stops them. With replay it starts with the state of every site
// that has answered or been lost already (a home node that starts late
// learns which sites are back, or lost). A subscriber too slow to take a
// change misses it (it is logged); changes are seconds apart.
func (w *SiteWatch) Changes(replay bool) (<-chan SiteChange, func()) {
	ch := make(chan SiteChange, 64)
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[chan SiteChange]bool{}
	}
	w.subs[ch] = true
	if replay {
		for _, site := range slices.Sorted(maps.Keys(w.state)) {
			if st := w.state[site]; st != stateUnknown && len(ch) < cap(ch) {
				ch <- SiteChange{Site: site, Lost: st == stateLost}
			}
		}
	}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}
}

// Run probes the sites until ctx ends; it returns nil then.
func (w *SiteWatch) Run(ctx context.Context) error {
	if w.Conn == nil || w.Site == "" || w.Directory == nil {
		return fmt.Errorf("site watch: Conn, Site and Directory are required")
	}
	every, timeout, misses := w.Every, w.Timeout, w.Misses
	if every <= 0 {
		every = time.Second
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	if misses <= 0 {
		misses = 2
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if w.Metrics != nil {
		w.reachable = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_site_reachable",
			Help: "1 while another site of the deployment answers this site's watch, 0 while it is lost."}, []string{"site"})
		if err := w.Metrics.Register(w.reachable); err != nil {
			return fmt.Errorf("site watch: metrics: %w", err)
		}
		defer w.Metrics.Unregister(w.reachable)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var away time.Time // since when our own server has been away
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !w.Conn.IsConnected() {
			if away.IsZero() {
				away = time.Now()
			}
			continue // our own server is away: nothing is known of the others
		}
		if !away.IsZero() {
			if d := time.Since(away); d >= time.Duration(misses)*every {
				w.forget(d, log)
			}
			away = time.Time{}
		}
		sites, err := w.sites()
		if err != nil {
			log.Warn("site watch: the directory's home servers could not be read", "err", err)
			continue
		}
		var wg sync.WaitGroup
		for _, s := range sites {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := w.Conn.Request("$JS."+s+".API.INFO", nil, timeout)
				if !w.Conn.IsConnected() {
					return
				}
				w.record(s, err, misses, log)
			}()
		}
		wg.Wait()
	}
}

// forget makes every site unknown after this site's own server was away
// for d: long enough for the other sites to have seen it lost (its
// servers stopped, or its leaf connections down with them), and its
// users' watchers there to have been told they are offline. Each site's
// next answer is then "back", and the home nodes here re-send their
// users' presence to the watchers homed there, as the other sites do to
// this one's. Without it a site whose servers were stopped and started
// again under running nodes was never told its users' states again: its
// watch had decided nothing while its server was away, so nothing came
// back.
func (w *SiteWatch) forget(d time.Duration, log *slog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.state) == 0 {
		return
	}
	log.Info("this site's NATS server was away: each other site's next answer counts as its return", "away", d.Round(time.Millisecond))
	for site := range w.state {
		w.state[site], w.misses[site] = stateUnknown, 0
	}
}

// sites returns the other sites named in the directory.
func (w *SiteWatch) sites() ([]string, error) {
	homes, err := w.Directory.HomeServers()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range homes {
		if h.Site != "" && h.Site != w.Site && !slices.Contains(out, h.Site) {
			out = append(out, h.Site)
		}
	}
	return out, nil
}

// record counts a probe's answer and tells the subscribers of a change.
func (w *SiteWatch) record(site string, err error, misses int, log *slog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.misses == nil {
		w.misses, w.state = map[string]int{}, map[string]siteState{}
	}
	var change *SiteChange
	if err == nil {
		w.misses[site] = 0
		if st := w.state[site]; st != stateUp {
			w.state[site] = stateUp
			change = &SiteChange{Site: site}
			if st == stateLost {
				log.Info("site reachable again", "site", site)
			} else {
				log.Info("site reachable", "site", site)
			}
		}
	} else {
		w.misses[site]++
		if w.misses[site] >= misses && w.state[site] != stateLost {
			w.state[site] = stateLost
			change = &SiteChange{Site: site, Lost: true}
			log.Warn("site lost: its users are offline here until it is back", "site", site, "err", err)
		}
	}
	if change == nil {
		return
	}
	if w.reachable != nil {
		up := 1.0
		if change.Lost {
			up = 0
		}
		w.reachable.WithLabelValues(site).Set(up)
	}
	for ch := range w.subs {
		select {
		case ch <- *change:
		default:
			log.Error("site change not taken by a home node", "site", site, "lost", change.Lost)
		}
	}
}

// remoteNode is a node homed at another home server that a user's
// clients were last told the state of by a relay: what a lost site's
// users going offline is told with.
type remoteNode struct {
	home     string // the node's home server
	server   string // the RVP-From-Principal the relay carried
	from, to string // the notification's contacts: the node, the watcher
}

// maxRemoteNodes bounds the remote nodes a home node remembers.
const maxRemoteNodes = 1 << 16

// remotes remembers, per user of this home server, the nodes homed
// elsewhere its clients were told the state of. Owned by Run's goroutine.
type remotes struct {
	byUser map[events.User]map[string]remoteNode
	count  int
}

// remember records the relay r as the last its watcher's clients were
// told of its node.
func (rs *remotes) remember(r *events.Relay) {
	home, ok := relayHome(r)
	if !ok {
		return
	}
	n, err := rvp.ParseNotification(r.Body)
	if err != nil || n.Kind != rvp.KindPropNotification || len(n.From) == 0 || len(n.To) == 0 {
		return
	}
	if rs.byUser == nil {
		rs.byUser = map[events.User]map[string]remoteNode{}
	}
	m := rs.byUser[r.Node]
	if _, known := m[n.From[0]]; !known {
		if rs.count >= maxRemoteNodes {
			return
		}
		rs.count++
	}
	if m == nil {
		m = map[string]remoteNode{}
		rs.byUser[r.Node] = m
	}
	m[n.From[0]] = remoteNode{home: home, server: r.From, from: n.From[0], to: n.To[0]}
}

// at returns, per user, the remembered nodes homed on homes.
func (rs *remotes) at(homes map[string]bool) map[events.User][]remoteNode {
	out := map[events.User][]remoteNode{}
	for u, m := range rs.byUser {
		for _, rn := range m {
			if homes[rn.home] {
				out[u] = append(out[u], rn)
			}
		}
	}
	for u := range out {
		slices.SortFunc(out[u], func(a, b remoteNode) int {
			if a.from < b.from {
				return -1
			}
			if a.from > b.from {
				return 1
			}
			return 0
		})
	}
	return out
}

// relayHome returns the home server a relay came from: its gateway is
// "home:<home>" (fanout.relay).
func relayHome(r *events.Relay) (string, bool) {
	const prefix = "home:"
	if len(r.Gateway) <= len(prefix) || r.Gateway[:len(prefix)] != prefix {
		return "", false
	}
	return r.Gateway[len(prefix):], true
}

// homesAt returns the home servers of site in the directory.
func homesAt(dir *projections.Directory, site string) (map[string]bool, error) {
	hs, err := dir.HomeServers()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, h := range hs {
		if h.Site == site {
			out[h.Name] = true
		}
	}
	return out, nil
}

// siteOf returns the site of home server home, "" when unknown.
func siteOf(dir *projections.Directory, home string) string {
	hs, err := dir.HomeServer(home)
	if err != nil || hs == nil {
		return ""
	}
	return hs.Site
}

// siteLost is the input that tells a user's clients that nodes of a lost
// site are offline.
type siteLost struct {
	watcher events.User
	nodes   []remoteNode
	at      time.Time
}

// decideSiteLost sends, for each node, an offline state to the watcher's
// clients, as a relay from the node's home server would. It records
// nothing: the node's home server holds its state, and tells it again
// when its site is back.
func (c *core) decideSiteLost(e siteLost, now time.Time) (*decision, error) {
	d := &decision{msgID: "site-lost/" + events.Token(e.watcher.String()) + "/" + nanos(now)}
	for _, rn := range e.nodes {
		body := rvp.PropNotification(rvp.Contact{Href: rn.from}, rvp.Contact{Href: rn.to}, "offline")
		if err := c.toLogins(d, e.watcher, rn.server, body, now.Add(c.policy.DeliveryTimeout)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// onSite handles a change of another site: lost, its nodes go offline for
// this home server's users; back, they are told again of this home
// server's users (resendSites). It runs on Run's goroutine.
func (n *Node) onSite(ctx context.Context, ch SiteChange) error {
	homes, err := homesAt(n.cfg.Directory, ch.Site)
	if err != nil {
		return err
	}
	if !ch.Lost {
		n.resending.Add(1)
		go func() {
			defer n.resending.Done()
			n.resendPresence(n.life, homes)
		}()
		return nil
	}
	byUser := n.remote.at(homes)
	users := make([]events.User, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b events.User) int {
		if a.String() < b.String() {
			return -1
		}
		return 1
	})
	count := 0
	for _, u := range users {
		count += len(byUser[u])
		if err := n.input(ctx, &pending{in: siteLost{watcher: u, nodes: byUser[u]}}); err != nil {
			return err
		}
	}
	n.log.Info("site lost: its nodes told offline to this home server's users", "site", ch.Site, "users", len(users), "nodes", count)
	return nil
}

// ensureSite checks, at a site, that the home server is this site's, and
// creates its requests stream.
func (n *Node) ensureSite(ctx context.Context) error {
	site := n.cfg.FactStream.Site
	if site == "" {
		return nil
	}
	if err := CheckSite(n.cfg.Directory, n.cfg.Home, site); err != nil {
		return err
	}
	if err := projections.EnsureRequestStream(ctx, n.cfg.JetStream, n.cfg.Home, n.cfg.FactStream); err != nil {
		return fmt.Errorf("home %s: %w", n.cfg.Home, err)
	}
	return nil
}

// relayPublisher returns the JetStream context relays are published
// with: asynchronously, so that a relay never holds up the deciding
// goroutine (a publish to a site whose leaf connection went silent waits
// for its timeout), at most 4096 unanswered (more are dropped, as a full
// delivery queue drops notifications), and without nats.go's retries when
// no stream answers (a home server of a site cut off: it would cost
// 0.5 s a relay).
func (n *Node) relayPublisher() (jetstream.JetStream, error) {
	return jetstream.New(n.cfg.Conn,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			home, _, _ := strings.Cut(strings.TrimPrefix(m.Subject, events.RequestRoot+"."), ".")
			if h, uerr := events.Untoken(home); uerr == nil {
				home = h
			}
			n.relayLog.failed(n.log, home, err)
			n.cfg.Sites.Missed(siteOf(n.cfg.Directory, home))
		}))
}

// relayLog counts relays not sent, and logs the failures to a home
// server once a minute.
type relayLog struct {
	skipped, lost atomic.Uint64
	mu            sync.Mutex
	last          map[string]time.Time
}

func (l *relayLog) failed(log *slog.Logger, home string, err error) {
	n := l.lost.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[home]; ok && time.Since(t) < time.Minute {
		return
	}
	l.last[home] = time.Now()
	log.Warn("relay to another home server not sent; its watchers are told again when it is reachable", "to", home, "err", err, "relays_lost", n)
}

// CheckSite reports whether a node at site may own home: the directory
// must put home at that site. Otherwise its requests, facts and lease
// would be made in this site's domain beside those of its own site: two
// owners. rvpd node checks it before its roles start, since a home node
// that fails is started again rather than ending the process.
func CheckSite(dir *projections.Directory, home, site string) error {
	hs, err := dir.HomeServer(home)
	if err != nil {
		return err
	}
	if hs == nil || hs.Site != site {
		where := "no site"
		if hs != nil && hs.Site != "" {
			where = "site " + hs.Site
		}
		return fmt.Errorf("home %s: the directory puts it at %s, and this node is at site %s; run its nodes at its own site", home, where, site)
	}
	return nil
}
