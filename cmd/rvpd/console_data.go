package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// pageTimeout bounds what a page waits for the cluster.
const pageTimeout = 5 * time.Second

// auditRows is how many of the last audit events the overview shows.
const auditRows = 20

// auditResetAttempts is how many times the audit's ordered consumer is
// created for a fetch (each fetch creates it anew) before the fetch
// fails, 1 s apart. Unbounded (the client's default), a fetch on a
// stream deleted or offline since the page began never returned, nor
// heeded the page's context: each click left one more handler hung. A
// page fails now, and its next refresh reads the stream again.
const auditResetAttempts = 2

type domainRow struct {
	projections.Domain
	Users, Enabled int
}

type homeRow struct {
	projections.HomeServer
	Users    int // homed here in the directory, enabled
	Owner    string
	Renewed  time.Time
	LetGo    bool // its owner (Owner) let it go cleanly: a standby takes it
	Reported bool // its node reported its gauges
	Online   float64
	Subs     float64
	// NOTIFYs being sent and queued for a worker, now, if its node
	// reported them.
	NotifyUnderWay, NotifyWaiting float64
	NotifyReported                bool
}

type streamRow struct {
	Name      string
	Messages  uint64
	Bytes     uint64
	LastSeq   uint64
	LastTime  time.Time
	Consumers []consumerRow // durable: the work of home nodes and routers
	Followers int           // ordered consumers: projections and readers
}

type consumerRow struct {
	Name        string
	Pending     uint64
	AckPending  int
	Redelivered int
}

type routerRow struct {
	projections.Router
	Redirects, Proxied float64
}

type auditEvent struct {
	Time    time.Time
	Stream  string
	Seq     uint64
	Type    string
	Node    string
	Actor   string
	Client  string
	Detail  string
	UserURL string // the console's page of the node's user, if one

	ev events.Event // decoded; nil when it could not be
}

type overviewData struct {
	// Cluster says the administrator sees the cluster (an organisation
	// administrator): the home servers' owners and online users, the
	// streams, the nodes and the audit. A domain administrator sees its
	// IM domains, their routers, and the home servers as rvpctl lists
	// them to it, with its own users on them.
	Cluster bool
	Domains []domainRow
	Homes   []homeRow
	Streams []streamRow
	Routers []routerRow
	Nodes   []nodeReport
	Audit   []auditEvent
}

// overview is the console's front page: the whole cluster at a glance.
func (c *console) overview(w http.ResponseWriter, r *http.Request, adm *projections.Administrator) {
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	d := overviewData{Cluster: adm.Role == events.RoleOrganization}
	var errs []string
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, what+": "+err.Error())
		}
	}
	nodes, err := gatherCluster(ctx, c.nc, c.gatherWait)
	note("node reports", err)
	if d.Cluster {
		d.Nodes = nodes
	}
	fams := parseReports(nodes)
	homeUsers := map[string]int{}
	doms, err := c.dir.Domains()
	note("IM domains", err)
	for _, dom := range doms {
		if !mayView(adm, dom.Domain) {
			continue
		}
		users, err := c.dir.Users(dom.Domain)
		note("users of "+dom.Domain, err)
		row := domainRow{Domain: dom, Users: len(users)}
		for _, u := range users {
			if u.Enabled {
				row.Enabled++
				homeUsers[u.Home]++
			}
		}
		d.Domains = append(d.Domains, row)
	}
	var owners map[string]homenode.LeaseState
	if d.Cluster {
		owners, err = homenode.Leases(ctx, c.js)
		note("home-server leases", err)
	}
	homes, err := c.dir.HomeServers()
	note("home servers", err)
	for _, h := range homes {
		row := homeRow{HomeServer: h, Users: homeUsers[h.Name]}
		if d.Cluster {
			// The gauges count every IM domain's users: the cluster's.
			if o, ok := owners[h.Name]; ok {
				row.Owner, row.Renewed = cmp.Or(o.Node, o.LetGo), o.Renewed
				row.LetGo = o.LetGo != ""
			}
			row.Online, row.Reported = fams.sum("rvpd_home_online_users", "home", h.Name)
			row.Subs, _ = fams.sum("rvpd_home_subscriptions", "home", h.Name)
			row.NotifyUnderWay, row.NotifyReported = fams.sum("rvpd_home_notifies_under_way", "home", h.Name)
			row.NotifyWaiting, _ = fams.sum("rvpd_home_notifies_waiting", "home", h.Name)
		}
		d.Homes = append(d.Homes, row)
	}
	routers, err := c.dir.Routers()
	note("routers", err)
	for _, rt := range routers {
		if !mayView(adm, rt.Domain) {
			continue
		}
		row := routerRow{Router: rt}
		row.Redirects, _ = fams.sum("rvpd_router_redirects_total", "router", rt.Name)
		row.Proxied, _ = fams.sum("rvpd_gateway_proxied_total", "router", rt.Name)
		d.Routers = append(d.Routers, row)
	}
	if d.Cluster {
		d.Streams, err = c.streams(ctx)
		note("streams", err)
		d.Audit, err = c.audit(ctx, "", auditRows)
		note("audit", err)
	}
	c.render(w, http.StatusOK, "overview", page{Title: "Overview", Admin: adm, Refresh: true, Errors: errs, Data: d})
}

