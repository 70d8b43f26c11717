package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Defaults of StreamOptions, written once: rvpd's flags read them.
const (
	// DefaultRequestMaxAge and DefaultRequestMaxBytes bound the requests
	// (and lookups) streams: a request is work with a deadline of seconds
	// (the gateway's wait), kept a while for inspection; when full the
	// oldest go first, so an append never fails for room.
	DefaultRequestMaxAge   = time.Hour
	DefaultRequestMaxBytes = 1 << 30
	// DefaultDuplicates is the deduplication window of the directory
	// and fact streams (little is written there with a message id).
	DefaultDuplicates = 2 * time.Minute
	// DefaultRequestDuplicates is the deduplication window of the
	// requests and lookups streams. What it must cover is how late a
	// second copy of a request can be stored: a gateway sends a request
	// again with the same id (Append) only until the request's deadline,
	// under -request.timeout, which rvpd holds below librvp's 30 s
	// (rvp.ClientPatience); relays, forwards and handoffs likewise until
	// the deadline of what they carry, and a handoff is taken once per
	// move however late it comes (decideHandoff). A copy stored after the
	// window is past its deadline and dropped by the home node (routeLate),
	// unless its clock is more than the margin, 15 s, behind the gateway's.
	// JetStream keeps every id of the window in memory (about 130 bytes
	// each): at 3,000 requests a second the 2 minutes of before held
	// 360,000 of them (docs/decisions.md).
	DefaultRequestDuplicates = 45 * time.Second
	// DefaultLeaseTTL is the TTL of the home-server ownership bucket: how
	// long a dead owner's lease lasts before a standby takes over.
	DefaultLeaseTTL = 10 * time.Second
)

// StreamOptions configure EnsureStreams.
type StreamOptions struct {
	// Replicas of every stream: 1 for a single node, 3 for a site. Default 1.
	Replicas int
	// RequestMaxAge is how long request events (and lookups) are kept;
	// at least their deduplication window. Default 1h.
	RequestMaxAge time.Duration
	// RequestMaxBytes bounds the size of each of the requests and lookups
	// streams; the oldest messages are dropped to make room. Default 1 GiB.
	RequestMaxBytes int64
	// FactMaxAge is the audit retention of fact events; 0 keeps them
	// forever. Default 0.
	FactMaxAge time.Duration
	// Duplicates is the deduplication window of the directory and fact
	// streams. Default DefaultDuplicates.
	Duplicates time.Duration
	// RequestDuplicates is the deduplication window of the requests and
	// lookups streams. Default DefaultRequestDuplicates.
	RequestDuplicates time.Duration
	// Memory keeps the streams in memory (tests only).
	Memory bool
	// LeaseTTL is how long a home server's ownership lasts unrenewed: the
	// longest a standby waits after its owner died. Default 10s.
	LeaseTTL time.Duration
	// CreateOnly creates the streams that are missing and leaves the
	// configuration of the others as it is: a node joining a cluster
	// does not impose its own.
	CreateOnly bool
	// Site, when set, lays the streams out for this site of a deployment
	// of several (its JetStream domain; docs/sites.md); "" for a
	// deployment of one domain.
	Site string
	// Hub is the JetStream domain of the hub, where the directory is
	// written. Default DefaultHub.
	Hub string
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.RequestMaxAge <= 0 {
		o.RequestMaxAge = DefaultRequestMaxAge
	}
	if o.RequestMaxBytes <= 0 {
		o.RequestMaxBytes = DefaultRequestMaxBytes
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	if o.RequestDuplicates <= 0 {
		o.RequestDuplicates = DefaultRequestDuplicates
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	return o
}

func (o StreamOptions) storage() jetstream.StorageType {
	if o.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// ensure creates the stream c, or (unless o.CreateOnly) updates its
// configuration to c.
func (o StreamOptions) ensure(ctx context.Context, js jetstream.JetStream, c jetstream.StreamConfig) error {
	_, err := o.ensureStream(ctx, js, c)
	return err
}

// ensureStream is ensure, returning the stream as it found or made it.
func (o StreamOptions) ensureStream(ctx context.Context, js jetstream.JetStream, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = o.Replicas
	c.Storage = o.storage()
	var st jetstream.Stream
	var err error
	if o.CreateOnly {
		// Looked for first: nats-server 2.15.2 weighs a create against
		// the storage reserved (max_file_store) before it finds the
		// stream there, so a node restarting at a site whose streams'
		// MaxBytes fill the reservation was refused the streams it had
		// ("insufficient storage resources available").
		if st, err = js.Stream(ctx, c.Name); err == nil {
			return st, nil
		}
		st, err = js.CreateStream(ctx, c)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, c.Name) // created meanwhile by another
		}
	} else {
		st, err = createOrUpdate(ctx, js, c)
	}
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", c.Name, err)
	}
	return st, nil
}

