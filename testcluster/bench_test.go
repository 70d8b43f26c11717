package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// BenchmarkRequestPath measures RVP requests through the whole path
// (a new connection and NTLM sign-in as librvp does, gateway, request
// event, home node decision, facts appended and applied to Pebble, reply,
// and for a message its delivery to the recipient's callback), and as the
// baseline of the same run one JetStream append with its acknowledgement
// on the same server: a request costs at least two appends and a reply.
//
// State changes rotate over many users, as in a real deployment: one user
// changing state thousands of times within a Pebble memtable makes its
// views' scans step over every old version until the memtable flushes.
func BenchmarkRequestPath(b *testing.B) {
	users := map[string]string{}
	for i := range 40 {
		users[fmt.Sprintf("u%02d", i)] = "home1"
	}
	c := Start(b, Options{Users: users})
	var clients []*Client
	for i := range 40 {
		u := c.Client(b, fmt.Sprintf("u%02d", i))
		if r := u.Login(14400); r.Status != 200 {
			b.Fatalf("%s login: %d", u.Alias, r.Status)
		}
		clients = append(clients, u)
	}
	alice, bob := clients[0], clients[1] // a message goes from one to the other
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
			if r := clients[i%len(clients)].SetState(states[i/len(clients)%2], 1200, 0); r.Status != 207 {
				b.Fatalf("PROPPATCH: %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("message", func(b *testing.B) {
		body := alice.MessageBody(bob.Alias, "benchmark")
		for b.Loop() {
			if r := alice.Send(bob.Alias, body); r.Status != 200 {
				b.Fatalf("NOTIFY: %d %s", r.Status, r.Body)
			}
		}
	})
}
