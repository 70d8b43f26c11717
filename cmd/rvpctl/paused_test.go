package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestDirectoryThroughPausedServer pauses (SIGSTOP) the NATS server
// rvpctl's connection is on (neither the directory service's nor the
// directory stream's leader), as a frozen virtual machine would, and
// has rvpctl read a user and set a password through the directory
// service. rvpctl's connection notices the silence by its pings and moves
// to another server, and what was lost in the frozen one is asked again:
// both are answered within 20 s. Before, rvpctl's connection pinged
// every 2 minutes and its request waited for its whole 30 s, then said
// "context deadline exceeded (is rvpd running?)".
func TestDirectoryThroughPausedServer(t *testing.T) {
	testcluster.LongTest(t)
	c := testcluster.Start(t, testcluster.Options{Users: map[string]string{"alice": "home1"}, NATS: &testcluster.NATSClusterOptions{Processes: true}})
	ctx := context.Background()
	v, err := directory.NewAdminVerifier("root-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.CreateAdmin(ctx, "root", events.RoleOrganization, nil, v); err != nil {
		t.Fatal(err)
	}
	var target, serviceOn *testcluster.NATSServer
	testcluster.Eventually(t, 30*time.Second, func() error {
		busy := []*testcluster.NATSServer{c.NATS.ServerOf("admin-directory"), c.NATS.StreamLeader(c.JS, events.StreamDirectory)}
		if slices.Contains(busy, nil) {
			return fmt.Errorf("the directory follower's server and the directory stream's leader: %v", busy)
		}
		for _, s := range c.NATS.Servers {
			if !slices.Contains(busy, s) {
				target = s
			}
		}
		if target == nil {
			return fmt.Errorf("no server but %v", busy)
		}
		serviceOn = busy[1]
		return nil
	})
	// The directory service, on a server other than the one paused.
	sc, err := nats.Connect(serviceOn.URL(), append(natsclient.Liveness(), nats.Name("directory-service"), nats.MaxReconnects(-1))...)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sjs, err := jetstream.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	svc := &directory.Service{Admin: &directory.Admin{JetStream: sjs, Directory: c.Admin.Directory, Keyring: c.Keyring}, Conn: sc}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- svc.Run(runCtx) }()
	defer func() { stop(); <-served }()

	// rvpctl's connection, as rvpctl makes it, to the server paused.
	nc, _, err := connect(global{nats: target.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cl := &directory.Client{Conn: nc, Name: "root", Password: "root-pw"}
	alice := events.NewUser(c.Domain, "alice")
	if _, err := cl.User(ctx, alice); err != nil {
		t.Fatalf("alice before the pause: %v", err)
	}

	target.Pause()
	defer target.Resume()
	silent(t, target)
	start := time.Now()
	sum, err := cl.User(ctx, alice)
	took := time.Since(start)
	if err != nil || sum.Home != "home1" {
		t.Fatalf("alice, %s (rvpctl's server) paused: %+v, %v after %v", target.Name, sum, err, took.Round(time.Millisecond))
	}
	if took > 20*time.Second {
		t.Errorf("alice, %s (rvpctl's server) paused, answered after %v, want at most 20 s", target.Name, took.Round(time.Millisecond))
	}
	t.Logf("alice read %v after %s (rvpctl's server) was paused", took.Round(time.Millisecond), target.Name)

	// A change, through a new connection to the server, paused again.
	target.Resume()
	nc2, _, err := connect(global{nats: target.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	cl = &directory.Client{Conn: nc2, Name: "root", Password: "root-pw"}
	if _, err := cl.Whoami(ctx); err != nil {
		t.Fatalf("whoami before the second pause: %v", err)
	}
	target.Pause()
	silent(t, target)
	verifiers, err := directory.NewAdminVerifier("other")
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = cl.SetAdmin(ctx, directory.AdminSpec{Name: "ops", Role: events.RoleOrganization, Verifier: &verifiers})
	took = time.Since(start)
	if err != nil {
		if !strings.Contains(err.Error(), "may have been recorded") {
			t.Fatalf("admin ops added, %s paused: %v after %v", target.Name, err, took.Round(time.Millisecond))
		}
		t.Logf("admin ops added, %s paused: %v", target.Name, err)
	}
	if took > 20*time.Second {
		t.Errorf("admin ops added, %s paused, answered after %v, want at most 20 s", target.Name, took.Round(time.Millisecond))
	}
	t.Logf("admin ops added %v after %s was paused: %v", took.Round(time.Millisecond), target.Name, err)
}

// silent waits until a server paused has stopped answering (SIGSTOP
// takes effect once the process is scheduled): its monitoring port takes
// the connection and says nothing.
func silent(t *testing.T, s *testcluster.NATSServer) {
	t.Helper()
	hc := &http.Client{Timeout: 300 * time.Millisecond}
	testcluster.Eventually(t, 10*time.Second, func() error {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", s.MonitorPort))
		if err != nil {
			return nil
		}
		resp.Body.Close()
		return fmt.Errorf("%s still answers", s.Name)
	})
}
