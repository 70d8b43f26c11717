package directory

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Admin writes the directory: it validates an administrative change
// against the directory projection and appends its directory event,
// fenced by the expected last sequence of the aggregate's subject, so two
// administrators changing one aggregate cannot both win. rvpd's bootstrap
// and the directory service (which rvpctl talks to) share it. Admin does
// not check roles; the Service does.
type Admin struct {
	JetStream jetstream.JetStream
	Directory *projections.Directory
	Keyring   *Keyring
	// Actor names the administrator in the events' audit record.
	Actor string
	// Client is where the administrator acts from, in the events' audit
	// record (events.Meta.Client; Where.String): "" for rvpd itself.
	Client string
	Now    func() time.Time
}

// ErrExists reports an aggregate that already exists.
var ErrExists = errors.New("already exists")

// ErrNotFound reports an aggregate that does not exist.
var ErrNotFound = errors.New("does not exist")

// errChanged is a change refused because the subjects it was fenced by
// changed after it was checked.
var errChanged = errors.New("changed while this change was made; look again and retry")

func (a *Admin) meta() events.Meta {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	return events.Meta{At: now().UTC(), Actor: a.Actor, Client: a.Client}
}

// withActor returns a copy of a acting for actor, from client.
func (a *Admin) withActor(actor, client string) *Admin {
	b := *a
	b.Actor, b.Client = actor, client
	return &b
}

// append appends ev expecting its subject's last sequence to be expect,
// and waits until the directory projection has applied it.
func (a *Admin) append(ctx context.Context, ev events.DirectoryEvent, expect uint64) error {
	_, err := a.appendAt(ctx, ev, expect, "", "")
	return err
}

// appendFenced appends ev expecting the last sequence of the subjects
// matching fence (a wildcard, which what names in a refusal) to be
// expect, and waits until the directory projection has applied it.
func (a *Admin) appendFenced(ctx context.Context, ev events.DirectoryEvent, expect uint64, fence, what string) error {
	_, err := a.appendAt(ctx, ev, expect, fence, what)
	return err
}

// appendAt is append, or with a fence appendFenced, returning the
// sequence ev was stored at.
func (a *Admin) appendAt(ctx context.Context, ev events.DirectoryEvent, expect uint64, fence, what string) (uint64, error) {
	msg, err := directoryMsg(ev)
	if err != nil {
		return 0, err
	}
	id := rand.Text()
	opt := jetstream.WithExpectLastSequencePerSubject(expect)
	if fence != "" {
		opt = jetstream.WithExpectLastSequenceForSubject(expect, fence)
	}
	// Sent again when its answer does not come, with the same message
	// id: a first one stored after all is then answered as a duplicate
	// (its sequence), or found ours below.
	ack, err := askAgain(ctx, "append "+ev.Type()+" to the directory stream", func(ctx context.Context) (*jetstream.PubAck, error) {
		return a.JetStream.PublishMsg(ctx, msg, opt, jetstream.WithMsgID(id))
	})
	if err != nil {
		if isWrongLastSequence(err) {
			// nats.go sends a publish answered "no responders" again, and on
			// a cluster the first may have been stored after all: then the
			// subject's last event is this one.
			if seq, ok := a.ours(ctx, ev.DirSubject(), id); ok {
				return seq, a.applied(ctx, ev, seq)
			}
			switch {
			case fence != "":
				return 0, fmt.Errorf("%s %w", what, errChanged)
			case expect == 0:
				return 0, ErrExists
			}
			return 0, fmt.Errorf("%s changed while this change was made; look again and retry", ev.DirSubject())
		}
		if unanswered(err) {
			return 0, fmt.Errorf("%w; the change may have been recorded all the same: look before making it again", err)
		}
		return 0, err
	}
	return ack.Sequence, a.applied(ctx, ev, ack.Sequence)
}

// askTimeout bounds the wait for the answer of one JetStream request of
// an administrative change. A request can be lost with no answer: sent
// to a stream whose leader has just died (dropped until raft elects
// another, 4 to 9 s), or through a server gone silent (SIGSTOP, a frozen
// virtual machine) before the connection notices
// (natsclient.PingInterval) and moves to another server. nats.go waits
// for an answer as long as the context lets it, and sends nothing again:
// a change's first request lost made it wait for its whole deadline
// (the directory service's 25 s), and fail with "context deadline
// exceeded" though the cluster served again a few seconds later
// (testcluster TestAdminChangeThroughPausedServer).
const askTimeout = 3 * time.Second

// askAgain makes a JetStream request by f, given askTimeout each time,
// and makes it again while its answer does not come (or no one is there
// to answer yet), until ctx ends. f must be safe to repeat: a read, or
// an append with a message id. The error names what was asked.
func askAgain[T any](ctx context.Context, what string, f func(context.Context) (T, error)) (T, error) {
	return askAgainEvery(ctx, askTimeout, func(err error) error { return fmt.Errorf("%s: %w", what, err) }, func(tries int) error {
		return fmt.Errorf("%s: no answer in %d tries (%w): is the NATS cluster up, with a leader for the directory stream (nats stream info %s)?",
			what, tries, context.Cause(ctx), events.StreamDirectory)
	}, f)
}