// streams returns the cluster's streams and their consumers' backlogs.
func (c *console) streams(ctx context.Context) ([]streamRow, error) {
	var out []streamRow
	list := c.js.ListStreams(ctx)
	for info := range list.Info() {
		if !strings.HasPrefix(info.Config.Name, "RVP_") {
			continue // the lease bucket's, and anyone else's
		}
		s := streamRow{Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes, LastSeq: info.State.LastSeq, LastTime: info.State.LastTime}
		st, err := c.js.Stream(ctx, s.Name)
		if err != nil {
			return out, err
		}
		cons := st.ListConsumers(ctx)
		for ci := range cons.Info() {
			if ci.Config.Durable == "" {
				s.Followers++ // a projection's ordered consumer, or a reader's
				continue
			}
			s.Consumers = append(s.Consumers, consumerRow{Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered})
		}
		if err := cons.Err(); err != nil {
			return out, err
		}
		slices.SortFunc(s.Consumers, func(a, b consumerRow) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b streamRow) int { return strings.Compare(a.Name, b.Name) })
	return out, list.Err()
}

// auditStreams are the streams the audit reads: each home server's facts
// and the directory.
func (c *console) auditStreams(ctx context.Context) ([]string, error) {
	facts, err := projections.FactStreams(ctx, c.js)
	return append(facts, events.StreamDirectory), err
}

// audit returns the last n events of the facts and the directory, the
// newest first; with node set, only the facts of that user's node.
func (c *console) audit(ctx context.Context, node string, n int) ([]auditEvent, error) {
	streams, err := c.auditStreams(ctx)
	if err != nil {
		return nil, err
	}
	var all []auditEvent
	for _, name := range streams {
		cfg := jetstream.OrderedConsumerConfig{MaxResetAttempts: auditResetAttempts}
		if node != "" {
			if name == events.StreamDirectory {
				continue
			}
			cfg.FilterSubjects = []string{node}
		}
		st, err := c.js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if info.State.Msgs == 0 {
			continue
		}
		if node == "" && info.State.LastSeq > uint64(n) {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, info.State.LastSeq-uint64(n)+1
		}
		evs, err := c.readTail(ctx, name, cfg, info.State.LastSeq, n)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		all = append(all, evs...)
	}
	slices.SortFunc(all, func(a, b auditEvent) int { return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.Seq, a.Seq)) })
	return all[:min(n, len(all))], nil
}

// readTail reads stream with cfg up to its sequence last and keeps the
// last n events.
func (c *console) readTail(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig, last uint64, n int) ([]auditEvent, error) {
	cons, err := c.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	var out []auditEvent
	for {
		msgs, err := projections.Fetch(ctx, consoleFetchWait, func() (jetstream.MessageBatch, error) { return cons.FetchNoWait(256) })
		if err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		done := false
		for _, m := range msgs {
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			done = done || md.Sequence.Stream >= last
			e := c.auditEvent(stream, m, md)
			if f, ok := e.ev.(*events.HomeFenced); ok && f.Inner() {
				continue // a fence shows its first and last facts
			}
			out = append(out, e)
			if len(out) > n {
				out = out[1:]
			}
		}
		if len(msgs) == 0 || done {
			return out, nil
		}
	}
}

