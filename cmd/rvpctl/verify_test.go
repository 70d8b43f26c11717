package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestVerifyProgress: rvpctl verify has the home node rebuild its
// projections and compare; it shows the rebuilds' progress as plain
// lines when its output is not a terminal, and nothing but the results
// with -json.
func TestVerifyProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd")
	}
	httpAddr, natsURL := rvpdProcess(t, "org-admin-pw-1")
	alice := testcluster.NewClient(t, httpAddr, "alice")
	alice.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "alice", Domain: "EXAMPLE", Password: "org-admin-pw-1"}
	if r := alice.Login(3600); r.Status != 200 {
		t.Fatalf("alice's login: %d %s", r.Status, r.Body)
	}
	if r := alice.SetState("online", 1200, 0); r.Status != 207 {
		t.Fatalf("alice's state: %d %s", r.Status, r.Body)
	}
	run := func(args ...string) (string, string) {
		t.Helper()
		lookup := func(k string) (string, bool) { return natsURL, k == "RVPCTL_NATS" }
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("rvpctl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	out, progress := run("verify")
	for _, want := range []string{"home home1", "directory", "equal to a rebuild from its stream"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify's table lacks %q:\n%s", want, out)
		}
	}
	// The fence of home1's first start (1,000 facts: homenode's
	// fence.go), then alice's 2.
	for _, want := range []string{"rebuild home home1: 1,002 events applied, sequence 1,002 of 1,002", "rebuild directory: ", "events/s"} {
		if !strings.Contains(progress, want) {
			t.Errorf("verify's progress lacks %q:\n%s", want, progress)
		}
	}
	if strings.Contains(progress, "\r") {
		t.Errorf("progress rewrites its line though its output is no terminal: %q", progress)
	}

	out, progress = run("-json", "verify")
	if progress != "" {
		t.Errorf("verify -json writes progress: %q", progress)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v projections.Verification
		if err := json.Unmarshal([]byte(line), &v); err != nil || !v.OK() || v.Position == 0 {
			t.Errorf("verify -json line %q: %+v %v", line, v, err)
		}
	}
}

