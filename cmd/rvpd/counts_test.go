package main

import (
	"bytes"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
)

// TestInitDoneCountsReplicas: rvpd init's summary says "1 replica" for a
// cluster of one NATS server (it said "1 replicas"), "3 replicas" for a
// site's three.
func TestInitDoneCountsReplicas(t *testing.T) {
	for n, want := range map[int]string{1: "  streams:        1 replica; ", 3: "  streams:        3 replicas; "} {
		var b bytes.Buffer
		printInitDone(&b, initFlags{replicas: n, admin: "admin", nats: "nats://127.0.0.1:4222"}, directory.InitSpec{}, "in a file", "nats://127.0.0.1:4222")
		if !strings.Contains(b.String(), want) {
			t.Errorf("-streams.replicas %d: the summary lacks %q:\n%s", n, want, b.String())
		}
	}
}

// TestConsoleUsersCount: the console's user list counts what it shows
// in words read as written: "1 user matches" a search (it said "1 users
// match"), "3 users" of the demo domain.
func TestConsoleUsersCount(t *testing.T) {
	_, ops := startDevOps(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := client.PostForm(ops+"/console/login", url.Values{"name": {"admin"}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/console/" {
		t.Fatalf("admin signs in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	for path, want := range map[string]string{
		"/console/users?q=alice":       "1 user matches “alice”.",
		"/console/users?q=example":     "3 users match “example”.",
		"/console/users?q=nobody-else": "0 users match “nobody-else”.",
		"/console/users":               "3 users.",
	} {
		if _, body := get(t, client, ops+path); !strings.Contains(body, want) {
			t.Errorf("GET %s lacks %q:\n%s", path, want, body)
		}
	}
}
