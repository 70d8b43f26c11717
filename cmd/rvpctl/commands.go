package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

func connect(g global) (*nats.Conn, jetstream.JetStream, error) {
	// Pings as often as rvpd's nodes' (natsclient.Liveness): a server gone
	// silent is left for another within seconds, and what was lost in it
	// asked again (directory.Client), rather than waited for.
	opts := append([]nats.Option{nats.Name("rvpctl"), nats.Timeout(5 * time.Second)}, natsclient.Liveness()...)
	opts = append(opts, g.natsClient.Options()...)
	nc, err := nats.Connect(g.nats, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w (%s)", natsclient.RedactURLs(g.nats), err, g.natsClient.Hint(err, g.nats, "is rvpd running? set -nats or RVPCTL_NATS"))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func printJSON(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

// commands are every rvpctl command, in the order the usage lists them.
func commands() []command {
	return append([]command{
		{name: "status", help: "streams, consumers and their backlog; who owns each home server", flags: noFlags(cmdStatus)},
		{name: "streams upgrade", help: "give an existing cluster's requests streams the settings this version needs (nodes never change them)", flags: func(fs *flag.FlagSet) runFunc {
			dry := fs.Bool("dry-run", false, "only show what would change")
			return func(ctx context.Context, e *env, _ []string) error { return cmdStreamsUpgrade(ctx, e, *dry) }
		}},
		{name: "audit", help: "replay fact and directory events", flags: auditFlags},
		{name: "users", help: "the users of the directory, read from its stream", flags: func(fs *flag.FlagSet) runFunc {
			domain := fs.String("domain", "", "only users of this IM `domain`")
			return func(ctx context.Context, e *env, _ []string) error { return cmdUsers(ctx, e.global, *domain) }
		}},
		{name: "presence", args: "USER@DOMAIN", help: "a user's presence at a moment and who could see it, folded from its facts", flags: presenceFlags},
		{name: "verify", help: "have the home nodes compare their projections with rebuilds from their streams, live", flags: func(fs *flag.FlagSet) runFunc {
			home := fs.String("home", "", "home `server` whose node verifies its projections (default: every home server with a fact stream, at this site)")
			return func(ctx context.Context, e *env, _ []string) error { return cmdVerify(ctx, e.global, *home, e.stderr) }
		}},
	}, append(adminCommands(), userFileCommands()...)...)
}

func cmdStatus(ctx context.Context, e *env, _ []string) error {
	return unanswered(status(ctx, e))
}

// status is rvpctl status: every stream with its consumers, then who owns
// each home server.
func status(ctx context.Context, e *env) error {
	g := e.global
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	type consumer struct {
		Name        string `json:"name"`
		Pending     uint64 `json:"pending"`
		AckPending  int    `json:"ack_pending"`
		Redelivered int    `json:"redelivered"`
		// Ephemeral: an ordered consumer of a reader (a node's
		// projection, an rvpctl audit, presence or verify), gone once
		// inactive; counted in one row of the table, not listed.
		Ephemeral bool `json:"ephemeral,omitempty"`
	}
	type stream struct {
		Name      string     `json:"name"`
		Messages  uint64     `json:"messages"`
		Bytes     uint64     `json:"bytes"`
		LastSeq   uint64     `json:"last_seq"`
		LastTime  time.Time  `json:"last_time"`
		Replicas  int        `json:"replicas"`
		Leader    string     `json:"leader,omitempty"` // the NATS server that leads it ("" on a single server)
		Consumers []consumer `json:"consumers,omitempty"`
		Error     string     `json:"error,omitempty"` // why it could not be read (the rest is then empty)
	}
	rows := [][]string{{"STREAM", "REPLICAS", "MESSAGES", "BYTES", "LAST SEQ", "LAST", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED"}}
	factStreams, err := projections.FactStreams(ctx, js)
	if err != nil {
		return err
	}
	reqStreams, err := requestStreams(ctx, js)
	if err != nil {
		return err
	}
	var noTTLs []string // requests streams that keep handoffs only their max age
	// A stream that cannot be read (offline: no server holding it runs)
	// is said so in its row, and status fails at its end: the others are
	// what the operator looks at meanwhile.
	// One that does not exist is said so: no NATS server to start.
	var unreadable, missing []string
	var offline, leaderless bool // why streams could not be read: an error, or no answer
	for _, name := range slices.Concat(reqStreams, factStreams, []string{events.StreamDirectory, events.StreamLookups}) {
		st, err := js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		if err != nil {
			state := "UNREADABLE (below)"
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				missing, state = append(missing, name), "DOES NOT EXIST (below)"
			} else {
				unreadable = append(unreadable, fmt.Sprintf("%s (%v)", name, err))
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
					leaderless = true
				} else {
					offline = true
				}
			}
			if g.json {
				if err := printJSON(g.out, stream{Name: name, Error: err.Error()}); err != nil {
					return err
				}
				continue
			}
			rows = append(rows, []string{name, state, "-", "-", "-", "-", "", "", "", ""})
			continue
		}
		if slices.Contains(reqStreams, name) && !info.Config.AllowMsgTTL {
			noTTLs = append(noTTLs, name)
		}
		s := stream{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, LastSeq: info.State.LastSeq, LastTime: info.State.LastTime,
			Replicas: info.Config.Replicas}
		if info.Cluster != nil {
			s.Leader = info.Cluster.Leader
		}
		infos := st.ListConsumers(ctx)
		for ci := range infos.Info() {
			s.Consumers = append(s.Consumers, consumer{Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered,
				Ephemeral: ci.Config.Durable == ""})
		}
		slices.SortFunc(s.Consumers, func(a, b consumer) int { return strings.Compare(a.Name, b.Name) })
		if g.json {
			if err := printJSON(g.out, s); err != nil {
				return err
			}
			continue
		}
		last := "-"
		if !s.LastTime.IsZero() && s.LastSeq > 0 {
			last = s.LastTime.UTC().Format(time.RFC3339)
		}
		replicas := fmt.Sprint(s.Replicas)
		if s.Replicas > 1 {
			replicas += " (leader " + s.Leader + ")"
		}
		row := []string{s.Name, replicas, fmt.Sprint(s.Messages), fmt.Sprint(s.Bytes), fmt.Sprint(s.LastSeq), last}
		// The durable consumers are listed (home_<home>: a home
		// server's backlog); the ephemeral readers counted.
		var cells [][]string
		readers := 0
		for _, c := range s.Consumers {
			if c.Ephemeral {
				readers++
				continue
			}
			cells = append(cells, []string{c.Name, fmt.Sprint(c.Pending), fmt.Sprint(c.AckPending), fmt.Sprint(c.Redelivered)})
		}
		if readers > 0 {
			cells = append(cells, []string{fmt.Sprintf("(%d ephemeral %s)", readers, plural(readers, "reader")), "", "", ""})
		}
		if len(cells) == 0 {
			rows = append(rows, append(row, "", "", "", ""))
		}
		for i, c := range cells {
			if i > 0 {
				row = []string{"", "", "", "", "", ""}
			}
			rows = append(rows, append(row, c...))
		}
	}
	if !g.json {
		table(g.out, rows)
	}
	warnNoMsgTTLs(e.stderr, noTTLs)
	if err := ownersStatus(ctx, g, js, factStreams); err != nil {
		return err
	}
	var errs []error
	if len(unreadable) > 0 {
		var why []string
		if offline {
			why = append(why, "a stream is offline while none of the NATS servers holding it runs: start them")
		}
		if leaderless {
			why = append(why, "one unanswered has no leader: for up to 10 s after a NATS server that led it stopped (run it again), "+
				"for good while most of the servers holding it are down (start them)")
		}
		errs = append(errs, fmt.Errorf("%d %s could not be read: %s; %s",
			len(unreadable), plural(len(unreadable), "stream"), strings.Join(unreadable, ", "), strings.Join(why, "; ")))
	}
	if len(missing) > 0 {
		verb := "does"
		if len(missing) > 1 {
			verb = "do"
		}
		errs = append(errs, fmt.Errorf("%s %s %s not exist at %s: every rvpd process creates the streams it needs at its start, so none has started against these NATS servers yet, or -nats (RVPCTL_NATS) names other ones",
			plural(len(missing), "stream"), strings.Join(missing, ", "), verb, natsclient.RedactURLs(g.nats)))
	}
	return errors.Join(errs...)
}

// unanswered says, of a JetStream request of rvpctl's that the NATS
// servers left unanswered (no meta leader to answer it), why that is and
// what to do; other errors are returned as they are.
func unanswered(err error) error {
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	return fmt.Errorf("%w: the NATS servers answer no JetStream request: fewer than two of a site's three run (no quorum: start them), "+
		"or one stopped moments ago and they are electing a leader (run it again in 10 s); docs/operations.md, \"A NATS server died\"", err)
}

// requestStreams returns the names of the requests streams: the shared
// one of a deployment of one JetStream domain, or at a site of several
// the one of each home server (events.RequestStream), which has no
// shared one.
func requestStreams(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	var out []string
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(events.RequestRoot+".>"))
	for n := range names.Name() {
		if n == events.StreamRequests || strings.HasPrefix(n, events.RequestStreamPrefix) {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list requests streams: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// homeDeleted reports whether the directory's last event of home is its
// deletion (false when that cannot be read: the home server is listed).
func homeDeleted(ctx context.Context, js jetstream.JetStream, home string) bool {
	st, err := js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		return false
	}
	m, err := projections.FromLeader(st).GetLastMsgForSubject(ctx, events.HomeServerSubject(home))
	return err == nil && m.Header.Get(events.HeaderType) == events.TypeHomeServerDeleted
}

// directoryHomes returns the home servers the directory holds (not
// deleted) at the site js reaches: every one in a deployment of one
// JetStream domain, those the directory puts at that site (its domain)
// or at none otherwise. Only the home servers' own events are read, not the whole
// directory.
func directoryHomes(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	acct, err := js.AccountInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("JetStream account: %w", err)
	}
	site := map[string]string{} // home server → its site, while it exists
	err = directoryEvents(ctx, js, events.DirectoryRoot+".home.>", func(ev events.Event) {
		switch e := ev.(type) {
		case *events.HomeServerCreated:
			site[e.Name] = e.Site
		case *events.HomeServerDeleted:
			delete(site, e.Name)
		}
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for h, s := range site {
		// One of no site is at no other one (homedElsewhere).
		if acct.Domain == "" || s == "" || s == acct.Domain {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out, nil
}

// directoryEvents hands f the directory's events on the subjects filter
// matches, in order, reading those alone (one request each: for a home
// server's or a user's few events, not the whole directory).
func directoryEvents(ctx context.Context, js jetstream.JetStream, filter string, f func(events.Event)) error {
	st, err := js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamDirectory, err)
	}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream %s: %s: %w", events.StreamDirectory, filter, err)
		}
		seq = m.Sequence + 1
		if ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data); err == nil {
			f(ev) // one undecodable is rvpctl audit's to show
		}
	}
}

// homedElsewhere says, at a site of several, that u's home server is at
// another site, whose streams hold its facts (rvpctl reads those of the
// site -nats reaches); "" when its facts are here, or it has no home
// server.
func homedElsewhere(ctx context.Context, js jetstream.JetStream, u events.User) (string, error) {
	acct, err := js.AccountInfo(ctx)
	if err != nil {
		return "", fmt.Errorf("JetStream account: %w", err)
	}
	if acct.Domain == "" {
		return "", nil // one domain: every home server's facts are here
	}
	home := ""
	err = directoryEvents(ctx, js, events.UserSubject(u), func(ev events.Event) {
		switch e := ev.(type) {
		case *events.UserEnabled:
			home = e.Home
		case *events.UserMoved:
			home = e.Home
		}
	})
	if err != nil || home == "" {
		return "", err
	}
	site := ""
	err = directoryEvents(ctx, js, events.HomeServerSubject(home), func(ev events.Event) {
		if e, ok := ev.(*events.HomeServerCreated); ok {
			site = e.Site
		}
	})
	// A home server of no site is at no other one: its node runs without
	// -site, and its facts are in the streams of the servers it reaches.
	if err != nil || site == "" || site == acct.Domain {
		return "", err
	}
	return fmt.Sprintf("%s is homed at home server %s, at site %s, not at site %s whose streams rvpctl reads: give -nats (RVPCTL_NATS) a NATS server of site %s",
		u, home, site, acct.Domain, site), nil
}

// ownersStatus shows which node owns each home server (its lease), and
// since when it last renewed: every home server of this site the
// directory holds (directoryHomes; one created whose node never started
// has neither fact stream nor lease, and its users' requests wait all
// the same), or with a fact stream (factStreams) or a lease but those
// deleted from the directory, and those no node owns said so (NOT OWNED:
// their users' requests wait), whether their lease lapsed (its key aged
// out), was never taken, or was let go (released:NODE).
func ownersStatus(ctx context.Context, g global, js jetstream.JetStream, factStreams []string) error {
	type owner struct {
		Home    string    `json:"home"`
		Owned   bool      `json:"owned"`
		Node    string    `json:"node"`                  // the owner; "" when none (kept: -json readers index it)
		Renewed time.Time `json:"renewed"`               // the lease's last write (zero when none)
		LetGo   string    `json:"released_by,omitempty"` // the node that let it go cleanly
	}
	byHome := map[string]*owner{}
	for _, name := range factStreams {
		home := homeOfStream(name)
		byHome[home] = &owner{Home: home}
	}
	homes, err := directoryHomes(ctx, js)
	if err != nil {
		return err
	}
	for _, home := range homes {
		byHome[home] = &owner{Home: home}
	}
	ls, err := homenode.Leases(ctx, js)
	if err != nil {
		return err
	}
	if ls == nil {
		return nil // a cluster from before leases
	}
	for home, l := range ls {
		byHome[home] = &owner{Home: home, Renewed: l.Renewed, Owned: l.Node != "", Node: l.Node, LetGo: l.LetGo}
	}
	owners := make([]*owner, 0, len(byHome))
	for _, o := range byHome {
		if !o.Owned && homeDeleted(ctx, js, o.Home) {
			continue // its fact stream stays, for the audit; no node will own it
		}
		owners = append(owners, o)
	}
	sort.Slice(owners, func(i, j int) bool { return owners[i].Home < owners[j].Home })
	if g.json {
		for _, o := range owners {
			if err := printJSON(g.out, o); err != nil {
				return err
			}
		}
		return nil
	}
	rows := [][]string{{"HOME SERVER", "OWNED BY NODE", "LEASE RENEWED"}}
	for _, o := range owners {
		switch {
		case o.Owned:
			rows = append(rows, []string{o.Home, o.Node, o.Renewed.UTC().Format(time.RFC3339)})
		case o.LetGo != "":
			rows = append(rows, []string{o.Home, "NOT OWNED (let go by " + o.LetGo + "; its requests wait for a node)", o.Renewed.UTC().Format(time.RFC3339)})
		default:
			rows = append(rows, []string{o.Home, "NOT OWNED (lease lapsed or never taken; its requests wait for a node)", "-"})
		}
	}
	if len(owners) == 0 {
		rows = append(rows, []string{"(none owned: no home node runs)", "", ""})
	}
	fmt.Fprintln(g.out)
	table(g.out, rows)
	return nil
}

// auditEntry is one event as the audit shows it.
type auditEntry struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Stream  string          `json:"stream"`
	Subject string          `json:"subject"`
	Type    string          `json:"type"`
	Event   json.RawMessage `json:"event,omitempty"`
	// Undecodable says why an event could not be read; Event then holds
	// its body as stored when that is JSON, else Raw does.
	Undecodable string `json:"undecodable,omitempty"`
	Raw         []byte `json:"raw,omitempty"`
	// Redacted names the fields of Event emptied before it was shown
	// (password verifiers).
	Redacted []string `json:"redacted,omitempty"`
	// LegacySeq and Copied are those of a fact copied from the single
	// fact stream of older versions (projections.MigrateFacts): its
	// sequence there, and when it was copied; Time is when it was
	// stored there.
	LegacySeq uint64    `json:"legacy_seq,omitempty"`
	Copied    time.Time `json:"copied,omitzero"`
}

