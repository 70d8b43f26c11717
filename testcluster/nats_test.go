package testcluster

import (
	"context"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/projections"
)

// TestNATSCluster: three servers form a JetStream cluster, an R3 stream
// gets a leader; killed, its leader is replaced and what was
// acknowledged before is all there; restarted, the server catches up.
func TestNATSCluster(t *testing.T) {
	for _, processes := range []bool{false, true} {
		name := "in-process"
		if processes {
			name = "processes"
		}
		t.Run(name, func(t *testing.T) {
			if processes && testing.Short() {
				t.Skip("builds nats-server")
			}
			c := StartNATSCluster(t, NATSClusterOptions{Processes: processes})
			nc := c.Connect("test")
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
				t.Fatal(err)
			}
			leader := c.WaitStreamLeader(js, "T", 30*time.Second)
			for i := range 100 {
				if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			killed := time.Now()
			leader.Kill()
			next := c.WaitStreamLeader(js, "T", 30*time.Second)
			if next == leader {
				t.Fatalf("%s still leads", leader.Name)
			}
			t.Logf("%s killed; %s leads after %v", leader.Name, next.Name, time.Since(killed).Round(time.Millisecond))
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := js.Publish(pctx, "t.x", []byte{100}); err != nil {
				t.Fatalf("publish after the election: %v", err)
			}
			pcancel()
			leader.Start()
			c.WaitReady(js, "T")
			st, err := js.Stream(ctx, "T")
			if err != nil {
				t.Fatal(err)
			}
			if n := st.CachedInfo().State.Msgs; n != 101 {
				t.Errorf("%d messages, want 101", n)
			}
		})
	}
}

// TestEnsureStreamsTwoAtOnce: two processes setting up the streams of one
// three-server cluster at once (nodes starting together, two inits) both
// succeed, and the cluster's stream API answers afterwards. nats.go's
// CreateOrUpdateStream (update first) racing a create left nats-server
// 2.15.2 unanswering every later stream create.
func TestEnsureStreamsTwoAtOnce(t *testing.T) {
	c := StartNATSCluster(t, NATSClusterOptions{})
	nc := c.Connect("test")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs[i] = projections.EnsureStreams(ctx, js, projections.StreamOptions{Replicas: 3})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("setup %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AFTER", Subjects: []string{"after.>"}, Replicas: 3}); err != nil {
		t.Errorf("a stream created afterwards: %v", err)
	}
}

// TestBuildNATSServer checks that the nats-server binary for the tests'
// processes is the module's version, kept under a name that says so in
// the user's cache directory rather than a temporary directory per test
// binary.
func TestBuildNATSServer(t *testing.T) {
	key, versioned, err := natsServerBuildKey()
	if err != nil || !versioned || !strings.Contains(key, "v"+server.VERSION+"-h1") || !strings.Contains(key, runtime.Version()) {
		t.Fatalf("natsServerBuildKey() = %q, %v, %v: want the module's version %s, its checksum and the toolchain %s", key, versioned, err, server.VERSION, runtime.Version())
	}
	bin := BuildNATSServer(t)
	if filepath.Base(bin) != "nats-server-"+key {
		t.Fatalf("BuildNATSServer() = %s: want a file named nats-server-%s", bin, key)
	}
	out, err := osexec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), server.VERSION) {
		t.Fatalf("%s --version = %q, %v: want version %s", bin, out, err, server.VERSION)
	}
}