// EnsureStreams creates the streams the service needs, or updates their
// configuration to the one given. Projections are derived from these
// streams, which is why this package owns their definitions. Each home
// server's fact stream is created by its home node (EnsureFactStream).
// The single fact stream of older versions must have been migrated
// (MigrateFacts) first: its subjects overlap every home server's.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o = o.withDefaults()
	if legacy, err := LegacyFacts(ctx, js); err != nil {
		return err
	} else if legacy {
		return ErrLegacyFacts
	}
	storage := o.storage()
	cfgs := []jetstream.StreamConfig{{
		Name:        events.StreamRequests,
		Description: "RVP request events from gateways to home nodes (work, short retention)",
		Subjects:    []string{events.RequestRoot + ".>"},
		MaxAge:      o.RequestMaxAge,
		MaxBytes:    o.RequestMaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.RequestDuplicates,
		// Handoffs are kept past MaxAge (Nats-TTL: never) until their
		// home node is done with them: homenode's publishKept.
		AllowMsgTTL: true,
	}, {
		Name:        events.StreamDirectory,
		Description: "RVP directory events written by administrators",
		Subjects:    []string{events.DirectoryRoot + ".>"},
		Duplicates:  o.Duplicates,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
	}, {
		Name:        events.StreamLookups,
		Description: "RVP lookup events for routers (work queue)",
		Subjects:    []string{events.LookupRoot + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		MaxAge:      o.RequestMaxAge,
		MaxBytes:    o.RequestMaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.RequestDuplicates,
	}}
	for _, c := range o.siteLayout(cfgs) {
		if err := o.ensure(ctx, js, c); err != nil {
			return err
		}
	}
	kv := jetstream.KeyValueConfig{Bucket: events.BucketOwners, Description: "home-server ownership leases of home nodes",
		History: 1, TTL: o.LeaseTTL, Replicas: o.Replicas, Storage: storage}
	var err error
	if o.CreateOnly {
		if _, err = js.KeyValue(ctx, kv.Bucket); err != nil { // looked for first, as streams are (ensure)
			_, err = js.CreateKeyValue(ctx, kv)
		}
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
	} else {
		// Created first, as streams are (createOrUpdate).
		if _, err = js.CreateKeyValue(ctx, kv); errors.Is(err, jetstream.ErrBucketExists) {
			_, err = js.UpdateKeyValue(ctx, kv)
		}
	}
	if err != nil {
		return fmt.Errorf("ensure KV bucket %s: %w", events.BucketOwners, err)
	}
	return nil
}

// createOrUpdate creates stream c, or updates it to c when it exists
// with another configuration. It asks to create first: nats.go's
// CreateOrUpdateStream asks to update first, and an update racing
// another process's create of the same stream (two nodes starting, two
// inits) left nats-server 2.15.2's clustered stream API unanswered for
// every stream created after it (measured on three servers: each later
// create timed out after 5 s).
func createOrUpdate(ctx context.Context, js jetstream.JetStream, c jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.CreateStream(ctx, c)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = js.UpdateStream(ctx, c)
	}
	return st, err
}

// SettingChange is a setting of a stream UpgradeStream changed, or would.
type SettingChange struct {
	Setting string // as the nats CLI names it: allow_msg_ttl, duplicate_window
	Was     string
	Now     string
}