// legacyTime gives e, when h are the headers of a fact copied from the
// single fact stream of older versions, the time and sequence it was
// stored with there, and reports whether it did.
func legacyTime(h nats.Header, e *auditEntry) bool {
	v := h.Get(events.HeaderLegacyTime)
	if v == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return false
	}
	e.Copied, e.Time = e.Time, t.UTC()
	e.LegacySeq, _ = strconv.ParseUint(h.Get(events.HeaderLegacySeq), 10, 64)
	return true
}

func auditFlags(fs *flag.FlagSet) runFunc {
	user := fs.String("user", "", "only what concerns this user (`alias@domain`): the facts of her node on every home server she was on, and the directory's events about her")
	since := fs.String("since", "", "only events stored from this `moment` on: RFC 3339 (2026-11-27T09:00:00Z) or a duration ago (1h); default (or 0) all")
	until := fs.String("until", "", "only events stored before this `moment`: RFC 3339 or a duration ago; default now")
	domain := fs.String("domain", "", "only what concerns this IM `domain`: the facts of its users' nodes, its users' directory events and its own")
	by := fs.String("by", "", "only what this `actor` did, on any user's node: a user (alias@domain, whom her credentials named), an administrator (admin:NAME) or another organisation's principal (its URL); "+
		"with -user, what was done to her as well (both: -user and -by the same user show all she did and underwent); with -domain, only what the actor did within the domain (both must hold)")
	typ := fs.String("type", "", "only events whose `type` starts with this (e.g. message, subscription, view, user)")
	noBodies := fs.Bool("no-bodies", false, "leave message bodies out")
	return func(ctx context.Context, e *env, _ []string) error {
		now := time.Now()
		q := auditQuery{user: *user, domain: *domain, by: *by, typ: *typ, noBodies: *noBodies}
		if q.user != "" && q.domain != "" {
			return errors.New("give -user or -domain, not both (-user names the domain)")
		}
		var err error
		if q.from, err = parseMoment("-since", *since, now); err != nil {
			return err
		}
		if q.until, err = parseMoment("-until", *until, now); err != nil {
			return err
		}
		if !q.from.IsZero() && !q.until.IsZero() && !q.from.Before(q.until) {
			return fmt.Errorf("-until %s must be after -since %s: no event is stored between them", q.until.UTC().Format(time.RFC3339), q.from.UTC().Format(time.RFC3339))
		}
		return cmdAudit(ctx, e.global, e.stderr, q)
	}
}

