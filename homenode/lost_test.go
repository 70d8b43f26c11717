package homenode

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestNakSubject: the ack subject of a delivery made from another's, in
// both of ADR-15's forms, and nothing from a subject of neither.
func TestNakSubject(t *testing.T) {
	for _, c := range []struct{ template, want string }{
		{"$JS.ACK.RVP_REQ.home_home1.3.1200.977.1765000000000000000.12",
			"$JS.ACK.RVP_REQ.home_home1.1.1187.1000.1765000000000000000.12"},
		{"$JS.ACK._.ACCHASH.RVP_REQ.home_home1.3.1200.977.1765000000000000000.12.xyz",
			"$JS.ACK._.ACCHASH.RVP_REQ.home_home1.1.1187.1000.1765000000000000000.12.xyz"},
		{"$JS.ACK.hub.ACCHASH.RVP_REQ.home_home1.1.1200.977.1765000000000000000.12",
			"$JS.ACK.hub.ACCHASH.RVP_REQ.home_home1.1.1187.1000.1765000000000000000.12"},
		{"_INBOX.abc", ""},
		{"$JS.ACK.RVP_REQ.home_home1.3.1200.977.1765000000000000000", ""},
		{"$JS.ACK.a.b.RVP_REQ.home_home1.3.1200.977.1765000000000000000", ""},
	} {
		got, ok := nakSubject(c.template, 1187, 1000)
		if ok != (c.want != "") || got != c.want {
			t.Errorf("nakSubject(%q) = %q %v, want %q", c.template, got, ok, c.want)
		}
	}
}

// TestNakSubjectHandsBackALostDelivery: a delivery the client never got
// (taken here and dropped, as one lost with a NATS server) is delivered
// again at once when given a negative acknowledgement on the subject
// nakSubject makes from another delivery's, well before AckWait, counted
// as a redelivery; one acknowledged is not handed out again.
func TestNakSubjectHandsBackALostDelivery(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQ", Subjects: []string{"req.>"}}); err != nil {
		t.Fatal(err)
	}
	const ackWait = time.Minute
	cons, err := js.CreateOrUpdateConsumer(ctx, "REQ", jetstream.ConsumerConfig{Durable: "home", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"req.a", "req.b", "req.c"} {
		if _, err := js.Publish(ctx, s, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 3 {
		t.Fatalf("fetched %d, want 3: %v", len(got), batch.Error())
	}
	// got[0] decided; got[1] "lost"; got[2] held.
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, seq := range []uint64{1, 2} {
		subj, ok := nakSubject(got[2].Reply(), seq, info.Delivered.Consumer)
		if !ok {
			t.Fatalf("no ack subject made from %q", got[2].Reply())
		}
		if err := nc.Publish(subj, []byte("-NAK")); err != nil {
			t.Fatal(err)
		}
	}
	again, err := cons.Fetch(3, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for m := range again.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, md.Sequence.Stream)
		if md.Sequence.Stream == 2 && md.NumDelivered != 2 {
			t.Errorf("the lost delivery handed back: delivered %d times, want 2", md.NumDelivered)
		}
	}
	if len(seqs) != 1 || seqs[0] != 2 {
		t.Fatalf("handed back %v after %v, want only stream sequence 2 (the lost one; 1 was acknowledged, 3 is held)", seqs, time.Since(start))
	}
	if d := time.Since(start); d > ackWait/2 {
		t.Errorf("the lost delivery came back after %v; AckWait is %v", d, ackWait)
	}
}

// TestSentRepliesForgotten: the answers kept to be sent again after a
// break are dropped past their lookback while the connection is up, and
// kept while it is broken; the ring keeps the last replyKeep.
func TestSentRepliesForgotten(t *testing.T) {
	var s sentReplies
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	for i := range replyKeep + 10 {
		s.add(sentReply{at: at.Add(time.Duration(i) * time.Millisecond), to: "rvp.reply.gw." + strconv.Itoa(i), data: []byte{byte(i)}})
	}
	if got := s.since(time.Time{}); len(got) != replyKeep || got[0].to != "rvp.reply.gw.10" || got[len(got)-1].to != "rvp.reply.gw."+strconv.Itoa(replyKeep+9) {
		t.Fatalf("kept %d answers, from %q to %q; want the last %d", len(got), got[0].to, got[len(got)-1].to, replyKeep)
	}
	cut := at.Add(time.Duration(replyKeep) * time.Millisecond) // keeps the last 10
	s.brokeAt = cut
	s.forget(cut)
	if got := s.since(time.Time{}); len(got) != replyKeep {
		t.Fatalf("broken: %d answers kept, want all %d (they may be sent again)", len(got), replyKeep)
	}
	s.brokeAt = time.Time{}
	s.forget(cut)
	got := s.since(time.Time{})
	if len(got) != 10 || got[0].to != "rvp.reply.gw."+strconv.Itoa(replyKeep) {
		t.Fatalf("connected: %d answers kept after forgetting those before the lookback, want the last 10", len(got))
	}
	held := 0
	for _, r := range s.ring {
		if r.data != nil || r.to != "" {
			held++
		}
	}
	if held != 10 {
		t.Fatalf("%d slots still hold an answer or its subject, want 10", held)
	}
}
