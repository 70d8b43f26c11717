package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// longTest skips a long fault or load test unless RVP_LONG=1 or -run
// names it: make test stays fast; .ci/run runs it by name.
func longTest(t *testing.T) {
	t.Helper()
	if os.Getenv("RVP_LONG") == "1" {
		return
	}
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), t.Name()) {
		return
	}
	t.Skipf("long test: run with RVP_LONG=1 or -run %s", t.Name())
}

// TestKillHomeUnderLoad kills `rvpd dev` with SIGKILL while 32 clients
// keep its home node's pipeline full (state properties, logins and their
// ends, each request with a mark of its own), restarts it on the same data, and
// counts: every request that got a success answer before the kill has
// its fact in the home server's stream after the restart, and the
// restarted node's projection equals a rebuild. It takes a few seconds,
// so make test runs it.
func TestKillHomeUnderLoad(t *testing.T) {
	bin := buildRvpd(t)
	data := t.TempDir()
	start := func() (cmd *osexec.Cmd, addr, natsURL string) {
		cmd, addr, out, _ := startDevBinary(t, bin, data, "-nats", "127.0.0.1:0")
		n := natsRE.FindStringSubmatch(out.String())
		if n == nil {
			t.Fatalf("no NATS address in the banner:\n%s", out.String())
		}
		return cmd, addr, n[1]
	}
	cmd, addr, _ := start()

	// Acknowledged: the marks of PROPPATCHes answered 207, and the ids of
	// logins answered 200, per user.
	var mu sync.Mutex
	marks := map[string]bool{}
	logins, logouts := map[string]map[int32]bool{}, map[string]map[int32]bool{}
	users := []string{"alice", "bob", "carol"}
	for _, u := range users {
		logins[u], logouts[u] = map[int32]bool{}, map[int32]bool{}
	}
	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			alias := users[w%len(users)]
			c := newClient(t, addr, alias)
			c.Source = "127.0.0." + strconv.Itoa(2+w)
			var last int32 // the login to end next
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					mark := fmt.Sprintf("w%d-%d", w, i)
					body := `<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop>` +
						`<r:mobile-description>` + mark + `</r:mobile-description></d:prop></d:set></d:propertyupdate>`
					r, err := c.TryDo("PROPPATCH", "/instmsg/aliases/"+alias, []byte(body), "Content-Type: text/xml", c.From())
					if err != nil {
						return // the server is gone
					}
					if r.Status == 207 && strings.Contains(string(r.Body), "mobile-description") && !strings.Contains(string(r.Body), " 403 ") {
						mu.Lock()
						marks[mark] = true
						mu.Unlock()
						answered.Add(1)
					}
					continue
				}
				if last != 0 {
					// Logins do not pile up (a node has room for 64).
					r, err := c.TryDo("UNSUBSCRIBE", "/instmsg/aliases/"+alias, nil, c.From(), "Subscription-Id: "+strconv.Itoa(int(last)))
					if err != nil {
						return
					}
					if r.Status == 200 {
						mu.Lock()
						logouts[alias][last] = true
						mu.Unlock()
						answered.Add(1)
					}
					last = 0
					continue
				}
				r, err := c.TryDo("SUBSCRIBE", "/instmsg/aliases/"+alias, nil, "Notification-Type: pragma/notify", c.From(),
					"Subscription-Lifetime: 14400", "Call-Back: "+c.CallBack)
				if err != nil {
					return
				}
				if r.Status == 200 {
					id, err := strconv.Atoi(r.Header.Get("Subscription-Id"))
					if err != nil {
						t.Errorf("login answered 200 without a subscription id: %v", r.Header)
						continue
					}
					mu.Lock()
					logins[alias][int32(id)] = true
					mu.Unlock()
					answered.Add(1)
					last = int32(id)
				}
			}
		}()
	}
	// Kill it in the middle of the load.
	for deadline := time.Now().Add(60 * time.Second); answered.Load() < 600; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests answered in a minute", answered.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(stop)
	wg.Wait()

	_, addr, natsURL := start()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.FactStream(demoHome), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	survived := map[string]bool{}
	created, ended := map[string]map[int32]bool{}, map[string]map[int32]bool{}
	for {
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := events.Decode(m.Headers().Get(events.HeaderType), m.Data())
			if err != nil {
				t.Fatal(err)
			}
			switch f := ev.(type) {
			case *events.PropertySet:
				survived[f.Value.Value] = true
			case *events.SubscriptionCreated:
				if created[f.Node.Alias] == nil {
					created[f.Node.Alias] = map[int32]bool{}
				}
				created[f.Node.Alias][f.ID] = true
			case *events.SubscriptionEnded:
				if ended[f.Node.Alias] == nil {
					ended[f.Node.Alias] = map[int32]bool{}
				}
				ended[f.Node.Alias][f.ID] = true
			}
		}
		if n == 0 {
			break
		}
	}
	acked, lost := 0, 0
	for mark := range marks {
		acked++
		if !survived[mark] {
			lost++
			t.Errorf("PROPPATCH %s was answered 207; its fact is not in the stream after the restart", mark)
		}
	}
	for alias, ids := range logins {
		for id := range ids {
			acked++
			if !created[alias][id] {
				lost++
				t.Errorf("login %d of %s was answered 200; its fact is not in the stream after the restart", id, alias)
			}
		}
	}
	for alias, ids := range logouts {
		for id := range ids {
			acked++
			if !ended[alias][id] {
				lost++
				t.Errorf("the end of login %d of %s was answered 200; its fact is not in the stream after the restart", id, alias)
			}
		}
	}
	facts := len(survived)
	for _, ids := range created {
		facts += len(ids)
	}
	for _, ids := range ended {
		facts += len(ids)
	}
	t.Logf("killed with %d requests answered: %d acknowledged, %d survived, %d lost; %d such facts in the stream (the rest were decided but not answered)",
		answered.Load(), acked, acked-lost, lost, facts)

	// The restarted node serves, and its projection equals a rebuild.
	alice := newClient(t, addr, "alice")
	mustStatus(t, "login after the restart", alice.Login(14400), 200)
	m, err := nc.Request(events.HomeAdminSubject(demoHome, "verify"), nil, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Results []struct {
			Projection string `json:"projection"`
			Diff       string `json:"diff"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &v); err != nil || v.Error != "" || len(v.Results) == 0 {
		t.Fatalf("verify: %s (%v)", m.Data, err)
	}
	for _, r := range v.Results {
		if r.Diff != "" {
			t.Errorf("%s differs from its rebuild:\n%s", r.Projection, r.Diff)
		}
	}
}

// startDevBinary starts the rvpd binary bin in dev mode on data (a lease
// of 30 s, the RVP listener on a free loopback port, more flags in args),
// waits for its banner and returns it with its RVP address and outputs;
// the test's cleanup kills it.
func startDevBinary(t *testing.T, bin, data string, args ...string) (cmd *osexec.Cmd, addr string, out, errs *syncBuffer) {
	t.Helper()
	cmd = osexec.Command(bin, append([]string{"dev", "-data", data, "-http", "127.0.0.1:0", "-demo-password", testPassword,
		"-home.lease-ttl", "30s"}, args...)...)
	out, errs = newSyncBuffer(), newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	m, err := out.waitMatch(listenRE, 60*time.Second, nil)
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, errs.String())
	}
	return cmd, m[1], out, errs
}
