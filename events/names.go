package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Stream names.
const (
	// StreamRequests holds request events appended by gateways for home
	// nodes. Short retention: a request is work, not history.
	StreamRequests = "RVP_REQ"
	// StreamLegacyFacts is the single fact stream of versions before one
	// stream per home server (FactStream): its facts are copied into those
	// once (projections.MigrateFacts), and it is kept as an archive.
	StreamLegacyFacts = "RVP_FACTS"
	// StreamDirectory holds directory events written by administrators.
	StreamDirectory = "RVP_DIR"
	// StreamLookups holds lookup events for routers (work queue).
	StreamLookups = "RVP_LOOKUP"
	// BucketOwners is the KV bucket of home-server ownership leases: key
	// OwnerKey(home), value the owning node's name. Its TTL is the lease.
	BucketOwners = "rvp_owners"
)

// FactStreamPrefix begins the name of every home server's fact stream.
const FactStreamPrefix = "RVP_FACTS_"

// FactStream is the stream of home's fact events: the audit log of the
// home server and the source of its projection, written by its one owner
// (the chain of expected last sequences fences a second). Deletes and
// purges are denied.
func FactStream(home string) string { return FactStreamPrefix + Token(home) }

// OwnerHeader is the HeaderOwner value of a fence appended by node holder
// under lease revision term.
func OwnerHeader(term uint64, holder string) string {
	return strconv.FormatUint(term, 10) + " " + holder
}

// ParseOwnerHeader reads a HeaderOwner value; ok is false for one that is
// not.
func ParseOwnerHeader(v string) (term uint64, holder string, ok bool) {
	t, holder, found := strings.Cut(v, " ")
	if !found {
		return 0, "", false
	}
	term, err := strconv.ParseUint(t, 10, 64)
	return term, holder, err == nil
}

// OwnerKey is the key of home's ownership lease in BucketOwners.
func OwnerKey(home string) string { return "home." + Token(home) }

// Subject roots of the streams and of core NATS replies.
const (
	RequestRoot   = "rvp.req"
	FactRoot      = "rvp.evt"
	DirectoryRoot = "rvp.dir"
	LookupRoot    = "rvp.lookup"
	ReplyRoot     = "rvp.reply"
	// SignInSubject carries what each gateway tells the others of its
	// sign-ins (core NATS, not stored): failures, and successes that
	// change the throttling of failed sign-ins, so that it holds across
	// every gateway of the cluster and its sites.
	SignInSubject = "rvp.signin"
	// ConsoleSignInSubject carries what each process's operator console
	// tells the others of its sign-ins (core NATS, not stored), so that
	// the throttling of failed console sign-ins holds across them as
	// their sessions do.
	ConsoleSignInSubject = "rvp.console.signin"
)

// Message headers.
const (
	// HeaderType carries the versioned type name of the event in the body.
	HeaderType = "Rvp-Type"
	// HeaderReply names the core NATS subject a request's reply goes to.
	HeaderReply = "Rvp-Reply"
	// HeaderRequest carries the request id a fact was decided for, so that
	// a home node can tell a redelivered request it already decided.
	HeaderRequest = "Rvp-Req-Id"
	// HeaderMsgID is JetStream's deduplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderFactID names a fact: its decision's id and its place in it.
	// The chain of expected sequences keeps a fact from being stored
	// twice, so facts carry no Nats-Msg-Id (whose deduplication state
	// JetStream keeps in memory for the whole window); a home node reads
	// this header to tell its own facts after a lost answer.
	HeaderFactID = "Rvp-Fact-Id"
	// HeaderForward, on a RequestForwarded fact, says where the request
	// went: its move's directory sequence and the home server, "12 home2"
	// (ForwardHeader). The home node reads facts' headers only when it
	// reads back what it decided lately.
	HeaderForward = "Rvp-Forward"
	// HeaderOwner, on a HomeFenced fact, names the owner that fenced the
	// home server's stream: its lease revision and node, "8 node-b"
	// (OwnerHeader), read from the headers alone as HeaderForward is.
	HeaderOwner = "Rvp-Owner"
	// HeaderAnswer records, on the last fact of a decision that answered a
	// request, the answer (an events.Reply, JSON): a request redelivered
	// after it was decided, its answer lost with the node that decided
	// it, is answered with the same outcome by the node that takes the
	// home server over, instead of being decided twice or left without
	// one.
	HeaderAnswer = "Rvp-Answer"
	// HeaderLegacySeq and HeaderLegacyTime mark a fact copied from the
	// single fact stream of older versions: its sequence and time there.
	HeaderLegacySeq  = "Rvp-Legacy-Seq"
	HeaderLegacyTime = "Rvp-Legacy-Time"
	// HeaderLegacyCut marks the first fact copied into a home server's
	// stream when the old stream's retention had removed facts before it
	// that were never copied: the sequence there after the last run of
	// them. The state they made is missing from what the copy rebuilds.
	HeaderLegacyCut = "Rvp-Legacy-Cut"
)