// UpgradeStream gives an existing requests or lookups stream (name) the
// settings this version creates it with that an older version created
// otherwise and that JetStream changes on a live stream. Nodes create
// streams but never change an existing one's configuration (CreateOnly),
// so a cluster set up by an older version keeps its settings until its
// administrator runs this (rvpctl streams upgrade):
//   - allow_msg_ttl on the requests streams: without it a handoff is kept
//     only the stream's max age (homenode's publishKept). nats-server
//     cannot turn it off again.
//   - the deduplication window, DefaultRequestDuplicates: older versions
//     kept 2 minutes of request ids in memory.
//
// It returns the settings that differ, and changes them unless dryRun.
func UpgradeStream(ctx context.Context, js jetstream.JetStream, name string, dryRun bool) ([]SettingChange, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	c := st.CachedInfo().Config // as the lookup just read it
	var changes []SettingChange
	requests := name == events.StreamRequests || strings.HasPrefix(name, events.RequestStreamPrefix)
	if !requests && name != events.StreamLookups {
		return nil, fmt.Errorf("stream %s is not a requests or lookups stream", name)
	}
	if requests && !c.AllowMsgTTL {
		c.AllowMsgTTL = true
		changes = append(changes, SettingChange{"allow_msg_ttl", "false", "true"})
	}
	if c.Duplicates != DefaultRequestDuplicates {
		if c.MaxAge > 0 && c.MaxAge < DefaultRequestDuplicates {
			// JetStream refuses a window longer than the max age.
			return nil, fmt.Errorf("stream %s: its max age %s is shorter than the %s deduplication window it needs (rvpd's -requests.max-age is at least that): raise it first (nats stream edit %s --max-age %s)",
				name, c.MaxAge, DefaultRequestDuplicates, name, DefaultRequestDuplicates)
		}
		changes = append(changes, SettingChange{"duplicate_window", c.Duplicates.String(), DefaultRequestDuplicates.String()})
		c.Duplicates = DefaultRequestDuplicates
	}
	if dryRun || len(changes) == 0 {
		return changes, nil
	}
	if _, err := js.UpdateStream(ctx, c); err != nil {
		return nil, fmt.Errorf("upgrade stream %s: %w", name, err)
	}
	return changes, nil
}

