package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestAuditWithoutBodies: with -audit.bodies=false a message is delivered
// whole, and its fact keeps only the body's size and SHA-256.
func TestAuditWithoutBodies(t *testing.T) {
	p := startDev(t, t.TempDir(), "-audit.bodies=false")
	alice, bob := newClient(t, p.addr, "alice"), newClient(t, p.addr, "bob")
	mustStatus(t, "bob login", bob.Login(3600), 200)
	body := alice.MessageBody("bob", "not for the record")
	mustStatus(t, "alice → bob", alice.Send("bob", body), 200)
	bob.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })

	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), events.FactStream(demoHome))
	if err != nil {
		t.Fatal(err)
	}
	var acc *events.MessageAccepted
	for seq := uint64(1); acc == nil; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatalf("no message.accepted fact: %v", err)
		}
		if m.Header.Get(events.HeaderType) == events.TypeMessageAccepted {
			ev, err := events.Decode(events.TypeMessageAccepted, m.Data)
			if err != nil {
				t.Fatal(err)
			}
			acc = ev.(*events.MessageAccepted)
			if bytes.Contains(m.Data, []byte("not for the record")) {
				t.Error("the fact holds the message text")
			}
		}
	}
	sum := sha256.Sum256(body)
	if len(acc.Body) != 0 || acc.BodySize != len(body) || acc.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("message.accepted: body %q, size %d, sha256 %s; want none, %d, %x", acc.Body, acc.BodySize, acc.BodySHA256, len(body), sum)
	}
}