// User names a principal of an IM domain: alias@domain, both lower-case.
type User struct {
	Domain string `json:"domain"`
	Alias  string `json:"alias"`
}

// String returns alias@domain.
func (u User) String() string {
	if u.IsZero() {
		return ""
	}
	return u.Alias + "@" + u.Domain
}

// IsZero reports whether u names nobody.
func (u User) IsZero() bool { return u.Domain == "" && u.Alias == "" }

// NewUser returns the user alias@domain with both parts lower-cased, since
// RVP compares aliases and hosts case-insensitively, and the domain
// without the trailing dot of a name written in full (example.com.), as
// the directory keeps IM domains (all trailing dots: a user made again
// from a user's parts is the same user).
func NewUser(domain, alias string) User {
	return User{Domain: strings.TrimRight(strings.ToLower(domain), "."), Alias: strings.ToLower(alias)}
}

// RequestSubject is the subject of request events about u's node on home.
func RequestSubject(home string, u User) string {
	return subject(RequestRoot, home, u.Domain, u.Alias)
}

// RequestFilter matches every request event for home.
func RequestFilter(home string) string { return RequestRoot + "." + Token(home) + ".>" }

// FactSubject is the subject of the fact events of u's aggregate on home.
func FactSubject(home string, u User) string {
	return subject(FactRoot, home, u.Domain, u.Alias)
}

// FactFilter matches every fact event of home.
func FactFilter(home string) string { return FactRoot + "." + Token(home) + ".>" }

// ParseFactSubject returns the home server and user a fact subject names.
func ParseFactSubject(subj string) (home string, u User, err error) {
	parts := strings.Split(subj, ".")
	if len(parts) != 5 || parts[0]+"."+parts[1] != FactRoot {
		return "", User{}, fmt.Errorf("parse fact subject %q: want %s.<home>.<domain>.<alias>", subj, FactRoot)
	}
	vals := make([]string, 3)
	for i, p := range parts[2:] {
		if vals[i], err = Untoken(p); err != nil {
			return "", User{}, fmt.Errorf("parse fact subject %q: %w", subj, err)
		}
	}
	return vals[0], User{Domain: vals[1], Alias: vals[2]}, nil
}

// Directory subjects: one per directory aggregate.

// DomainSubject is the subject of the IM domain's directory events.
func DomainSubject(domain string) string { return DirectoryRoot + ".domain." + Token(domain) }

// HomeServerSubject is the subject of a home server's directory events.
func HomeServerSubject(name string) string { return DirectoryRoot + ".home." + Token(name) }

// UserSubject is the subject of a user's directory events.
func UserSubject(u User) string {
	return subject(DirectoryRoot+".user", u.Domain, u.Alias)
}

// UsersFilter matches the directory events of every user of an IM
// domain (UserSubject), or with "" of every user of every domain.
func UsersFilter(domain string) string {
	if domain == "" {
		return DirectoryRoot + ".user.>"
	}
	return DirectoryRoot + ".user." + Token(domain) + ".*"
}

// RouterSubject is the subject of a router's directory events.
func RouterSubject(name string) string { return DirectoryRoot + ".router." + Token(name) }

// AdminSubject is the subject of an administrator's directory events.
func AdminSubject(name string) string { return DirectoryRoot + ".admin." + Token(name) }

// AdminFilter matches every administrator's directory events.
const AdminFilter = DirectoryRoot + ".admin.*"

// RoutersFilter matches every router's directory events.
const RoutersFilter = DirectoryRoot + ".router.*"