// consoleFetchWait is how long the console's audit asks again while a
// fetch finds no responder (projections.Fetch): within the page's
// pageTimeout.
const consoleFetchWait = 2 * time.Second

func (c *console) auditEvent(stream string, m jetstream.Msg, md *jetstream.MsgMetadata) auditEvent {
	typ := m.Headers().Get(events.HeaderType)
	e := auditEvent{Time: md.Timestamp, Stream: stream, Seq: md.Sequence.Stream, Type: typ, Node: m.Subject()}
	ev, err := events.Decode(typ, m.Data())
	if err != nil {
		e.Detail = "undecodable: " + err.Error()
		return e
	}
	e.ev = ev
	var meta *events.Meta
	switch x := ev.(type) {
	case events.Fact:
		meta = x.Metadata()
		u := x.Subject()
		e.Node, e.UserURL = u.String(), "/console/user/"+u.String()
	case events.DirectoryEvent:
		meta = x.Metadata()
		e.Node = dirNode(m.Subject())
	}
	if meta != nil {
		e.Actor, e.Client = meta.Actor, meta.Client
		if meta.Auth != "" {
			e.Actor += " (" + meta.Auth + ")"
		}
	}
	e.Detail = events.Describe(ev)
	return e
}

type usersData struct {
	Query   string
	Users   []projections.UserRecord
	Total   int
	Shown   int
	Limited bool
}

// maxListed bounds the users a search lists.
const maxListed = 200

// users lists the users whose address, name or e-mail contains the query.
func (c *console) users(w http.ResponseWriter, r *http.Request, adm *projections.Administrator) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	var d usersData
	d.Query = q
	var errs []string
	doms, err := c.dir.Domains()
	if err != nil {
		errs = append(errs, err.Error())
	}
	lq := strings.ToLower(q)
	for _, dom := range doms {
		if !mayView(adm, dom.Domain) {
			continue
		}
		users, err := c.dir.Users(dom.Domain)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, u := range users {
			if lq != "" && !strings.Contains(strings.ToLower(u.User.String()+" "+u.DisplayName+" "+u.Email), lq) {
				continue
			}
			d.Total++
			if len(d.Users) < maxListed {
				d.Users = append(d.Users, u)
			}
		}
	}
	d.Shown, d.Limited = len(d.Users), d.Total > len(d.Users)
	c.render(w, http.StatusOK, "users", page{Title: "Users", Admin: adm, Errors: errs, Data: d})
}

type userData struct {
	Record   projections.UserRecord
	Presence *homenode.PresenceReport // its watchers in Watchers
	Owner    string
	// Live is the user's node as its home node has it now (nil when it
	// did not answer); its clients' sign-ins are in Logins.
	Live     *homenode.UserState
	Logins   []loginRow
	Watchers []watcherRow
	Events   []auditEvent
}

// watcherRow is a watcher of the user as its page lists it.
type watcherRow struct {
	homenode.Watch
	// Withheld says who the watcher is as far as the administrator may
	// know (outsider), when it is no user of its IM domains; the Watch
	// then holds neither its address nor its Call-Back.
	Withheld string
}

// loginRow is a login subscription of the user's node as its page lists
// it; Withheld as watcherRow's (someone else's login, which the node's
// ACL let in), its Call-Back and client address then left out.
type loginRow struct {
	projections.Subscription
	Withheld string
}

