package homenode

import (
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestHandoffKeptPastRequestsMaxAge: ann, signed in on home1, is moved to
// homeC, whose node starts only after the requests stream's max age (1 s
// here, -requests.max-age) has passed. The stream dropped her handoff
// with everything else it held that long, and homeC never had her login
// (nor her watchers' subscriptions, nor her ACL). A handoff is kept past
// the max age, taken when homeC's node starts, and then deleted from the
// stream, which would otherwise keep it for ever.
func TestHandoffKeptPastRequestsMaxAge(t *testing.T) {
	h := newHarness(t, "ann")
	ctx := t.Context()
	ann := events.NewUser("example.test", "ann")
	h.signIn(ann, "http://"+h.sink.Addr().String())
	st, err := h.js.Stream(ctx, events.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxAge, cfg.Duplicates = time.Second, time.Second
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "homeC", "homeC.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	if err := admin.MoveUser(ctx, ann, "homeC"); err != nil {
		t.Fatal(err)
	}
	until(t, 10*time.Second, "home1 did not hand ann off", func() bool {
		done, err := h.node.Projection().Departed(ann)
		return err == nil && done != 0
	})
	// A request appended after the handoff: once it is gone, the max age
	// has passed for the handoff too.
	marker := nats.NewMsg(events.RequestSubject("homeC", events.NewUser("example.test", "nobody")))
	marker.Data = []byte("{}")
	ack, err := h.js.PublishMsg(ctx, marker)
	if err != nil {
		t.Fatal(err)
	}
	until(t, 15*time.Second, "the requests stream kept a request past its max age", func() bool {
		_, err := st.GetMsg(ctx, ack.Sequence)
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
	c := startOtherNode(t, h, "homeC", nil, &logBuffer{})
	until(t, 20*time.Second, "homeC never took ann's login from her handoff", func() bool {
		logins, err := c.Projection().Logins(ann)
		return err == nil && len(logins) == 1
	})
	until(t, 10*time.Second, "ann's handoff left in the requests stream once taken", func() bool {
		_, err := st.GetLastMsgForSubject(ctx, events.RequestSubject("homeC", ann))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
}

// TestHandoffToStreamWithoutTTLs: a requests stream that does not allow
// per-message TTLs (created by an older version, or by hand: nodes create
// none anew over one there) refused a handoff marked to be kept, and the
// move was never handed off. It takes it unmarked, said once.
func TestHandoffToStreamWithoutTTLs(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQ", Subjects: []string{events.RequestFilter("homeC")}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	n := &Node{cfg: Config{JetStream: js}, log: slog.New(slog.NewTextHandler(logs, nil))}
	ann := events.NewUser("example.test", "ann")
	for i := range 2 {
		msg := nats.NewMsg(events.RequestSubject("homeC", ann))
		msg.Header.Set(events.HeaderType, events.TypeHandoff)
		msg.Data = []byte("{}")
		if err := n.publishKept(ctx, msg, "handoff-"+strconv.Itoa(i)); err != nil {
			t.Fatalf("handoff %d to a stream without per-message TTLs: %v", i, err)
		}
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Errorf("stream holds %+v (%v), want the 2 handoffs", info.State, err)
	}
	if got := strings.Count(logs.tail(100), "does not allow per-message TTLs"); got != 1 {
		t.Errorf("said %d times, want once:\n%s", got, logs.tail(100))
	}
}