// ConfigFilter matches the directory events of every aggregate but the
// users: IM domains, home servers, routers, administrators and settings
// (their subjects have one token after the kind, a user's two). A change
// that reads IM domains beside its own aggregate (a router's creation, a
// domain administrator's) is fenced by it: few changes move it, and an
// import's thousands of user events none.
const ConfigFilter = DirectoryRoot + ".*.*"

// SettingSubject is the subject of an organisation-wide setting.
func SettingSubject(name string) string { return DirectoryRoot + ".setting." + Token(name) }

// DirectoryFilter matches every directory event.
const DirectoryFilter = DirectoryRoot + ".>"

// DomainsFilter matches every IM domain's directory events (DomainSubject):
// a domain's creation is fenced by them all, as a host name may reach one
// domain only.
const DomainsFilter = DirectoryRoot + ".domain.*"

// LookupSubject is the subject of the lookups of gateways at site, ""
// for a deployment of one JetStream domain: a site's routers answer its
// own gateways' lookups only (docs/sites.md).
func LookupSubject(site string) string { return LookupRoot + "." + Token(site) }

// LookupFilter matches the lookups of site; "" matches every lookup.
func LookupFilter(site string) string {
	if site == "" {
		return LookupRoot + ".>"
	}
	return LookupSubject(site)
}

// RequestStreamPrefix begins the name of a home server's own requests
// stream, which a deployment of several sites has instead of
// StreamRequests: it lives in the home server's site (docs/sites.md).
const RequestStreamPrefix = "RVP_REQ_"

// RequestStream is the stream of home's request events in a deployment
// of several sites.
func RequestStream(home string) string { return RequestStreamPrefix + Token(home) }

// DirectoryCopyRoot is the root of the subjects on which a site's nodes
// copy the hub's directory events into the site's own directory stream;
// the stream stores them under DirectoryRoot, with the hub's sequences.
const DirectoryCopyRoot = "rvp.dircopy"

// DirectoryStoredRoot is the root of the subjects on which the hub
// announces each directory event it has stored (a JetStream republish,
// headers only), for the sites' nodes to copy it at once.
const DirectoryStoredRoot = "rvp.dirstored"

// DirectoryCopySubject is the subject on which a directory event stored
// at the hub on subject is copied into site's directory stream.
func DirectoryCopySubject(site, subject string) string {
	return DirectoryCopyRoot + "." + Token(site) + strings.TrimPrefix(subject, DirectoryRoot)
}

// DirectoryCopyFilter matches every subject of site's copy of the
// directory.
func DirectoryCopyFilter(site string) string { return DirectoryCopyRoot + "." + Token(site) + ".>" }

// ReplySubject is the core NATS subject on which gateway gw receives the
// reply to request id.
func ReplySubject(gw, id string) string { return ReplyRoot + "." + Token(gw) + "." + Token(id) }

// ReplyFilter matches every reply for gateway gw.
func ReplyFilter(gw string) string { return ReplyRoot + "." + Token(gw) + ".*" }

// AdminRoot is the root of core NATS subjects on which roles answer
// administrators (rvpctl).
const AdminRoot = "rvp.admin"

// AnswerRoot is the root of the subjects on which home nodes give again
// the answers they recorded.
const AnswerRoot = "rvp.answer"

// AnswerSubject is the core NATS subject on which the node owning home
// gives again the answer it recorded for a request (the request's id as
// the body; an empty body back when it has none yet): a gateway whose
// answer was lost on its way (its NATS server lost while it travelled)
// asks for it there.
func AnswerSubject(home string) string { return AnswerRoot + "." + Token(home) }

// HomeAdminSubject is the subject on which home's node answers the admin
// request op (for example "verify").
func HomeAdminSubject(home, op string) string { return AdminRoot + ".home." + Token(home) + "." + op }

// DirectoryAdminSubject is the subject on which the directory service
// answers administrators' requests.
const DirectoryAdminSubject = AdminRoot + ".directory"

// MetricsSubject is the core NATS subject on which every rvpd process
// answers with its metrics (Prometheus text format), so that an operator
// console on one node sees the whole cluster: online users per home
// server, routers' redirects, who is ready.
const MetricsSubject = AdminRoot + ".metrics"