// user shows a user: its directory record, presence, views, watchers and
// the last facts of its node.
func (c *console) user(w http.ResponseWriter, r *http.Request, adm *projections.Administrator) {
	addr := r.PathValue("user")
	alias, domain, ok := strings.Cut(addr, "@")
	if !ok || alias == "" || domain == "" {
		c.render(w, http.StatusNotFound, "user", page{Title: addr, Admin: adm, Errors: []string{fmt.Sprintf("%q is no user address: want alias@domain", addr)}})
		return
	}
	u := events.NewUser(domain, alias)
	if !mayView(adm, u.Domain) {
		c.render(w, http.StatusForbidden, "user", page{Title: addr, Admin: adm, Errors: []string{u.Domain + ": " + errNotYours.Error()}})
		return
	}
	rec, err := c.dir.User(u)
	if err != nil || rec == nil {
		msg := u.String() + " is not a user of the directory"
		if err != nil {
			msg = err.Error()
		}
		c.render(w, http.StatusNotFound, "user", page{Title: addr, Admin: adm, Errors: []string{msg}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	d := userData{Record: *rec}
	var errs []string
	if d.Presence, err = homenode.PresenceAt(ctx, c.js, u, c.now()); err != nil {
		errs = append(errs, "presence: "+err.Error())
	}
	if adm.Role == events.RoleOrganization { // the cluster's nodes: see overview
		if owners, err := homenode.Leases(ctx, c.js); err == nil {
			d.Owner = owners[rec.Home].Node
		}
	}
	if d.Live, err = c.userState(ctx, rec.Home, u); err != nil {
		errs = append(errs, "sign-ins: home server "+rec.Home+"'s node did not answer: "+err.Error())
	}
	if d.Events, err = c.audit(ctx, events.FactRoot+".*."+events.Token(u.Domain)+"."+events.Token(u.Alias), auditRows); err != nil {
		errs = append(errs, "facts: "+err.Error())
	}
	c.scope(adm, &d)
	c.render(w, http.StatusOK, "user", page{Title: u.String(), Admin: adm, Refresh: true, Errors: errs, Data: d})
}

// scope puts d's watchers and logins in its rows, and leaves out what
// administrator adm may not see of the users of other IM domains, or of
// other organisations, who watch d's user or act on its node: a domain
// administrator sees that they do, their IM domain (or their server's
// host), when, and what they were shown; not who they are, where their
// NOTIFYs go (their Call-Back), nor the address their client connected
// from. Those are another domain's users' data, as that domain's users'
// list and pages are, and their administrators' to see.
func (c *console) scope(adm *projections.Administrator, d *userData) {
	if d.Presence != nil {
		for _, w := range d.Presence.Watchers {
			row := watcherRow{Watch: w}
			if row.Withheld = c.outsider(adm, w.Watcher, w.SubscriberUser, w.Subscriber); row.Withheld != "" {
				row.Watch = homenode.Watch{ID: w.ID, Since: w.Since, Until: w.Until, Sees: w.Sees}
			}
			d.Watchers = append(d.Watchers, row)
		}
		d.Presence.Watchers = nil
	}
	if d.Live != nil {
		for _, s := range d.Live.Logins {
			row := loginRow{Subscription: s}
			if row.Withheld = c.outsider(adm, s.Watcher, s.SubscriberUser, s.Subscriber); row.Withheld != "" {
				row.Subscription = projections.Subscription{ID: s.ID, Node: s.Node, Kind: s.Kind, Credential: s.Credential, Created: s.Created, Expires: s.Expires}
			}
			d.Logins = append(d.Logins, row)
		}
		d.Live.Logins, d.Live.Subscriptions = nil, nil // the page shows neither
	}
	if adm.Role == events.RoleOrganization {
		return
	}
	for i := range d.Events {
		e := &d.Events[i]
		f, ok := e.ev.(events.Fact)
		if !ok {
			continue
		}
		if who := c.actorOutside(adm, f.Metadata()); who != "" {
			e.Actor, e.Client = who, "withheld"
		}
		if sc, ok := f.(*events.SubscriptionCreated); ok {
			if who := c.outsider(adm, sc.Watcher, sc.SubscriberUser, sc.Subscriber); who != "" {
				x := *sc
				x.CallBack, x.Watcher, x.SubscriberUser, x.Subscriber = "withheld", events.User{}, events.User{}, ""
				e.Detail = events.Describe(&x) + " by " + who
			}
		}
	}
}

// outsider returns who the party of a subscription is to administrator
// adm when it is no user of adm's IM domains ("" when it is, and always
// to an organisation administrator): "a user of" its IM domain, or "a
// principal at" the host of another organisation's server. The party is
// the local user the subscription's logical Call-Back names (watcher),
// and the local user who made it (subscriberUser), if any; with neither,
// the principal of another organisation whose URL is subscriber.
func (c *console) outsider(adm *projections.Administrator, watcher, subscriberUser events.User, subscriber string) string {
	if adm.Role == events.RoleOrganization {
		return ""
	}
	for _, u := range []events.User{watcher, subscriberUser} {
		if !u.IsZero() && !mayView(adm, u.Domain) {
			return "a user of " + u.Domain
		}
	}
	if !watcher.IsZero() || !subscriberUser.IsZero() {
		return ""
	}
	return c.principalOutside(adm, subscriber)
}

// actorOutside returns who the actor of a fact is to administrator adm
// (outsider) when it is no user of adm's IM domains, else "": the user it
// signed in as, or else the principal its RVP-From-Principal names. The
// home node itself (system) is no outsider.
func (c *console) actorOutside(adm *projections.Administrator, m *events.Meta) string {
	if _, auth, ok := strings.Cut(m.Auth, ":"); ok {
		if i := strings.LastIndexByte(auth, '@'); i >= 0 && !mayView(adm, auth[i+1:]) {
			return "a user of " + auth[i+1:]
		}
		return ""
	}
	if m.Actor == "" || m.Actor == "system" {
		return ""
	}
	return c.principalOutside(adm, m.Actor)
}

// principalOutside returns who the principal of URL p is to
// administrator adm (outsider) when it is no principal of adm's IM
// domains, else "": "a user of" the IM domain its host reaches, or "a
// principal at" its host (another organisation's server).
func (c *console) principalOutside(adm *projections.Administrator, p string) string {
	u, err := rvp.ParseURL(p)
	if err != nil {
		return "an unknown principal"
	}
	if dom, err := c.dir.DomainByHost(u.Host); err == nil && dom != nil {
		if mayView(adm, dom.Domain) {
			return ""
		}
		return "a user of " + dom.Domain
	}
	return "a principal at " + u.Hostname()
}

// userState asks the node of home for u's state now.
func (c *console) userState(ctx context.Context, home string, u events.User) (*homenode.UserState, error) {
	req, _ := json.Marshal(u)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, events.HomeAdminSubject(home, "user"), req)
	if err != nil {
		return nil, err
	}
	var st homenode.UserState
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return nil, err
	}
	if st.Error != "" {
		return nil, errors.New(st.Error)
	}
	return &st, nil
}

// families are the metrics the nodes reported, by name, every node's.
type families map[string][]*dto.MetricFamily

func parseReports(nodes []nodeReport) families {
	out := families{}
	for _, n := range nodes {
		var p expfmt.TextParser
		fams, err := p.TextToMetricFamilies(strings.NewReader(n.Metrics))
		if err != nil {
			continue
		}
		for name, f := range fams {
			out[name] = append(out[name], f)
		}
	}
	return out
}

// sum adds up the values of metric name whose label has value, over every
// node; ok says whether any node reported one.
func (f families) sum(name, label, value string) (total float64, ok bool) {
	for _, fam := range f[name] {
		for _, m := range fam.GetMetric() {
			match := false
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if !match {
				continue
			}
			ok = true
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Gauge != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total, ok
}

// dirNode names what a directory subject is about: "user alice@example.test",
// "home home1", "domain example.test".
func dirNode(subject string) string {
	parts := strings.Split(strings.TrimPrefix(subject, events.DirectoryRoot+"."), ".")
	for i, p := range parts {
		if v, err := events.Untoken(p); err == nil {
			parts[i] = v
		}
	}
	if len(parts) == 3 && parts[0] == "user" {
		return "user " + parts[2] + "@" + parts[1]
	}
	return strings.Join(parts, " ")
}
