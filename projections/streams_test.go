package projections

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestRequestDuplicatesWindow: the requests and lookups streams
// deduplicate over DefaultRequestDuplicates, the directory's and the
// facts' over DefaultDuplicates; a request sent again with its id within
// the window is stored once. Streams of an older version (a 2-minute
// window) are brought to the new window where the streams' settings are
// imposed, and left as they are by a node that only creates what is
// missing (CreateOnly).
func TestRequestDuplicatesWindow(t *testing.T) {
	// A gateway sends a request again until its deadline, under
	// librvp's patience (rvpd refuses a -request.timeout as long); the
	// window covers that and a margin for the clocks of gateway, NATS
	// server and home node.
	if DefaultRequestDuplicates < rvp.ClientPatience+15*time.Second {
		t.Errorf("DefaultRequestDuplicates %s: want at least librvp's patience, %s, and 15 s", DefaultRequestDuplicates, rvp.ClientPatience)
	}
	ctx := t.Context()
	js := startJetStream(t) // EnsureStreams with the defaults
	if err := EnsureFactStream(ctx, js, "home1", StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{events.StreamRequests: DefaultRequestDuplicates, events.StreamLookups: DefaultRequestDuplicates,
		events.StreamDirectory: DefaultDuplicates, events.FactStream("home1"): DefaultDuplicates}
	window := func(name string) time.Duration {
		t.Helper()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Duplicates
	}
	for name, w := range want {
		if got := window(name); got != w {
			t.Errorf("stream %s: deduplication window %s, want %s", name, got, w)
		}
	}

	msg := nats.NewMsg(events.RequestRoot + ".home1.x")
	msg.Data = []byte("{}")
	for i := range 2 {
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("req-1"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i == 1) || ack.Sequence != 1 {
			t.Errorf("publish %d of the same id: %+v, want sequence 1, duplicate %v", i+1, ack, i == 1)
		}
	}

	// An older version's streams.
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		c.Duplicates = 2 * time.Minute
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureStreams(ctx, js, StreamOptions{CreateOnly: true}); err != nil {
		t.Fatal(err)
	}
	if got := window(events.StreamRequests); got != 2*time.Minute {
		t.Errorf("after EnsureStreams with CreateOnly: window %s, want the 2m it had", got)
	}
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		if got := window(name); got != DefaultRequestDuplicates {
			t.Errorf("stream %s after EnsureStreams: window %s, want %s", name, got, DefaultRequestDuplicates)
		}
	}
	// The ids stored under the older window are still known.
	if ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("req-1")); err != nil || !ack.Duplicate {
		t.Errorf("the same id after the update: %+v, %v; want a duplicate", ack, err)
	}
}

