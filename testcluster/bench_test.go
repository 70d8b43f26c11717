package testcluster

import (
	"bytes"
	"context"
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// BenchmarkRequestPath measures RVP requests through the whole path
// (a new connection and NTLM sign-in as librvp does, gateway, request
// event, home node decision, facts appended and applied to Pebble, reply,
// and for a message its delivery to the recipient's callback), and as the
// baseline of the same run one JetStream append with its acknowledgement
// on the same server: a request costs at least two appends and a reply.
func BenchmarkRequestPath(b *testing.B) {
	c := Start(b, Options{Users: map[string]string{"alice": "home1", "bob": "home1"}})
	alice, bob := c.Client(b, "alice"), c.Client(b, "bob")
	for _, u := range []*Client{alice, bob} {
		if r := u.Login(14400); r.Status != 200 {
			b.Fatalf("%s login: %d", u.Alias, r.Status)
		}
	}
	ctx := context.Background()
	b.Run("jetstream-append", func(b *testing.B) {
		payload := bytes.Repeat([]byte("x"), 600)
		subj := events.RequestSubject("bench", events.NewUser("example.test", "nobody"))
		for b.Loop() {
			if _, err := c.JS.Publish(ctx, subj, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proppatch", func(b *testing.B) {
		states := []string{"online", "busy"}
		i := 0
		for b.Loop() {
			i++
			if r := alice.SetState(states[i%2], 1200, 0); r.Status != 207 {
				b.Fatalf("PROPPATCH: %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("message", func(b *testing.B) {
		body := alice.MessageBody("bob", "benchmark")
		for b.Loop() {
			if r := alice.Send("bob", body); r.Status != 200 {
				b.Fatalf("NOTIFY: %d %s", r.Status, r.Body)
			}
		}
	})
}