// parseMoment reads a moment given to the flag name: RFC 3339, or a duration
// before now; the zero time for "" or a duration of 0 (no bound).
func parseMoment(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		switch {
		case d < 0:
			return time.Time{}, fmt.Errorf("%s %q: a duration ago is not negative; want RFC 3339 (2026-11-27T09:00:00Z) or a duration ago (90m)", name, v)
		case d == 0:
			return time.Time{}, nil
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2026-11-27T09:00:00Z) or a duration ago (90m)", name, v)
	}
	return t, nil
}

// auditProgressFrom is how many events an audit reads before it shows
// its progress.
const auditProgressFrom = 10000

// auditQuery is what an audit shows: the events of user ("" for all),
// or by ("" for anyone: its actor or the user its credentials named; of
// either with user, of both with domain), stored from from until until (zero: no bound), of
// types starting with typ.
type auditQuery struct {
	user, by    string
	domain      string // only what concerns this IM domain ("" for all; "" with user)
	from, until time.Time
	typ         string
	noBodies    bool
}

// auditEvent is a message read by the audit, with its entry.
type auditEvent struct {
	m      jetstream.Msg
	e      auditEntry
	legacy bool // stored first in the single fact stream of older versions
}

// auditReader reads one stream's events for the audit, a batch at a
// time, so that the audit can show the events of every stream in one
// timeline.
type auditReader struct {
	stream  string
	cons    jetstream.Consumer
	until   time.Time // no event stored at or after it is read
	pending uint64    // the events to read when it began, as its consumer counted them
	// last is the sequence of the last event to read, as the stream's
	// leader has it (projections.LastOf); seen the last fetched. The
	// consumer may be on a replica behind, which counts and has none of
	// the last events: read to its count, an audit ended short, saying
	// nothing.
	last, seen uint64
	read       uint64
	buf        []auditEvent
	done       bool
	// taken is how many of its events the audit took (shown, or left
	// out by its query), the last of sequence lastSeq.
	taken, lastSeq uint64
}