// TestAppendNotStored: a failed append says whether its message may have
// been stored. Refused by JetStream, or with no stream to take it, it
// certainly was not (NotStored); unanswered (a responder that takes it
// and never answers, as a stream whose answer is lost), it may have been.
func TestAppendNotStored(t *testing.T) {
	js := startJetStream(t)
	nc := js.Conn()
	msg := func(subject string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = []byte("x")
		return m
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	n, err := Append(ctx, js, msg("no.stream.here"), "req-1")
	if err == nil || !NotStored(err) || n < 2 {
		t.Errorf("Append with no stream: %d attempts, %v (not stored %v); want retries until the deadline, then not stored", n, err, NotStored(err))
	}
	if err := AppendOnce(t.Context(), js, msg("no.stream.here"), "req-2"); err == nil || !NotStored(err) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("AppendOnce with no stream: %v (not stored %v); want no stream response, not stored", err, NotStored(err))
	}

	// A stream that takes the message and never answers.
	sub, err := nc.Subscribe("silent.stream", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := Append(ctx, js, msg("silent.stream"), "req-3"); err == nil || NotStored(err) {
		t.Errorf("Append unanswered: %v (not stored %v); want an error that leaves it unknown", err, NotStored(err))
	}
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := AppendOnce(ctx, js, msg("silent.stream"), "req-4"); err == nil || NotStored(err) {
		t.Errorf("AppendOnce unanswered: %v (not stored %v); want an error that leaves it unknown", err, NotStored(err))
	}

	// Refused by JetStream: the expected last sequence is not the
	// stream's.
	m := msg(events.RequestSubject("home1", events.User{Domain: "example.com", Alias: "alice"}))
	m.Header.Set(jetstream.ExpectedLastSeqHeader, "12345")
	if _, err := Append(t.Context(), js, m, "req-5"); err == nil || !NotStored(err) {
		t.Errorf("Append refused: %v (not stored %v); want not stored", err, NotStored(err))
	}

	// Stored: no error.
	if n, err := Append(t.Context(), js, msg(events.RequestSubject("home1", events.User{Domain: "example.com", Alias: "alice"})), "req-6"); err != nil || n != 1 {
		t.Errorf("Append to the requests stream: %d attempts, %v; want stored at the first", n, err)
	}
}

// TestPubAckError: JetStream's answers to a publish read as jetstream's
// PublishMsg reads them.
func TestPubAckError(t *testing.T) {
	for data, want := range map[string]string{
		`{"stream":"RVP_REQ","seq":42}`:                  "",
		`{"stream":"RVP_REQ","seq":42,"duplicate":true}`: "",
		`{"stream":"RVP_REQ","domain":"hub","seq":1}`:    "",
		`{"seq":1,"stream":"RVP_REQ"}`:                   "",
		`{"stream":"RVP_REQ","seq":42`:                   jetstream.ErrInvalidJSAck.Error(),
		`{"stream":"","seq":42}`:                         jetstream.ErrInvalidJSAck.Error(),
		`{}`:                                             jetstream.ErrInvalidJSAck.Error(),
		`not json`:                                       jetstream.ErrInvalidJSAck.Error(),
		``:                                               jetstream.ErrInvalidJSAck.Error(),
		`{"stream":"RVP_REQ","seq":0,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}`: "nats: API error: code=400 err_code=10071 description=wrong last sequence: 3",
		`{"error":{"code":503,"err_code":10039,"description":"JetStream not enabled"}}`:                             "nats: API error: code=503 err_code=10039 description=JetStream not enabled",
	} {
		err := pubAckError([]byte(data))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("%s: %q, want %q", data, got, want)
		}
		var apiErr *jetstream.APIError
		if strings.Contains(data, `"error"`) && !errors.As(err, &apiErr) {
			t.Errorf("%s: %v is not a *jetstream.APIError", data, err)
		}
	}
}

// TestAppendAnswers: a message appended twice with one id is stored once,
// and both appends succeed; an answer that is not JetStream's leaves
// whether the message was stored unknown.
func TestAppendAnswers(t *testing.T) {
	js := startJetStream(t)
	subject := events.RequestSubject("home1", events.User{Domain: "example.com", Alias: "bob"})
	for range 2 {
		m := nats.NewMsg(subject)
		m.Data = []byte("x")
		if _, err := Append(t.Context(), js, m, "req-dup"); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if got := lastOf(t, js, subject); got != 1 {
		t.Errorf("%d messages stored under one id, want 1", got)
	}
	sub, err := js.Conn().Subscribe("garbled.stream", func(m *nats.Msg) { m.Respond([]byte("{")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	err = AppendOnce(t.Context(), js, nats.NewMsg("garbled.stream"), "req-7")
	if !errors.Is(err, jetstream.ErrInvalidJSAck) || NotStored(err) {
		t.Errorf("AppendOnce answered garbage: %v (not stored %v); want an invalid ack, unknown", err, NotStored(err))
	}
}

// lastOf counts the messages stored under subject in its stream.
func lastOf(t *testing.T, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	s, err := js.StreamNameBySubject(t.Context(), subject)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestWaitJetStreamAccountWithout: connected as a user of an account
// without JetStream (an operator's drill gave rvpd the system account's
// credentials), WaitJetStream said to run the NATS servers with
// JetStream, which they did. It now names the account.
func TestWaitJetStreamAccountWithout(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(`listen: "127.0.0.1:-1"
jetstream { store_dir: "`+filepath.Join(dir, "js")+`" }
accounts {
  RVP { jetstream: enabled, users: [{user: rvpd, password: pw}] }
  OTHER { users: [{user: other, password: pw}] }
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	for _, tc := range []struct {
		user, want string
	}{
		{"rvpd", ""},
		{"other", "the NATS account this connection's user belongs to has none"},
	} {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(tc.user, "pw"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = WaitJetStream(ctx, js)
		cancel()
		nc.Close()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.user, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want it to say %q", tc.user, err, tc.want)
		}
	}
}