// WaitJetStream waits until the cluster's JetStream answers (on a
// cluster: a meta leader has been elected), asking every second at most,
// until ctx ends. Right after a cluster starts, or during a meta leader's
// election, a JetStream API request may go unanswered until its deadline
// instead of failing: each attempt here has its own short one.
func WaitJetStream(ctx context.Context, js jetstream.JetStream) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("JetStream: %w (the NATS account this connection's user belongs to has none: connect as a user of the account rvpd's streams are in (-nats.creds, or the user in -nats), or enable JetStream in that account's configuration)", err)
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			return fmt.Errorf("JetStream: %w (run the NATS servers with JetStream: -js, or jetstream {} in their configuration)", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream does not answer (a cluster without a meta leader: are most of its servers up and routed to each other?): %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// EnsureFactStream creates home's fact stream (events.FactStream), or
// updates its configuration to the one given. It takes atomic batches,
// which a takeover's fence is (homenode's fence.go): one created by an
// older version is given the setting, whatever o.CreateOnly says (only
// the home server's owner calls this).
func EnsureFactStream(ctx context.Context, js jetstream.JetStream, home string, o StreamOptions) error {
	o = o.withDefaults()
	c := jetstream.StreamConfig{
		Name:               events.FactStream(home),
		Description:        "RVP fact events decided for home server " + home + ": its audit log and the source of its projection",
		Subjects:           []string{events.FactFilter(home)},
		MaxAge:             o.FactMaxAge,
		Duplicates:         o.Duplicates,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
	st, err := o.ensureStream(ctx, js, c)
	if err != nil {
		return err
	}
	if cfg := st.CachedInfo().Config; !cfg.AllowAtomicPublish {
		cfg.AllowAtomicPublish = true
		if st, err = js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("fact stream %s: turn on atomic batches, which a takeover's fence needs (its allow_atomic setting, which nats-server 2.12 or later has): %w", c.Name, err)
		}
	}
	if !st.CachedInfo().Config.AllowAtomicPublish {
		// A server that does not know the setting takes it silently, and
		// would store a fence's batch as plain messages.
		return fmt.Errorf("fact stream %s does not take atomic batches, which a takeover's fence needs: its NATS servers are older than 2.12; upgrade them", c.Name)
	}
	return nil
}

// FactStreams returns the names of every home server's fact stream, in
// order.
func FactStreams(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	var out []string
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(events.FactRoot+".>"))
	for n := range names.Name() {
		if strings.HasPrefix(n, events.FactStreamPrefix) {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list fact streams: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// appendAttempt bounds one attempt of Append: JetStream stores a message
// in milliseconds, but a publish sent while its stream has no leader (an
// election after a server's loss) goes unanswered until its deadline.
const appendAttempt = time.Second

// Append appends msg to its stream once, with message id id: an attempt
// unanswered within a second, or refused because the stream or the
// cluster is not available for the moment, is sent again with the same
// id (JetStream stores an id once, so an attempt stored whose answer was
// lost is not stored twice), until it is stored or ctx ends. It returns
// the number of attempts made; when it fails, NotStored tells whether
// the message may have been stored all the same.
func Append(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, id string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, &notStored{err}
	}
	wait := 20 * time.Millisecond
	unsure := false // an attempt went unanswered: it may have been stored
	failed := func(attempt int, err error) (int, error) {
		if !unsure {
			err = &notStored{err}
		}
		return attempt, err
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, appendAttempt)
		// No retries but this loop's (a no-responder sent again until ctx
		// ends would leave the attempt's outcome unknown).
		err := publish(actx, js, msg, id)
		cancel()
		if err == nil {
			return attempt, nil
		}
		unsure = unsure || !refused(err)
		if ctx.Err() != nil || !transient(err) {
			return failed(attempt, err)
		}
		select {
		case <-ctx.Done():
			return failed(attempt, fmt.Errorf("%w (after %d %s)", err, attempt, plural(attempt, "attempt")))
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// AppendOnce appends msg to its stream in a single attempt, with message
// id id; when it fails, NotStored tells whether the message may have been
// stored all the same.
func AppendOnce(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, id string) error {
	if err := ctx.Err(); err != nil {
		return &notStored{err}
	}
	err := publish(ctx, js, msg, id)
	if err != nil && refused(err) {
		return &notStored{err}
	}
	return err
}

// publish sends msg with message id id and waits for JetStream's answer,
// as jetstream's PublishMsg does without retries, with the same errors
// (JetStream's own as a *jetstream.APIError).
// It reads the answer itself: nats.go decodes each acknowledgement with
// encoding/json, 1.4% of rvpd's CPU in a wave of sign-ins.
func publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, id string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	resp, err := js.Conn().RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return jetstream.ErrNoStreamResponse
		}
		return err
	}
	return pubAckError(resp.Data)
}

// pubAckError reads JetStream's answer to a publish: nil when the message
// is stored (or was already), the API error JetStream answered, or
// jetstream.ErrInvalidJSAck for an answer that is neither.
func pubAckError(data []byte) error {
	// What nearly every answer is: {"stream":"NAME","seq":N...}, with no
	// error in it.
	const stored = `{"stream":"`
	if bytes.HasPrefix(data, []byte(stored)) && len(data) > len(stored) && data[len(stored)] != '"' &&
		!bytes.Contains(data, []byte(`"error"`)) && json.Valid(data) {
		return nil
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(data, &ack); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return ack.Error
	}
	if ack.Stream == "" {
		return jetstream.ErrInvalidJSAck
	}
	return nil
}

// NotStored reports whether err, from Append or AppendOnce, says that the
// message was certainly not stored: every attempt was refused or found
// no stream. Any other failure leaves it unknown: an attempt unanswered
// (in time, or before the connection closed) may have been stored, its
// answer lost.
func NotStored(err error) bool {
	var ns *notStored
	return errors.As(err, &ns)
}

type notStored struct{ err error }

func (e *notStored) Error() string { return e.err.Error() }
func (e *notStored) Unwrap() error { return e.err }

// refused reports whether a failed publish was answered, or never sent,
// so that nothing of it was stored: JetStream's refusal, no stream
// listening, a message the client would not send.
func refused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject)
}

// transient reports whether a failed publish may succeed if sent again: no
// answer in time, no responder (no stream leader yet), JetStream
// unavailable (503: a leader being elected, no quorum), the connection
// moving to another server. A refusal of the message itself is not.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrMaxPayload) && !errors.Is(err, nats.ErrBadSubject)
}

// plural is noun as counted n times: "event" for 1, "events" otherwise
// (every noun counted here takes an s).
func plural[N ~int | ~uint64](n N, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