// auditResetAttempts is how many times a reader's ordered consumer is
// created for a fetch (each fetch creates it anew) before the fetch
// fails, 1 s, 2 s then 4 s apart: long enough for the stream to have a
// new leader. Unbounded (the client's default), a fetch on a stream
// deleted or offline since the audit began never returned, nor heeded
// the audit's context.
const auditResetAttempts = 4

// auditFetchWait is how long a reader asks again for events it knows
// are there: its consumer, made on the server that leads the stream,
// may have no responder yet where rvpctl is connected.
const auditFetchWait = 5 * time.Second

// fetch reads the stream's next batch, none after its last event. It asks
// again, for up to auditFetchWait, while the consumer has no responder
// or nothing comes though events remain to be read (its server counts
// some left): an audit does not end short of them as if that were all.
func (r *auditReader) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	deadline := time.Now().Add(auditFetchWait)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		var msgs []jetstream.Msg
		batch, err := r.cons.FetchNoWait(512)
		if err == nil {
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			if err = batch.Error(); errors.Is(err, nats.ErrTimeout) {
				err = nil
			}
		}
		r.read += uint64(len(msgs))
		for _, m := range msgs {
			if md, err := m.Metadata(); err == nil {
				r.seen = max(r.seen, md.Sequence.Stream)
			}
		}
		switch {
		case len(msgs) > 0:
			return msgs, nil // an error comes again at the next
		case err != nil && !errors.Is(err, nats.ErrNoResponders):
			return nil, err
		case err == nil && r.seen >= r.last:
			// Up to the leader's last (fewer than counted, maybe: the
			// stream's retention removes its oldest all along).
			return nil, nil
		case time.Now().After(deadline):
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%d of its %d events read (up to sequence %d of %d), then none came for %s", r.read, r.pending, r.seen, r.last, auditFetchWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// peek returns the stream's next event, nil after its last.
func (r *auditReader) peek(ctx context.Context) (*auditEvent, error) {
	for len(r.buf) == 0 && !r.done {
		msgs, err := r.fetch(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", r.stream, err)
		}
		for _, m := range msgs {
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", r.stream, err)
			}
			ev := auditEvent{m: m, e: auditEntry{Seq: md.Sequence.Stream, Time: md.Timestamp.UTC(), Stream: r.stream, Subject: m.Subject(), Type: m.Headers().Get(events.HeaderType)}}
			ev.legacy = legacyTime(m.Headers(), &ev.e)
			if !ev.legacy && !r.until.IsZero() && !md.Timestamp.Before(r.until) {
				// Stored at or after -until, and so is every later one. (One
				// copied from the single fact stream of older versions, stored
				// here when copied, has its older time: cmdAudit judges it.)
				r.done = true
				break
			}
			r.buf = append(r.buf, ev)
		}
		if len(msgs) == 0 {
			r.done = true
		}
	}
	if len(r.buf) == 0 {
		return nil, nil
	}
	return &r.buf[0], nil
}