// askAgainEvery is askAgain giving each try per: failed makes the error
// of a request that failed otherwise than unanswered, lost the error of
// tries all unanswered until ctx ended.
func askAgainEvery[T any](ctx context.Context, per time.Duration, failed func(error) error, lost func(tries int) error, f func(context.Context) (T, error)) (T, error) {
	for tries := 1; ; tries++ {
		actx, cancel := context.WithTimeout(ctx, per)
		v, err := f(actx)
		cancel()
		switch {
		case err == nil:
			return v, nil
		case !unanswered(err):
			return v, failed(err)
		case ctx.Err() != nil:
			return v, lost(tries)
		}
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrDisconnected) {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// unanswered reports whether err is a JetStream request's answer not
// come: lost (with the connection, too: the request may have been
// taken before it broke), or no one there yet to answer.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected)
}

// applied waits until the directory projection has applied ev, stored at
// seq. A projection that does not get there in time makes an error that
// says the change was made nonetheless: told only "context deadline
// exceeded", an administrator took a change that was done for one that
// failed.
func (a *Admin) applied(ctx context.Context, ev events.DirectoryEvent, seq uint64) error {
	if err := a.Directory.WaitFor(ctx, seq); err != nil {
		return fmt.Errorf("the change was made (%s recorded at directory sequence %d), but this node's directory has not applied it yet (%w): it takes effect as the directory catches up: look again in a moment rather than make it again",
			ev.Type(), seq, err)
	}
	return nil
}

// ours reports whether the last event of subject is the one appended
// with message id id, and its sequence.
func (a *Admin) ours(ctx context.Context, subject, id string) (uint64, bool) {
	m, err := a.lastMsg(ctx, subject)
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != id {
		return 0, false
	}
	return m.Sequence, true
}

// version returns the last sequence of a directory subject (or of the
// subjects a wildcard matches), 0 if none.
func (a *Admin) version(ctx context.Context, subject string) (uint64, error) {
	m, err := a.lastMsg(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// lastMsg returns the last message of a directory subject (or of the
// subjects a wildcard matches), asked again while no answer comes.
func (a *Admin) lastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return askAgain(ctx, "the last event of "+subject+" in the directory stream", func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		st, err := a.JetStream.Stream(ctx, events.StreamDirectory)
		if err != nil {
			return nil, err
		}
		// From the leader: a replica behind answers a direct get with an
		// older version (a change then fenced by it is refused, and
		// tried again) or none (the aggregate taken for new).
		return projections.FromLeader(st).GetLastMsgForSubject(ctx, subject)
	})
}

// current returns the last sequence of a directory subject (0 if none)
// once the directory projection has applied it: what the projection then
// holds of the aggregate is what a change appended expecting that
// sequence is decided on. Without the wait, a projection behind the
// stream (another node's, a site's copy) would have a change decided on
// a record older than the one it is fenced by, and win over the change
// it did not see.
func (a *Admin) current(ctx context.Context, subject string) (uint64, error) {
	ver, err := a.version(ctx, subject)
	if err != nil {
		return 0, err
	}
	if err := a.Directory.WaitFor(ctx, ver); err != nil {
		return 0, err
	}
	return ver, nil
}

// caughtUp waits until the directory projection has applied the last
// events of subjects (wildcards allowed): the other aggregates a change
// is checked against (a user's IM domain and home server). Without it, a
// projection behind the stream would have a user enabled in an IM domain,
// or on a home server, that another administrator deleted a moment ago.
func (a *Admin) caughtUp(ctx context.Context, subjects ...string) error {
	var last uint64
	for _, s := range subjects {
		ver, err := a.version(ctx, s)
		if err != nil {
			return err
		}
		last = max(last, ver)
	}
	return a.Directory.WaitFor(ctx, last)
}

// appendNext appends ev after whatever its subject holds now: for a
// change that reads nothing of its aggregate (the settings).
func (a *Admin) appendNext(ctx context.Context, ev events.DirectoryEvent) error {
	ver, err := a.version(ctx, ev.DirSubject())
	if err != nil {
		return err
	}
	return a.append(ctx, ev, ver)
}

// CreateDomain creates an IM domain. It fails with ErrExists when the
// domain exists, and when one of its host names already reaches another
// domain.
func (a *Admin) CreateDomain(ctx context.Context, s DomainSpec) error {
	if s.Domain == "" || s.IMHost == "" {
		return errors.New("an IM domain needs a name and an IM host (for example example.com and im.example.com)")
	}
	var err error
	if s.Domain, err = hostName("IM domain", s.Domain); err != nil {
		return err
	}
	if s.IMHost, err = hostName("IM host", s.IMHost); err != nil {
		return err
	}
	s.EmailDomains, s.Hosts = slices.Clone(s.EmailDomains), slices.Clone(s.Hosts)
	for i, h := range s.EmailDomains {
		if s.EmailDomains[i], err = hostName("e-mail domain", h); err != nil {
			return err
		}
	}
	for i, h := range s.Hosts {
		if s.Hosts[i], err = hostName("host", h); err != nil {
			return err
		}
	}
	if s.NTDomain == "" {
		s.NTDomain = strings.ToUpper(strings.Split(s.Domain, ".")[0])
	}
	if len(s.EmailDomains) == 0 {
		s.EmailDomains = []string{s.Domain}
	}
	// Fenced by every domain's events, not this one's alone: another
	// domain created meanwhile may claim one of its host names. Another
	// domain's change is no conflict in itself: the checks are made
	// again on the projection that holds it (each time, a change of
	// another administrator's was appended).
	return retryFenced(ctx, func() error { return a.createDomain(ctx, s) })
}

// hostName returns host as requests name it, the form the gateway gives
// a Host header before it looks it up (rvp.NormalizeHost: lower-case,
// without port 80) and without the trailing dot of a name written in
// full (im.example.com.); or an error saying what to give instead of a
// name no request can carry. A port (host:port) and an address ([::1])
// are kept.
func hostName(what, host string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(host))
	for _, r := range h {
		if r > 0x7e {
			return "", fmt.Errorf("%s %q: give its ASCII form, as clients send it (for bücher.example: xn--bcher-kva.example)", what, host)
		}
	}
	name := events.Hostname(h)
	port := h[len(name):]
	name = strings.TrimSuffix(name, ".")
	bad := fmt.Errorf("%s %q: a host name has letters, digits, '-' and '.' only, an address is written 192.0.2.1 or [2001:db8::1], and a port is digits (for example im.example.com or im.example.com:8080)", what, host)
	if strings.Trim(name, ".") == "" || strings.Contains(name, "..") || strings.HasPrefix(name, ".") {
		return "", bad
	}
	n, err := rvp.NormalizeHost(name + port)
	if err != nil {
		return "", bad
	}
	return n, nil
}

