package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// TestStatusHomeWithoutOwner: rvpctl status names every home server with
// a fact stream, and says so of one that no node owns: its lease lapsed
// (no key) or was let go ("released:NODE"), not as if NODE owned it, nor
// left out of the table while the others are listed.
func TestStatusHomeWithoutOwner(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream
	ctx := context.Background()
	streams := map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>"}
	for _, h := range []string{"home2", "home3"} {
		streams[events.FactStream(h)] = events.FactFilter(h)
	}
	for name, subj := range streams {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketOwners, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home2"), []byte("released:n2")); err != nil {
		t.Fatal(err)
	}
	// home3: no key, its owner's lease lapsed.
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "home") {
			lines[f[0]] = l
		}
	}
	if l := lines["home1"]; !strings.Contains(l, " n1 ") {
		t.Errorf("home1, owned by n1: %q\n%s", l, out.String())
	}
	for _, h := range []string{"home2", "home3"} {
		if l := lines[h]; !strings.Contains(l, "NOT OWNED") {
			t.Errorf("%s, owned by no node: %q, want it said NOT OWNED\n%s", h, l, out.String())
		}
	}

	out.Reset()
	if err := exec(ctx, []string{"-json", "status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status -json: %v\n%s", err, errOut.String())
	}
	owned := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		var o struct {
			Home  *string `json:"home"`
			Node  string  `json:"node"`
			Owned bool    `json:"owned"`
		}
		if json.Unmarshal([]byte(l), &o) != nil || o.Home == nil {
			continue
		}
		owned[*o.Home] = o.Owned
		if !o.Owned && o.Node != "" {
			t.Errorf("-json: %s not owned, but node %q", *o.Home, o.Node)
		}
	}
	if len(owned) != 3 || !owned["home1"] || owned["home2"] || owned["home3"] {
		t.Errorf("-json owned: %v, want home1 true, home2 and home3 false\n%s", owned, out.String())
	}
}

// TestStatusDeletedHomeServer: a home server deleted from the directory
// keeps its fact stream (the audit's), and no node will ever own it
// again: rvpctl status must not list it as NOT OWNED, telling the
// operator its users' requests wait and to start a node for it.
func TestStatusDeletedHomeServer(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream, the directory
	ctx := context.Background()
	streams := map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>",
		events.FactStream("home2"): events.FactFilter("home2")}
	for name, subj := range streams {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"home1", "home2"} {
		publishEvent(t, js, events.HomeServerSubject(h), "", &events.HomeServerCreated{Name: h, Host: h + ".example.test", HostsUsers: true}, nil)
	}
	publishEvent(t, js, events.HomeServerSubject("home2"), "", &events.HomeServerDeleted{Name: "home2"}, nil)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketOwners, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "home2" && strings.Contains(l, "NOT OWNED") {
			t.Errorf("home2, deleted, listed as waiting for a node: %q\n%s", l, out.String())
		}
	}
	if !strings.Contains(out.String(), " n1 ") {
		t.Errorf("home1, owned by n1, not listed so:\n%s", out.String())
	}
}