// removedBefore says, on stderr, what the audit cannot show of stream:
// the events its retention removed (its first sequence past 1), or, for
// a fact stream whose first fact was copied from the single fact stream
// of older versions after that one's retention had removed facts
// (events.HeaderLegacyCut), those. Nothing when an audit from from would
// not have shown them anyway (they are all older).
func removedBefore(ctx context.Context, js jetstream.JetStream, stream string, from time.Time, stderr io.Writer) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	retention := "the stream's retention"
	if info.Config.MaxAge > 0 {
		retention += fmt.Sprintf(" (max age %s: -audit.retention)", info.Config.MaxAge)
	}
	s := info.State
	if s.Msgs == 0 {
		if s.LastSeq > 0 && (from.IsZero() || !from.After(s.LastTime)) {
			fmt.Fprintf(stderr, "rvpctl: %s: all %d of its events were removed by %s: the audit cannot show them\n",
				stream, s.LastSeq, retention)
		}
		return nil
	}
	first, err := st.GetMsg(ctx, s.FirstSeq)
	if err != nil {
		return fmt.Errorf("stream %s: its first event: %w", stream, err)
	}
	firstTime := first.Time
	if v := first.Header.Get(events.HeaderLegacyTime); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			firstTime = t
		}
	}
	if !from.IsZero() && from.After(firstTime) {
		return nil // what was removed is older than what the audit shows
	}
	if removed := s.FirstSeq - 1; removed > 0 {
		was, them := "was", "it"
		if removed > 1 {
			was, them = "were", "them"
		}
		fmt.Fprintf(stderr, "rvpctl: %s: its first event left is sequence %d: %d %s before it %s removed by %s: the audit cannot show %s\n",
			stream, s.FirstSeq, removed, plural(removed, "event"), was, retention, them)
	} else if cut := first.Header.Get(events.HeaderLegacyCut); cut != "" {
		fmt.Fprintf(stderr, "rvpctl: %s: its first fact was copied from %s after that stream's retention had removed its facts before sequence %s: the audit cannot show those\n",
			stream, events.StreamLegacyFacts, printable(cut))
	}
	return nil
}

// cmdAudit shows the events q asks for, of every fact stream of the site
// and the directory, in one timeline: in the order they were stored
// (each stream's events in its order, those of several streams by their
// time).
func cmdAudit(ctx context.Context, g global, stderr io.Writer, q auditQuery) error {
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	factStreams, err := projections.FactStreams(ctx, js)
	if err != nil {
		return err
	}
	var factFilters, dirFilters []string
	concerns := func(string) bool { return false } // whether a subject is -user's or -domain's
	if q.user != "" {
		alias, domain, ok := strings.Cut(q.user, "@")
		if !ok || alias == "" || domain == "" {
			return fmt.Errorf("-user %q: want alias@domain", q.user)
		}
		u := events.NewUser(domain, alias)
		factFilters = []string{events.FactRoot + ".*." + events.Token(u.Domain) + "." + events.Token(u.Alias)}
		dirFilters = []string{events.UserSubject(u)}
		concerns = func(subj string) bool {
			_, of, err := events.ParseFactSubject(subj)
			return subj == events.UserSubject(u) || err == nil && of == u
		}
		// Its facts of this site are shown, said to be not all there are.
		where, err := homedElsewhere(ctx, js, u)
		if err != nil {
			return err
		}
		if where != "" {
			fmt.Fprintln(stderr, "rvpctl: only the facts this site holds: "+where)
		}
	}
	if q.domain != "" {
		d := events.NewUser(q.domain, "").Domain
		factFilters = []string{events.FactRoot + ".*." + events.Token(d) + ".*"}
		dirFilters = []string{events.UsersFilter(d), events.DomainSubject(d)}
		concerns = func(subj string) bool {
			_, of, err := events.ParseFactSubject(subj)
			return subj == events.DomainSubject(d) || strings.HasPrefix(subj, events.DirectoryRoot+".user."+events.Token(d)+".") || err == nil && of.Domain == d
		}
	}
	if q.by != "" && q.domain == "" {
		// What someone did is on anyone's subject: every event is read
		// (with -domain, only the domain's: -by narrows it).
		factFilters, dirFilters = nil, nil
	}
	streams := append(slices.Clone(factStreams), events.StreamDirectory)
	rows := [][]string{auditHeader}
	// Every stream's reader first, to know how many events there are to
	// read: a large range shows its progress.
	readers := make([]*auditReader, 0, len(streams))
	total := 0
	// A stream that cannot be read (offline: no server holding it runs)
	// is said at once, the others are shown, and the audit fails at its
	// end: what it shows is not all there is.
	var unreadable []string
	cannotRead := func(stream string, err error) {
		unreadable = append(unreadable, stream)
		fmt.Fprintf(stderr, "rvpctl: %s cannot be read: %v; its events are not shown\n", stream, err)
	}
	for _, stream := range streams {
		if err := removedBefore(ctx, js, stream, q.from, stderr); err != nil {
			cannotRead(stream, err)
			continue
		}
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: factFilters, MaxResetAttempts: auditResetAttempts}
		if stream == events.StreamDirectory {
			cfg.FilterSubjects = dirFilters
		}
		if !q.from.IsZero() {
			from := q.from
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
		}
		cons, err := js.OrderedConsumer(ctx, stream, cfg)
		if err != nil {
			cannotRead(stream, err)
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			cannotRead(stream, err)
			continue
		}
		last, err := projections.LastOf(ctx, js, stream, q.from, cfg.FilterSubjects...)
		if err != nil {
			cannotRead(stream, err)
			continue
		}
		readers, total = append(readers, &auditReader{stream: stream, cons: cons, until: q.until, pending: info.NumPending, last: last}), total+int(info.NumPending)
	}
	prog := newCounter(stderr, "audit: events read", total, g.json || total < auditProgressFrom)
	defer prog.end()
	undecodable := 0
	for {
		// The earliest of the streams' next events (the first stream's
		// of equal times).
		var next *auditReader
		var at time.Time
		for _, r := range readers {
			ev, err := r.peek(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				// What was shown of it stays; the rest is not shown.
				if r.taken == 0 {
					cannotRead(r.stream, err)
				} else {
					unreadable = append(unreadable, fmt.Sprintf("%s after sequence %d", r.stream, r.lastSeq))
					fmt.Fprintf(stderr, "rvpctl: %s could not be read past sequence %d: %v; the audit read its %s %s up to it (those it selects are shown), and shows none after it\n",
						r.stream, r.lastSeq, err, thousands(r.taken), plural(r.taken, "event"))
				}
				r.buf, r.done = nil, true
				continue
			}
			if ev != nil && (next == nil || ev.e.Time.Before(at)) {
				next, at = r, ev.e.Time
			}
		}
		if next == nil {
			break
		}
		ae := next.buf[0]
		next.buf = next.buf[1:]
		next.taken, next.lastSeq = next.taken+1, ae.e.Seq
		prog.add(1)
		m, e, t := ae.m, ae.e, ae.e.Type
		if q.typ != "" && !strings.HasPrefix(t, q.typ) {
			continue
		}
		if ae.legacy && (!q.from.IsZero() && e.Time.Before(q.from) || !q.until.IsZero() && !e.Time.Before(q.until)) {
			continue // copied lately, stored long before
		}
		ev, err := events.Decode(t, m.Data())
		if err != nil {
			// Shown where it is, and the audit fails at its end:
			// a replay that skipped events is no success.
			undecodable++
			fmt.Fprintf(stderr, "%s seq %d: %v\n", e.Stream, e.Seq, err)
			e.Undecodable = err.Error()
			if json.Valid(m.Data()) {
				e.Event, e.Redacted = redactJSON(m.Data())
			} else {
				e.Raw = m.Data()
			}
			if g.json {
				if err := printJSON(g.out, e); err != nil {
					return err
				}
				continue
			}
			rows = append(rows, auditRow(e, nil))
			continue
		}
		// -by with -user: what the actor did, and what was done to her;
		// with -domain: what the actor did there, of the domain's events
		// read (the union would be nearly all the domain's events, hiding
		// what an auditor asks: what did this one do in that domain).
		if q.by != "" && !actedBy(eventMeta(ev), q.by) && (q.domain != "" || !concerns(e.Subject)) {
			continue
		}
		if f, ok := ev.(*events.HomeFenced); ok && f.Inner() && !g.json {
			continue // a fence shows its first and last facts (-json each)
		}
		var row []string
		if !g.json {
			row = auditRow(e, ev) // before -no-bodies: it tells the body's size
		}
		if ma, ok := ev.(*events.MessageAccepted); ok && q.noBodies {
			ma.Body = nil
		}
		e.Redacted = redact(ev)
		if e.Event, err = json.Marshal(ev); err != nil {
			return fmt.Errorf("%s seq %d: %w", e.Stream, e.Seq, err)
		}
		if g.json {
			if err := printJSON(g.out, e); err != nil {
				return err
			}
			continue
		}
		rows = append(rows, row)
	}
	if !g.json {
		table(g.out, rows)
	}
	var errs []error
	if len(unreadable) > 0 {
		errs = append(errs, fmt.Errorf("%d %s could not be read (%s): the audit is incomplete; "+
			"a stream is offline while none of the NATS servers holding it runs (rvpctl status): start them, and run the audit again",
			len(unreadable), plural(len(unreadable), "stream"), strings.Join(unreadable, ", ")))
	}
	if undecodable > 0 {
		errs = append(errs, fmt.Errorf("%d %s could not be read (shown as undecodable, each with why): the audit is incomplete; "+
			"an rvpctl older than the rvpd that wrote them does not know their types, upgrade it", undecodable, plural(undecodable, "event")))
	}
	return errors.Join(errs...)
}