// TestProgressLine: on a terminal the progress is one line rewritten in
// place and ended by a newline; nothing shows after the end.
func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	l := &progressLine{w: &b, tty: true}
	l.update(projections.Progress{Projection: "home home1", Applied: 1500, Seq: 1600, Last: 250000, Elapsed: time.Second})
	l.update(projections.Progress{Projection: "home home1", Applied: 2500, Seq: 2600, Last: 250000, Elapsed: 2 * time.Second})
	l.end()
	l.update(projections.Progress{Projection: "directory", Done: true})
	want := "\rrebuild home home1: 1,500 events applied, sequence 1,600 of 250,000, 1,500 events/s, 1.0s\x1b[K" +
		"\rrebuild home home1: 2,500 events applied, sequence 2,600 of 250,000, 1,250 events/s, 2.0s\x1b[K\n"
	if b.String() != want {
		t.Errorf("terminal output:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestProgressLineOneEvent: a rebuild of one event says so in the
// singular ("1 event applied", where it said "1 events applied").
func TestProgressLineOneEvent(t *testing.T) {
	var b bytes.Buffer
	l := &progressLine{w: &b}
	l.update(projections.Progress{Projection: "home home1", Applied: 1, Seq: 1, Last: 1, Elapsed: time.Second, Done: true})
	if want := "rebuild home home1: 1 event applied, sequence 1 of 1, 1 events/s, 1.0s\n"; b.String() != want {
		t.Errorf("output %q, want %q", b.String(), want)
	}
}

// TestVerifyEveryHomeServer: rvpctl verify without -home has the node of
// every home server compare its projections (docs/operations.md: "each
// home node compares"), not home1's alone, which a cluster may not even
// have. A home server no node owns is said not verified, at once, and
// makes verify fail; the others are verified all the same.
func TestVerifyEveryHomeServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers and four home nodes")
	}
	c := testcluster.Start(t, testcluster.Options{
		Users:    map[string]string{"alice": "home1", "bob": "home2"},
		NATS:     &testcluster.NATSClusterOptions{},
		Standbys: 1, // home nodes that own their home server through its lease, as rvpd's
	})
	alice, bob := c.Client(t, "alice"), c.Client(t, "bob")
	for _, cl := range []*testcluster.Client{alice, bob} {
		if r := cl.Login(3600); r.Status != 200 {
			t.Fatalf("%s's login: %d %s", cl.Alias, r.Status, r.Body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// home3: its facts kept, no node for it.
	if _, err := c.JS.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream("home3"), Subjects: []string{events.FactFilter("home3")}}); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { return c.NATS.URLs(), k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	start := time.Now()
	err := exec(ctx, []string{"verify"}, lookup, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "home3") {
		t.Errorf("verify with home3 owned by no node: %v; want it to fail naming home3\n%s", err, out.String())
	}
	if took := time.Since(start); took > verifyWait {
		t.Errorf("verify took %s: it waited for home3's node, which no lease names", took)
	}
	for _, want := range []string{`home1 +home home1 `, `home1 +directory `, `home2 +home home2 `, `home2 +directory `} {
		if !regexp.MustCompile(`(?m)^` + want + ` *\d+ +\d+ +equal to a rebuild from its stream$`).MatchString(out.String()) {
			t.Errorf("verify's table lacks %q, equal to its rebuild:\n%s", want, out.String())
		}
	}
	if !regexp.MustCompile(`(?m)^home3 .*not verified: no node owns it`).MatchString(out.String()) {
		t.Errorf("verify's table does not say home3 not verified, no node owning it:\n%s", out.String())
	}

	out.Reset()
	exec(ctx, []string{"-json", "verify"}, lookup, strings.NewReader(""), &out, &errOut)
	homes := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var v struct {
			Home string `json:"home"`
			projections.Verification
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil || !v.OK() {
			t.Errorf("verify -json line %q: %+v %v", line, v, err)
		}
		homes[v.Home]++
	}
	if homes["home1"] != 2 || homes["home2"] != 2 {
		t.Errorf("verify -json: projections by home server %v, want two (home, directory) each of home1 and home2\n%s", homes, out.String())
	}
}

// TestVerifyUnknownHomeServer: rvpctl verify -home H for a home server
// the directory does not have, nor any fact stream (a typo, or one
// deleted), says so at once, naming where the home servers are listed;
// it used to wait verifyWait for its node to start, then fail with "no
// responders available for request (is it running?)". One the directory
// has, whose node has not started yet, is still waited for.
func TestVerifyUnknownHomeServer(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream, the directory
	publishEvent(t, js, events.HomeServerSubject("home1"), "", &events.HomeServerCreated{Name: "home1", Host: "home1.example.test", HostsUsers: true}, nil)
	publishEvent(t, js, events.HomeServerSubject("home3"), "", &events.HomeServerCreated{Name: "home3", Host: "home3.example.test", HostsUsers: true}, nil)
	publishEvent(t, js, events.HomeServerSubject("home3"), "", &events.HomeServerDeleted{Name: "home3"}, nil)
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	for home, want := range map[string]string{
		"home2": "home server home2 does not exist",
		"home3": "home server home3 was deleted",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var out, errOut bytes.Buffer
		start := time.Now()
		err := exec(ctx, []string{"verify", "-home", home}, lookup, strings.NewReader(""), &out, &errOut)
		took := time.Since(start)
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "rvpctl home list") {
			t.Errorf("verify -home %s: %v; want an error saying %q and naming rvpctl home list\n%s", home, err, want, errOut.String())
		}
		if took > verifyWait/3 {
			t.Errorf("verify -home %s took %s: it waited for the node of a home server that does not exist", home, took)
		}
		if strings.Contains(errOut.String(), "waiting up to") {
			t.Errorf("verify -home %s says it waits for a node: %q", home, errOut.String())
		}
	}
}
