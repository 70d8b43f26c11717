package homenode

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestHandoffOfAPopularUser moves a user watched by 3,000 others to
// another home server. Her state (some 440 bytes a subscription) is more
// than NATS takes in one message (1 MB): before, its publish failed at
// every try, her subscriptions stayed behind on the home server she left
// and her watchers were told nothing more of her. It now goes in parts,
// each within NATS's bound, and every subscription reaches the new home
// server's requests.
func TestHandoffOfAPopularUser(t *testing.T) {
	const watchers = 3000
	h := newHarness(t, "ann")
	ctx := t.Context()
	key, _ := directory.NewKeyring(make([]byte, directory.KeySize))
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test", Keyring: key}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	users := make([]directory.NewUser, watchers)
	for i := range users {
		users[i].Spec = directory.UserSpec{User: events.NewUser("example.test", fmt.Sprintf("w%d", i)), Home: "home1"}
	}
	if n, err := admin.EnableUsers(ctx, users); err != nil || n != watchers {
		t.Fatalf("enabled %d of %d watchers: %v", n, watchers, err)
	}
	ann := events.NewUser("example.test", "ann")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	// The watchers subscribe to ann's presence, as librvp does.
	pub, _ := jetstream.New(h.nc)
	for i := range watchers {
		w := events.NewUser("example.test", fmt.Sprintf("w%d", i))
		now := time.Now().UTC()
		ev := &events.Subscribe{Req: events.Req{ID: fmt.Sprintf("watch-%d", i), At: now, Deadline: now.Add(time.Minute), Gateway: "gw",
			Client: "127.0.0.1", Node: ann, NodeURL: url("ann"), From: url(w.Alias), FromUser: w, Auth: events.Identity{Scheme: "ntlm", User: w}},
			NotificationType: events.NotifyPropChange, CallBack: url(w.Alias), CallBackUser: w, Lifetime: 14400}
		data, _ := events.Encode(ev)
		msg := nats.NewMsg(events.RequestSubject("home1", ann))
		msg.Header.Set(events.HeaderType, ev.Type())
		msg.Header.Set(events.HeaderReply, events.ReplySubject("gw", ev.ID))
		msg.Data = data
		if _, err := pub.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID), jetstream.WithStallWait(30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-pub.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("the watchers' subscriptions not stored within a minute")
	}
	for answered := 0; answered < watchers; {
		select {
		case r := <-h.replies:
			if r.Status != rvp.StatusOK && r.Status != rvp.StatusMultiStatus {
				t.Fatalf("%s: %d %s", r.ID, r.Status, r.Error)
			}
			answered++
		case <-time.After(time.Minute):
			t.Fatalf("%d of %d watches answered within a minute", answered, watchers)
		}
	}

	if err := admin.MoveUser(ctx, ann, "home2"); err != nil {
		t.Fatal(err)
	}
	// What reaches home2's requests: the handoff, in parts.
	cons, err := h.js.OrderedConsumer(ctx, events.StreamRequests, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestSubject("home2", ann)}})
	if err != nil {
		t.Fatal(err)
	}
	subs := map[int32]bool{}
	parts := 0
	for more := true; more; {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := cons.Next(jetstream.FetchContext(mctx))
		cancel()
		if err != nil {
			t.Fatalf("after %d parts (%d subscriptions) of ann's handoff: %v\nhome node log:\n%s", parts, len(subs), err, h.logs.tail(20))
		}
		ev, err := events.Decode(m.Headers().Get(events.HeaderType), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		hd, ok := ev.(*events.Handoff)
		if !ok {
			t.Fatalf("home2 was sent a %s", ev.Type())
		}
		parts++
		for _, s := range hd.Subs {
			if subs[s.ID] {
				t.Errorf("subscription %d handed off twice", s.ID)
			}
			subs[s.ID] = true
		}
		more = hd.More
	}
	if len(subs) != watchers || parts < 3 {
		t.Errorf("handed off %d subscriptions in %d parts, want %d in 3 or more", len(subs), parts, watchers)
	}
	// And home1 has let them go: her last fact there says she left.
	st, err := h.js.Stream(ctx, events.FactStream("home1"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		m, err := st.GetLastMsgForSubject(ctx, events.FactSubject("home1", ann))
		if err == nil && m.Header.Get(events.HeaderType) == events.TypeUserDeparted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("home1's last fact of ann is not her departure (%v)", err)
		}
		time.Sleep(20 * time.Millisecond) // polling the stream, with a deadline
	}
}