// redact removes secrets from an event before it is shown, and returns
// the JSON names of the fields it emptied. No event carries a secret in
// clear, but password verifiers, sealed with the cluster key, are never
// printed by the audit either (DESIGN §4.6): whoever holds the key and
// an audit's output would hold every NT hash.
func redact(ev events.Event) []string {
	switch x := ev.(type) {
	case *events.PasswordSet:
		x.Verifiers = nil
		return []string{"verifiers"}
	case *events.AdminSet:
		x.Verifiers = nil
		return []string{"verifiers"}
	}
	return nil
}

// redactJSON does what redact does to an event the audit could not
// decode, but whose body is a JSON object: it empties every field whose
// name says it holds verifiers.
func redactJSON(data []byte) ([]byte, []string) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return data, nil
	}
	var redacted []string
	for k := range obj {
		if strings.Contains(strings.ToLower(k), "verifier") {
			obj[k] = json.RawMessage("null")
			redacted = append(redacted, k)
		}
	}
	if redacted == nil {
		return data, nil
	}
	sort.Strings(redacted)
	out, err := json.Marshal(obj)
	if err != nil {
		return data, nil
	}
	return out, redacted
}

// eventMeta returns ev's audit record (zero for an event of neither
// kind).
func eventMeta(ev events.Event) events.Meta {
	switch x := ev.(type) {
	case events.Fact:
		return *x.Metadata()
	case events.DirectoryEvent:
		return *x.Metadata()
	}
	return events.Meta{}
}

// actedBy reports whether meta's actor is by, or the user its
// credentials named (Auth "scheme:alias@domain") is.
func actedBy(meta events.Meta, by string) bool {
	if strings.EqualFold(meta.Actor, by) {
		return true
	}
	_, user, ok := strings.Cut(meta.Auth, ":")
	return ok && user != "" && strings.EqualFold(user, by)
}

// auditHeader heads the audit's table: an event's stream and sequence
// say which it is (the streams' events are shown in one timeline).
var auditHeader = []string{"TIME", "STREAM", "SEQ", "TYPE", "NODE/SUBJECT", "ACTOR", "CLIENT", "DETAIL"}

func auditRow(e auditEntry, ev events.Event) []string {
	meta := eventMeta(ev)
	node := e.Subject
	if f, ok := ev.(events.Fact); ok {
		node = f.Subject().String()
	}
	actor := meta.Actor
	switch {
	case meta.Auth != "":
		actor += " (" + meta.Auth + ")"
	case meta.Request != "" && meta.Actor != "system":
		// A request the gateway let go without credentials: another
		// organisation's principal's, taken at its server's word (a
		// home node's own, of a handoff, is the system's).
		actor += " (unauthenticated: another organisation's principal)"
	}
	detail := events.Describe(ev)
	if e.Undecodable != "" {
		detail = "UNDECODABLE: " + e.Undecodable
	}
	return []string{e.Time.Format(time.RFC3339), e.Stream, strconv.FormatUint(e.Seq, 10), e.Type, node, actor, meta.Client, detail}
}