// domainName returns an IM domain's name as the directory keeps it
// (hostName's form: lower-case, without the trailing dot of a name
// written in full), for looking one up as an administrator names it.
func domainName(domain string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
}

// retryFenced makes a change fenced by many subjects (attempt: its checks
// on the projection, then its append) again while it is refused only
// because one of them moved (errChanged): another change, of another
// aggregate, was appended meanwhile. Checked again, it may well be made.
func retryFenced(ctx context.Context, attempt func() error) error {
	var err error
	for range maxFenceRetries {
		if err = attempt(); !errors.Is(err, errChanged) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// maxFenceRetries bounds the attempts of a change fenced by many
// subjects (a wildcard, or the whole directory), each one refused
// because another change was appended: an import running meanwhile
// appends thousands a second.
const maxFenceRetries = 100

// createDomain makes one attempt at CreateDomain.
func (a *Admin) createDomain(ctx context.Context, s DomainSpec) error {
	ver, err := a.current(ctx, events.DomainsFilter)
	if err != nil {
		return err
	}
	if dom, err := a.Directory.Domain(s.Domain); err != nil {
		return err
	} else if dom != nil {
		return fmt.Errorf("IM domain %s: %w", s.Domain, ErrExists)
	}
	if err := a.hostsFree(slices.Concat([]string{s.Domain, s.IMHost}, s.EmailDomains, s.Hosts), ""); err != nil {
		return err
	}
	ev := &events.DomainCreated{Meta: a.meta(), Domain: s.Domain, IMHost: s.IMHost, EmailDomains: s.EmailDomains, Hosts: s.Hosts, NTDomain: s.NTDomain}
	return a.appendFenced(ctx, ev, ver, events.DomainsFilter, "the IM domains")
}

// hostsFree returns an error naming the first of hosts that reaches an
// IM domain other than domain ("" for none), on the projection as it is.
func (a *Admin) hostsFree(hosts []string, domain string) error {
	for _, h := range hosts {
		other, err := a.Directory.DomainByHost(h)
		if err != nil {
			return err
		}
		if other != nil && other.Domain != domain {
			return fmt.Errorf("host %s already reaches IM domain %s; choose another host name, or remove it from that domain first (rvpctl domain hosts %s -remove %s)", h, other.Domain, other.Domain, h)
		}
	}
	return nil
}

// DeleteDomain deletes an IM domain that has no users left, nor
// routers: deleted with it, they stayed in the router list, and their
// mode (redirect or proxy) applied again, unseen, to a domain of that
// name created later.
//
// It is fenced by the events of the domain's users, not the domain's own:
// a user enabled in it meanwhile (decided on a projection that has not
// the deletion yet) fails the deletion, rather than be left enabled in an
// IM domain that no longer exists. Another user's change meanwhile has it
// checked again (retryFenced). A router's subject holds no domain, and one
// fence is all an append takes: a router created in the domain between
// the deletion's check and its append (CreateRouter is fenced by the
// domains' events, so none can be after it) is deleted once the deletion
// is made (dropRoutersOf), and a domain administrator given the domain
// then has it taken away (dropAdminsOf).
func (a *Admin) DeleteDomain(ctx context.Context, domain string) error {
	domain = domainName(domain)
	if err := retryFenced(ctx, func() error { return a.deleteDomain(ctx, domain) }); err != nil {
		return err
	}
	if err := a.dropRoutersOf(ctx, domain); err != nil {
		return err
	}
	return a.dropAdminsOf(ctx, domain)
}

// deleteDomain makes one attempt at DeleteDomain.
func (a *Admin) deleteDomain(ctx context.Context, domain string) error {
	users := events.UsersFilter(domain)
	ver, err := a.current(ctx, users)
	if err != nil {
		return err
	}
	if err := a.caughtUp(ctx, events.DomainSubject(domain), events.RoutersFilter, events.AdminFilter); err != nil {
		return err
	}
	dom, err := a.Directory.Domain(domain)
	if err != nil {
		return err
	}
	if dom == nil {
		return fmt.Errorf("IM domain %s: %w", domain, ErrNotFound)
	}
	recs, err := a.Directory.Users(domain)
	if err != nil {
		return err
	}
	// A disabled user's record stays (no operation removes one): only the
	// enabled users hold the domain, as they hold a home server.
	enabled := slices.DeleteFunc(recs, func(u projections.UserRecord) bool { return !u.Enabled })
	if len(enabled) > 0 {
		return fmt.Errorf("IM domain %s still has %d enabled users (%s first); disable them first (rvpctl user disable)", domain, len(enabled), enabled[0].User)
	}
	routers, err := a.Directory.RoutersOf(domain)
	if err != nil {
		return err
	}
	if len(routers) > 0 {
		return fmt.Errorf("IM domain %s still has %d routers (%s first); delete them first (rvpctl router delete %s)", domain, len(routers), routers[0].Name, routers[0].Name)
	}
	// Nor domain administrators of it: left naming it, they would
	// administer a domain of that name created later.
	admins, err := a.Directory.Administrators()
	if err != nil {
		return err
	}
	for _, adm := range admins {
		if adm.Role == events.RoleDomain && administers(&adm, domain) {
			return fmt.Errorf("IM domain %s still has domain administrator %s (of %s); remove it, or give it other domains, first (rvpctl admin remove %s, or rvpctl admin add %s -role domain -domains ...)",
				domain, adm.Name, strings.Join(adm.Domains, ", "), adm.Name, adm.Name)
		}
	}
	return a.appendFenced(ctx, &events.DomainDeleted{Meta: a.meta(), Domain: domain}, ver, users, "the users of IM domain "+domain)
}

// dropRoutersOf deletes the routers of IM domain domain, just deleted
// (and applied by the projection): those created in it between the
// deletion's check and its append, which the deletion's fence (its
// users' events) did not see. Their deletions are recorded events, by
// the administrator who deleted the domain.
func (a *Admin) dropRoutersOf(ctx context.Context, domain string) error {
	routers, err := a.Directory.RoutersOf(domain)
	if err != nil {
		return err
	}
	for _, r := range routers {
		ver, err := a.current(ctx, events.RouterSubject(r.Name))
		if err == nil {
			err = a.dropRouter(ctx, r.Name, domain, ver)
		}
		if err != nil {
			// Not wrapped: the domain's deletion is made.
			return fmt.Errorf("IM domain %s is deleted, but its router %s, created meanwhile, is left (%v); delete it (rvpctl router delete %s)", domain, r.Name, err, r.Name)
		}
	}
	return nil
}

// dropAdminsOf takes IM domain domain, just deleted (and applied by the
// projection), from the domain administrators given it between the
// deletion's check and its append, which neither fence saw (the
// deletion's is its users' events, the administrator's the
// configuration's): left naming it, they would administer a domain of
// that name created later. An administrator of other domains keeps
// those; one of this domain only is removed. The changes are recorded
// events, by the administrator who deleted the domain.
func (a *Admin) dropAdminsOf(ctx context.Context, domain string) error {
	admins, err := a.Directory.Administrators()
	if err != nil {
		return err
	}
	for _, adm := range admins {
		if adm.Role != events.RoleDomain || !administers(&adm, domain) {
			continue
		}
		if err := retryFenced(ctx, func() error { return a.dropAdminDomain(ctx, adm.Name, domain) }); err != nil {
			// Not wrapped: the domain's deletion is made.
			return fmt.Errorf("IM domain %s is deleted, but domain administrator %s, given it meanwhile, still names it (%v); remove it or give it other domains (rvpctl admin remove %s, or rvpctl admin add %s -role domain -domains ...)",
				domain, adm.Name, err, adm.Name, adm.Name)
		}
	}
	return nil
}

// dropAdminDomain takes IM domain domain, deleted, from domain
// administrator name's domains, at its subject's last sequence, unless
// the projection (there) has no such administrator of it any more, or
// has the domain again (created anew since: it may be the new domain's
// administrator).
func (a *Admin) dropAdminDomain(ctx context.Context, name, domain string) error {
	ver, err := a.current(ctx, events.AdminSubject(name))
	if err != nil {
		return err
	}
	if err := a.caughtUp(ctx, events.DomainSubject(domain)); err != nil {
		return err
	}
	if dom, err := a.Directory.Domain(domain); err != nil || dom != nil {
		return err
	}
	adm, err := a.Directory.Administrator(name)
	if err != nil || adm == nil || adm.Role != events.RoleDomain || !administers(adm, domain) {
		return err
	}
	rest := slices.DeleteFunc(slices.Clone(adm.Domains), func(d string) bool { return strings.EqualFold(d, domain) })
	if len(rest) == 0 {
		return a.append(ctx, &events.AdminRemoved{Meta: a.meta(), Name: name}, ver)
	}
	return a.append(ctx, &events.AdminSet{Meta: a.meta(), Name: name, Role: adm.Role, Domains: rest, Verifiers: adm.Verifiers}, ver)
}

// dropRouter deletes router name, of IM domain domain, at its subject's
// sequence ver, unless the projection (there) has it no more, or has the
// domain again (created anew since: the router is the new domain's).
func (a *Admin) dropRouter(ctx context.Context, name, domain string, ver uint64) error {
	if err := a.caughtUp(ctx, events.DomainSubject(domain)); err != nil {
		return err
	}
	if dom, err := a.Directory.Domain(domain); err != nil || dom != nil {
		return err
	}
	r, err := a.Directory.Router(name)
	if err != nil || r == nil || !strings.EqualFold(r.Domain, domain) {
		return err
	}
	return a.append(ctx, &events.RouterDeleted{Meta: a.meta(), Name: name}, ver)
}

// CreateHomeServer creates a home server.
func (a *Admin) CreateHomeServer(ctx context.Context, name, host, site string, hostsUsers bool) error {
	if name == "" || host == "" {
		return errors.New("a home server needs a name and a host name (for example home1 and imhome1.example.com)")
	}
	host, err := hostName("home server host", host)
	if err != nil {
		return err
	}
	ver, err := a.current(ctx, events.HomeServerSubject(name))
	if err != nil {
		return err
	}
	if hs, err := a.Directory.HomeServer(name); err != nil {
		return err
	} else if hs != nil {
		return fmt.Errorf("home server %s: %w", name, ErrExists)
	}
	return a.append(ctx, &events.HomeServerCreated{Meta: a.meta(), Name: name, Host: host, Site: site, HostsUsers: hostsUsers}, ver)
}

// AllowUsers sets whether a home server may host user accounts.
func (a *Admin) AllowUsers(ctx context.Context, name string, allow bool) error {
	ver, err := a.current(ctx, events.HomeServerSubject(name))
	if err != nil {
		return err
	}
	hs, err := a.Directory.HomeServer(name)
	if err != nil {
		return err
	}
	if hs == nil {
		return fmt.Errorf("home server %s: %w", name, ErrNotFound)
	}
	return a.append(ctx, &events.HomeServerChanged{Meta: a.meta(), Name: name, HostsUsers: allow}, ver)
}

// DeleteHomeServer deletes a home server no user is homed on. It is
// fenced by every user's events, not the home server's own: a user
// enabled on it or moved to it meanwhile (decided on a projection that
// has not the deletion yet) fails the deletion, rather than be homed on a
// home server that no longer exists. Another user's change meanwhile has
// it checked again (retryFenced).
func (a *Admin) DeleteHomeServer(ctx context.Context, name string) error {
	return retryFenced(ctx, func() error { return a.deleteHomeServer(ctx, name) })
}

// deleteHomeServer makes one attempt at DeleteHomeServer.
func (a *Admin) deleteHomeServer(ctx context.Context, name string) error {
	users := events.UsersFilter("")
	ver, err := a.current(ctx, users)
	if err != nil {
		return err
	}
	if err := a.caughtUp(ctx, events.HomeServerSubject(name)); err != nil {
		return err
	}
	hs, err := a.Directory.HomeServer(name)
	if err != nil {
		return err
	}
	if hs == nil {
		return fmt.Errorf("home server %s: %w", name, ErrNotFound)
	}
	// The users of the home server only: an import running meanwhile may
	// have this checked a hundred times.
	if u, err := a.Directory.EnabledUserOn(name); err != nil {
		return err
	} else if u != nil {
		return fmt.Errorf("home server %s still hosts %s; move its users first (rvpctl user move)", name, u.User)
	}
	return a.appendFenced(ctx, &events.HomeServerDeleted{Meta: a.meta(), Name: name}, ver, users, "the users")
}

// CreateRouter creates a router for an IM domain; mode is one of the
// events.Router modes ("" for auto).
func (a *Admin) CreateRouter(ctx context.Context, name, domain, host, mode string) error {
	if name == "" || host == "" {
		return errors.New("a router needs a name and a host name (for example router1 and im.example.com)")
	}
	host, err := hostName("router host", host)
	if err != nil {
		return err
	}
	switch mode {
	case "":
		mode = events.RouterAuto
	case events.RouterAuto, events.RouterRedirect, events.RouterProxy:
	default:
		return fmt.Errorf("router mode %q: want auto, redirect or proxy", mode)
	}
	// Fenced by the IM domains' events (and the routers', its own
	// included: ConfigFilter), not its own subject alone: a domain
	// deleted between the check and the append (or on a projection that
	// had not the deletion yet) got a router that no longer served
	// anything, until a domain of that name was created again.
	return retryFenced(ctx, func() error { return a.createRouter(ctx, name, domainName(domain), host, mode) })
}

// createRouter makes one attempt at CreateRouter.
func (a *Admin) createRouter(ctx context.Context, name, domain, host, mode string) error {
	ver, err := a.current(ctx, events.ConfigFilter)
	if err != nil {
		return err
	}
	dom, err := a.Directory.Domain(domain)
	if err != nil {
		return err
	}
	if dom == nil {
		return fmt.Errorf("IM domain %s does not exist; create it first (rvpctl domain create %s)", domain, domain)
	}
	if r, err := a.Directory.Router(name); err != nil {
		return err
	} else if r != nil {
		return fmt.Errorf("router %s: %w", name, ErrExists)
	}
	return a.appendFenced(ctx, &events.RouterCreated{Meta: a.meta(), Name: name, Domain: dom.Domain, Host: host, Mode: mode}, ver, events.ConfigFilter, "the IM domains, home servers, routers or administrators")
}

// DeleteRouter deletes a router.
func (a *Admin) DeleteRouter(ctx context.Context, name string) error {
	ver, err := a.current(ctx, events.RouterSubject(name))
	if err != nil {
		return err
	}
	if r, err := a.Directory.Router(name); err != nil {
		return err
	} else if r == nil {
		return fmt.Errorf("router %s: %w", name, ErrNotFound)
	}
	return a.append(ctx, &events.RouterDeleted{Meta: a.meta(), Name: name}, ver)
}

// checkHome returns an error naming the fix when users cannot be homed on
// home.
func (a *Admin) checkHome(home string) error {
	hs, err := a.Directory.HomeServer(home)
	if err != nil {
		return err
	}
	if hs == nil {
		return fmt.Errorf("home server %s does not exist; create it first (rvpctl home create %s -host <host name>)", home, home)
	}
	if !hs.HostsUsers {
		return fmt.Errorf("home server %s does not host user accounts; allow it (rvpctl home allow-users %s) or choose another", home, home)
	}
	return nil
}

// EnableUser enables a user for instant messaging on a home server. A
// disabled user enabled again keeps its display name, e-mail and Windows
// account unless they are given again.
//
// A disabled user enabled again on another home server than the one it
// was on is enabled there, then moved (user.moved, as rvpctl user move):
// its former home server may still hold its state (its watchers'
// subscriptions, its presence, its ACL), which it hands over for a move
// and for nothing else. Enabled afresh on the other, the state stayed
// behind and its watchers never heard of it again.
func (a *Admin) EnableUser(ctx context.Context, s UserSpec) error {
	// Names are kept lower-case, as requests look them up (a client of
	// the directory service other than rvpctl may send them otherwise).
	u := canonicalUser(s.User)
	if err := checkAlias(u); err != nil {
		return err
	}
	return retryFenced(ctx, func() error { return a.enableUser(ctx, u, s) })
}

// checkedAt returns the directory's last sequence once the projection
// has applied it: a change that reads other aggregates (a user's IM
// domain and home server) is decided on the projection there and
// appended fenced by the whole directory at it. Fenced by its own subject
// alone, an IM domain or home server deleted between its check and its
// append (the deletion, fenced by the users' events, saw no user yet)
// left both done: a user of a domain, or on a home server, that no longer
// exists.
func (a *Admin) checkedAt(ctx context.Context) (uint64, error) {
	return a.current(ctx, events.DirectoryFilter)
}

func (a *Admin) enableUser(ctx context.Context, u events.User, s UserSpec) error {
	at, err := a.checkedAt(ctx)
	if err != nil {
		return err
	}
	rec, err := a.Directory.User(u)
	if err != nil {
		return err
	}
	if rec != nil && rec.Enabled {
		return fmt.Errorf("%s: %w", u, ErrExists)
	}
	if rec != nil {
		// Enabled again: what is not given again stays as it was.
		s.DisplayName = cmp.Or(s.DisplayName, rec.DisplayName)
		s.Email = cmp.Or(s.Email, rec.Email)
		s.NTAccount = cmp.Or(s.NTAccount, rec.NTAccount)
	}
	// The home server it was on, if it is another that still exists.
	var was string
	if rec != nil && rec.Home != "" && rec.Home != s.Home {
		was = rec.Home
	}
	if err := a.checkDomainHome(u.Domain, s.Home); err != nil {
		return err
	}
	if was != "" {
		if hs, err := a.Directory.HomeServer(was); err != nil {
			return err
		} else if hs == nil {
			was = "" // deleted: nobody serves what it held
		}
	}
	ev := &events.UserEnabled{Meta: a.meta(), User: u, Home: s.Home, DisplayName: s.DisplayName, Email: s.Email, NTAccount: s.NTAccount}
	if was == "" {
		return a.appendFenced(ctx, ev, at, events.DirectoryFilter, "the directory")
	}
	ev.Home = was
	seq, err := a.appendAt(ctx, ev, at, events.DirectoryFilter, "the directory")
	if err != nil && seq == 0 {
		return err
	}
	if err != nil {
		return fmt.Errorf("%s is enabled again on home server %s, where it was, but not moved to %s: %w; then move it (rvpctl user move %s -home %s)", u, was, s.Home, err, u, s.Home)
	}
	// Moved as MoveUser does, fenced from the enabling on: a change in
	// between (the new home server deleted) makes MoveUser check again.
	err = a.appendFenced(ctx, &events.UserMoved{Meta: a.meta(), User: u, From: was, Home: s.Home}, seq, events.DirectoryFilter, "the directory")
	if errors.Is(err, errChanged) {
		err = a.MoveUser(ctx, u, s.Home)
	}
	if err != nil {
		// Not wrapped: the enabling is made, and a refusal of the move
		// (errChanged, MoveUser outlasted by other changes) would have
		// retryFenced make the enabling again, which finds its own change
		// and answers that the user already exists.
		return fmt.Errorf("%s is enabled again on home server %s, where it was, but not moved to %s: %v; move it (rvpctl user move %s -home %s)", u, was, s.Home, err, u, s.Home)
	}
	return nil
}

func (a *Admin) enabledUser(u events.User) (*projections.UserRecord, error) {
	rec, err := a.Directory.User(u)
	if err != nil {
		return nil, err
	}
	if rec == nil || !rec.Enabled {
		return nil, fmt.Errorf("%s is not an enabled user (rvpctl user enable %s -home <home server>)", u, u)
	}
	return rec, nil
}

// DisableUser disables a user: its next login is refused, and its home
// server ends its logins and presence (its watchers see it offline) but
// keeps its watchers' subscriptions, for the day it is enabled again
// (homenode/disable.go).
func (a *Admin) DisableUser(ctx context.Context, u events.User) error {
	u = canonicalUser(u)
	ver, err := a.current(ctx, events.UserSubject(u))
	if err != nil {
		return err
	}
	if _, err := a.enabledUser(u); err != nil {
		return err
	}
	return a.append(ctx, &events.UserDisabled{Meta: a.meta(), User: u}, ver)
}

// MoveUser moves a user to another home server.
func (a *Admin) MoveUser(ctx context.Context, u events.User, home string) error {
	u = canonicalUser(u)
	return retryFenced(ctx, func() error { return a.moveUser(ctx, u, home) })
}

func (a *Admin) moveUser(ctx context.Context, u events.User, home string) error {
	at, err := a.checkedAt(ctx)
	if err != nil {
		return err
	}
	rec, err := a.enabledUser(u)
	if err != nil {
		return err
	}
	if rec.Home == home {
		return fmt.Errorf("%s is already on home server %s", u, home)
	}
	if err := a.checkHome(home); err != nil {
		return err
	}
	return a.appendFenced(ctx, &events.UserMoved{Meta: a.meta(), User: u, From: rec.Home, Home: home}, at, events.DirectoryFilter, "the directory")
}

// SetPassword records a user's new password verifiers, sealed. The
// verifiers are computed where the password was typed; the password
// itself never reaches the server.
func (a *Admin) SetPassword(ctx context.Context, u events.User, v rvp.Verifiers) error {
	u = canonicalUser(u)
	subject := events.UserSubject(u)
	ver, err := a.current(ctx, subject)
	if err != nil {
		return err
	}
	if _, err := a.enabledUser(u); err != nil {
		return err
	}
	if len(v.NT) != 16 || len(v.HA1) == 0 {
		return errors.New("password verifiers are incomplete")
	}
	if a.Keyring == nil {
		return errors.New("no cluster key: passwords cannot be stored")
	}
	sealed, err := a.Keyring.SealVerifiers(v, subject)
	if err != nil {
		return err
	}
	return a.append(ctx, &events.PasswordSet{Meta: a.meta(), User: u, Verifiers: sealed}, ver)
}

// SetAdmin creates or changes an administrator.
func (a *Admin) SetAdmin(ctx context.Context, name, role string, domains []string, v AdminVerifier) error {
	return a.setAdmin(ctx, name, role, domains, v, false)
}

// CreateAdmin creates an administrator; it fails with ErrExists when
// one of that name exists or existed.
func (a *Admin) CreateAdmin(ctx context.Context, name, role string, domains []string, v AdminVerifier) error {
	return a.setAdmin(ctx, name, role, domains, v, true)
}

func (a *Admin) setAdmin(ctx context.Context, name, role string, domains []string, v AdminVerifier, create bool) error {
	switch role {
	case events.RoleOrganization:
		domains = nil
	case events.RoleDomain:
		if len(domains) == 0 {
			return errors.New("a domain administrator needs the IM domains it administers (-domains)")
		}
		domains = slices.Clone(domains)
		for i, d := range domains {
			domains[i] = domainName(d)
		}
	default:
		return fmt.Errorf("role %q: want %s or %s", role, events.RoleOrganization, events.RoleDomain)
	}
	if name == "" || len(v.Key) != 32 || len(v.Salt) < 8 {
		return errors.New("an administrator needs a name and a password verifier")
	}
	if a.Keyring == nil {
		return errors.New("no cluster key: administrators cannot be stored")
	}
	sealed, err := a.Keyring.SealAdminVerifier(v, name)
	if err != nil {
		return err
	}
	ev := &events.AdminSet{Name: name, Role: role, Domains: domains, Verifiers: sealed}
	if role == events.RoleOrganization {
		ev.Meta = a.meta()
		if create {
			if err := a.append(ctx, ev, 0); err != nil {
				return fmt.Errorf("administrator %s: %w", name, err)
			}
			return nil
		}
		return a.appendNext(ctx, ev) // takes no organisation administrator away
	}
	// A domain administrator's domains are checked on the projection at
	// the IM domains' (and administrators') last event, and the change
	// is fenced by them: checked on a projection that had not a domain's
	// deletion yet, or appended after one that came between, it made a
	// domain administrator of a domain that no longer exists.
	return retryFenced(ctx, func() error {
		var ver uint64
		var err error
		if create {
			ver, err = a.current(ctx, events.ConfigFilter)
		} else {
			ver, err = a.keepsOrganisationAdmin(ctx, name, events.ConfigFilter)
		}
		if err != nil {
			return err
		}
		for _, d := range domains {
			if dom, err := a.Directory.Domain(d); err != nil {
				return err
			} else if dom == nil {
				return fmt.Errorf("IM domain %s does not exist", d)
			}
		}
		if create {
			// One of that name exists or existed: its subject has events.
			if n, err := a.version(ctx, events.AdminSubject(name)); err != nil {
				return err
			} else if n != 0 {
				return fmt.Errorf("administrator %s: %w", name, ErrExists)
			}
		}
		ev.Meta = a.meta()
		return a.appendFenced(ctx, ev, ver, events.ConfigFilter, "the IM domains, home servers, routers or administrators")
	})
}

// RemoveAdmin removes an administrator.
func (a *Admin) RemoveAdmin(ctx context.Context, name string) error {
	return retryFenced(ctx, func() error {
		ver, err := a.keepsOrganisationAdmin(ctx, name, events.AdminFilter)
		if err != nil {
			return err
		}
		if adm, err := a.Directory.Administrator(name); err != nil {
			return err
		} else if adm == nil {
			return fmt.Errorf("administrator %s: %w", name, ErrNotFound)
		}
		return a.appendFenced(ctx, &events.AdminRemoved{Meta: a.meta(), Name: name}, ver, events.AdminFilter, "the administrators")
	})
}

// keepsOrganisationAdmin refuses a change that makes administrator name
// no longer an organisation administrator (its removal, its demotion to
// a domain administrator) when it is the last one: only an organisation
// administrator makes another, and rvpd init refuses an initialised
// cluster, so with none left the organisation could never be
// administered again. It returns the last sequence of fence (a filter
// that matches every administrator's subject: events.AdminFilter, or
// events.ConfigFilter), which the change is to be appended fenced by: two
// such changes at once (two administrators removing each other) were each
// fenced by the other's subject alone, and both were made.
func (a *Admin) keepsOrganisationAdmin(ctx context.Context, name, fence string) (uint64, error) {
	ver, err := a.current(ctx, fence)
	if err != nil {
		return 0, err
	}
	adm, err := a.Directory.Administrator(name)
	if err != nil || adm == nil || adm.Role != events.RoleOrganization {
		return ver, err
	}
	admins, err := a.Directory.Administrators()
	if err != nil {
		return 0, err
	}
	if !slices.ContainsFunc(admins, func(o projections.Administrator) bool { return o.Name != name && o.Role == events.RoleOrganization }) {
		return 0, fmt.Errorf("administrator %s is the last organisation administrator, and without one nobody could administer the organisation again; add another first (rvpctl admin add NAME -role organization)", name)
	}
	return ver, nil
}

// SetTopology sets the address ranges inside the firewall.
func (a *Admin) SetTopology(ctx context.Context, inside []string) error {
	for i, r := range inside {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return fmt.Errorf("range %q: want CIDR such as 10.0.0.0/8", r)
		}
		inside[i] = p.Masked().String()
	}
	slices.Sort(inside)
	return a.appendNext(ctx, &events.TopologySet{Meta: a.meta(), Inside: slices.Compact(inside)})
}

// SetInternetCapable switches federation with other organisations.
func (a *Admin) SetInternetCapable(ctx context.Context, on bool) error {
	return a.appendNext(ctx, &events.FederationSet{Meta: a.meta(), InternetCapable: on})
}