func cmdUsers(ctx context.Context, g global, domain string) error {
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	dir, closeDir, err := readDirectory(ctx, js)
	if err != nil {
		return err
	}
	defer closeDir()
	doms, err := dir.Domains()
	if err != nil {
		return err
	}
	rows := [][]string{{"USER", "ENABLED", "HOME SERVER", "DISPLAY NAME", "E-MAIL", "PUBLIC (LOGICAL) URL"}}
	for _, d := range doms {
		if domain != "" && !strings.EqualFold(domain, d.Domain) {
			continue
		}
		users, err := dir.Users(d.Domain)
		if err != nil {
			return err
		}
		for _, u := range users {
			url := rvp.LogicalURL(d.IMHost, u.User.Alias)
			if g.json {
				if err := printJSON(g.out, struct {
					projections.UserRecord
					URL string `json:"url"`
				}{u, url}); err != nil {
					return err
				}
				continue
			}
			rows = append(rows, []string{u.User.String(), strconv.FormatBool(u.Enabled), u.Home, u.DisplayName, u.Email, url})
		}
	}
	if !g.json {
		table(g.out, rows)
	}
	return nil
}

// readDirectory builds a directory projection in memory from the stream.
func readDirectory(ctx context.Context, js jetstream.JetStream) (*projections.Directory, func(), error) {
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		return nil, nil, err
	}
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	st, err := js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	if err := projections.Replay(ctx, js, events.StreamDirectory, events.DirectoryFilter, info.State.LastSeq, dir); err != nil {
		db.Close()
		return nil, nil, err
	}
	return dir, func() { db.Close() }, nil
}

// verifyWait is how long verify waits for a home server's node to
// answer at all: one started a moment ago is still catching up before it
// takes its home server.
const verifyWait = 15 * time.Second

// askHomeNode sends req to a home server's node, asking again each
// second while no node answers (nats.ErrNoResponders), for up to wait,
// and saying so once on stderr.
func askHomeNode(ctx context.Context, nc *nats.Conn, req *nats.Msg, home string, wait time.Duration, stderr io.Writer) (*nats.Msg, error) {
	deadline := time.Now().Add(wait)
	for said := false; ; said = true {
		msg, err := nc.RequestMsgWithContext(ctx, req)
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			return msg, err
		}
		if !said {
			fmt.Fprintf(stderr, "no node of home server %s answers yet; waiting up to %s for one to start\n", home, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// cmdVerify has the node of home verify its projections, or with home
// "" the node of every home server with a fact stream (at the site
// rvpctl reaches) but those deleted from the directory, one after the
// other. A home server whose lease names no owner is not asked (its node
// is not running: status says NOT OWNED), and said not verified; so is
// one whose node does not answer. verify fails when a projection differs
// or a home server could not be verified.
func cmdVerify(ctx context.Context, g global, home string, stderr io.Writer) error {
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	homes, every := []string{home}, home == ""
	if every {
		if homes, err = verifiableHomes(ctx, js); err != nil {
			return err
		}
		if len(homes) == 0 {
			return errors.New("no home server has a fact stream here: no home node has run yet (rvpctl status)")
		}
	} else if err := verifiableHome(ctx, js, home); err != nil {
		return err
	}
	owned := ownedHomes(ctx, js)
	type row struct {
		Home string `json:"home"`
		projections.Verification
	}
	var results []row
	var diffs []row
	var unverified []string
	var failed error // of the one home server asked (-home), with its results
	rows := [][]string{{"PROJECTION", "POSITION", "KEYS", "RESULT"}}
	if every {
		rows[0] = append([]string{"HOME SERVER"}, rows[0]...)
	}
	for _, h := range homes {
		if every && owned != nil && !owned[h] {
			unverified = append(unverified, h+" (no node owns it)")
			rows = append(rows, []string{h, "-", "-", "-", "not verified: no node owns it (rvpctl status)"})
			continue
		}
		vs, err := verifyHome(ctx, g, nc, h, stderr)
		switch {
		case err != nil && vs == nil && !every:
			return err
		case err != nil && !every:
			failed = err // said after the results it came with
		case err != nil:
			unverified = append(unverified, h+" ("+err.Error()+")")
			rows = append(rows, []string{h, "-", "-", "-", "not verified: " + err.Error()})
		}
		for _, v := range vs {
			r := row{Home: h, Verification: v}
			results = append(results, r)
			result := "equal to a rebuild from its stream"
			if !v.OK() {
				result = "DIFFERS (below)"
				diffs = append(diffs, r)
			}
			cells := []string{v.Projection, fmt.Sprint(v.Position), fmt.Sprint(v.Keys), result}
			if every {
				cells = append([]string{h}, cells...)
			}
			rows = append(rows, cells)
		}
	}
	if g.json {
		for _, r := range results {
			if every {
				printJSON(g.out, r)
			} else {
				printJSON(g.out, r.Verification)
			}
		}
	} else {
		// A table shows a cell on one line; the differences, of many
		// lines, follow it.
		table(g.out, rows)
		for _, r := range diffs {
			name := r.Projection
			if every {
				name += " (node of home server " + r.Home + ")"
			}
			fmt.Fprintf(g.out, "\n%s differs from its rebuild:\n", printable(name))
			for _, l := range strings.Split(strings.TrimRight(r.Diff, "\n"), "\n") {
				fmt.Fprintln(g.out, printable(l))
			}
		}
	}
	if failed != nil {
		return failed
	}
	var errs []string
	if len(diffs) > 0 {
		differ := "differ from their rebuild"
		if len(diffs) == 1 {
			differ = "differs from its rebuild"
		}
		errs = append(errs, fmt.Sprintf("%d %s %s", len(diffs), plural(len(diffs), "projection"), differ))
	}
	if len(unverified) > 0 {
		errs = append(errs, "not verified: "+strings.Join(unverified, ", ")+"; start their nodes and run verify again (-home H for one)")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// verifiableHomes returns the home servers with a fact stream at the site
// js reaches, but those deleted from the directory.
func verifiableHomes(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	streams, err := projections.FactStreams(ctx, js)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range streams {
		if home := homeOfStream(name); !homeDeleted(ctx, js, home) {
			out = append(out, home)
		}
	}
	return out, nil
}

// verifiableHome refuses, at once, a home server no node can verify: one
// deleted from the directory, or one neither the directory nor a fact
// stream knows (a typo), rather than waiting verifyWait for a node that
// will never start. It knows that only in a deployment of one JetStream
// domain; at a site (another site's home server is verified through its
// node, its streams elsewhere) and when the directory cannot be read,
// the node is asked as before.
func verifiableHome(ctx context.Context, js jetstream.JetStream, home string) error {
	acct, err := js.AccountInfo(ctx)
	if err != nil || acct.Domain != "" {
		return nil
	}
	dir, err := js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		return nil
	}
	m, err := projections.FromLeader(dir).GetLastMsgForSubject(ctx, events.HomeServerSubject(home))
	switch {
	case err == nil && m.Header.Get(events.HeaderType) == events.TypeHomeServerDeleted:
		return fmt.Errorf("home server %s was deleted: no node serves it to verify (its facts stay for rvpctl audit); rvpctl home list shows the home servers there are", home)
	case err == nil, !errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	}
	if _, err := js.Stream(ctx, events.FactStream(home)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return fmt.Errorf("home server %s does not exist: rvpctl home list shows the home servers there are", home)
}

// homeOfStream returns the home server whose fact stream is name.
func homeOfStream(name string) string {
	tok := strings.TrimPrefix(name, events.FactStreamPrefix)
	home, err := events.Untoken(tok)
	if err != nil {
		return tok
	}
	return home
}

// ownedHomes returns the home servers whose lease names an owner; nil
// when the leases cannot be read (a cluster from before leases): then
// every node is asked.
func ownedHomes(ctx context.Context, js jetstream.JetStream) map[string]bool {
	ls, err := homenode.Leases(ctx, js)
	if err != nil || ls == nil {
		return nil
	}
	owned := map[string]bool{}
	for home, l := range ls {
		if l.Node != "" {
			owned[home] = true
		}
	}
	return owned
}

// verifyHome asks the node of home to verify its projections, showing
// its rebuilds' progress on stderr (but with -json).
func verifyHome(ctx context.Context, g global, nc *nats.Conn, home string, stderr io.Writer) ([]projections.Verification, error) {
	req := nats.NewMsg(events.HomeAdminSubject(home, "verify"))
	finish := func() {}
	if !g.json {
		// The node reports its rebuilds' progress to an inbox of ours.
		inbox := nats.NewInbox()
		req.Header.Set(projections.HeaderProgress, inbox)
		var err error
		if finish, err = showProgress(nc, inbox, stderr); err != nil {
			return nil, err
		}
	}
	msg, err := askHomeNode(ctx, nc, req, home, verifyWait, stderr)
	finish()
	if err != nil {
		return nil, fmt.Errorf("ask the node of home server %s: %w (is it running?)", home, err)
	}
	var resp struct {
		Results []projections.Verification `json:"results"`
		Error   string                     `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("answer of home server %s: %w", home, err)
	}
	if resp.Error != "" {
		return resp.Results, errors.New(resp.Error)
	}
	return resp.Results, nil
}

func presenceFlags(fs *flag.FlagSet) runFunc {
	at := fs.String("at", "", "the `moment`, RFC 3339 (2026-11-27T09:00:00Z), or a duration ago (90m); default now")
	return func(ctx context.Context, e *env, args []string) error {
		return cmdPresence(ctx, e.global, args[0], *at)
	}
}

// cmdPresence answers "what was X's presence at time T and who could see
// it" from X's facts.
func cmdPresence(ctx context.Context, g global, who, at string) error {
	alias, domain, ok := strings.Cut(who, "@")
	if !ok || alias == "" || domain == "" {
		return fmt.Errorf("%q: want alias@domain", who)
	}
	when := time.Now()
	if at != "" {
		if d, err := time.ParseDuration(at); err == nil {
			when = when.Add(-d)
		} else if t, err := time.Parse(time.RFC3339, at); err == nil {
			when = t
		} else {
			return fmt.Errorf("-at %q: want RFC 3339 (2026-11-27T09:00:00Z) or a duration ago (90m)", at)
		}
	}
	nc, js, err := connect(g)
	if err != nil {
		return err
	}
	defer nc.Close()
	u := events.NewUser(domain, alias)
	// Folded from this site's facts alone, it would show a user of
	// another site offline and unwatched.
	if where, err := homedElsewhere(ctx, js, u); err != nil || where != "" {
		if err == nil {
			err = errors.New(where)
		}
		return err
	}
	rep, err := homenode.PresenceAt(ctx, js, u, when)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g.out, rep)
	}
	fmt.Fprintf(g.out, "%s at %s (%d %s folded, up to sequence %d)\n", printable(rep.Node.String()), rep.At.UTC().Format(time.RFC3339), rep.Facts, plural(rep.Facts, "fact"), rep.Position)
	fmt.Fprintf(g.out, "state: %s to others, %s to its own clients\n", rep.Others, rep.Self)
	if len(rep.Views) > 0 {
		rows := [][]string{{"VIEW", "STATE", "SET", "LEASE UNTIL", "CLIENT"}}
		for _, v := range rep.Views {
			rows = append(rows, []string{strconv.Itoa(int(v.ID)), v.Value, v.Set.UTC().Format(time.RFC3339), v.Expires.UTC().Format(time.RFC3339), v.Source})
		}
		table(g.out, rows)
	}
	if len(rep.Watchers) == 0 {
		fmt.Fprintln(g.out, "watched by nobody")
		return nil
	}
	rows := [][]string{{"SUB", "WATCHER", "CALL-BACK", "SINCE", "UNTIL", "SAW"}}
	for _, w := range rep.Watchers {
		rows = append(rows, []string{strconv.Itoa(int(w.ID)), w.Subscriber, w.CallBack, w.Since.UTC().Format(time.RFC3339), w.Until.UTC().Format(time.RFC3339), w.Sees})
	}
	table(g.out, rows)
	return nil
}
