package directory_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestServiceRecordsWhereFrom: an administrator's change records where it
// was made from, in the audit record of its directory event (Meta.Client)
// and in the service's log: the address rvpctl's NATS connection came
// from, as the NATS server saw it, and rvpctl's host name. An auditor
// asking who disabled a user and from where had the name alone. The
// administrator states it under its proof: a changed statement is
// refused, and so is one that is not an address and a host name, with no
// change made.
func TestServiceRecordsWhereFrom(t *testing.T) {
	f := newAdminFixtureOn(t, true)
	ctx := t.Context()
	a := f.exampleAdmin(ctx)
	v, err := directory.NewAdminVerifier("org-admin-pw-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAdmin(ctx, "admin", events.RoleOrganization, nil, v); err != nil {
		t.Fatal(err)
	}
	logs := startService(t, a, f.js.Conn())

	// rvpctl's way in: a connection of its own, over TCP.
	nc, err := nats.Connect(f.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &directory.Client{Conn: nc, Name: "admin", Password: "org-admin-pw-1"}
	if err := c.CreateHomeServer(ctx, directory.HomeServerSpec{Name: "home2", Host: "imhome2.example.test", HostsUsers: true}); err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1 (host " + host + ")"
	ev, ok := f.lastEvent(events.HomeServerSubject("home2")).(*events.HomeServerCreated)
	if !ok {
		t.Fatalf("home2's last event: %T, want a home server created", f.lastEvent(events.HomeServerSubject("home2")))
	}
	if ev.Actor != "admin:admin" || ev.Client != want {
		t.Errorf("home2 created by %q from %q; want admin:admin from %q", ev.Actor, ev.Client, want)
	}
	if out := logs.String(); !strings.Contains(out, `op=home.create admin=admin from="`+want+`"`) {
		t.Errorf("the change's log does not say where it came from:\n%s", out)
	}

	// A statement the proof does not cover, and one that is no address.
	send := func(where directory.Where, forge bool) directory.Response {
		t.Helper()
		ask := func(req directory.Request) directory.Response {
			t.Helper()
			data, _ := json.Marshal(req)
			msg, err := f.js.Conn().RequestWithContext(ctx, events.DirectoryAdminSubject, data)
			if err != nil {
				t.Fatal(err)
			}
			var resp directory.Response
			if err := json.Unmarshal(msg.Data, &resp); err != nil {
				t.Fatal(err)
			}
			return resp
		}
		ch := ask(directory.Request{Op: directory.OpChallenge, Admin: "admin"})
		key, err := directory.AdminKey("org-admin-pw-1", ch.Salt, ch.Iter)
		if err != nil {
			t.Fatal(err)
		}
		args, _ := json.Marshal(directory.HomeServerSpec{Name: "home3", Host: "imhome3.example.test", HostsUsers: true})
		op := directory.OpHomeCreate
		signed := where
		if forge {
			signed.Addr = "192.0.2.1" // what the administrator stated
		}
		return ask(directory.Request{
			Op: op, Admin: "admin", Challenge: ch.Challenge, Args: args,
			Proof: directory.AdminProof(key, ch.Challenge, directory.ProofBody(op, args)),
			Where: &where, WhereProof: directory.AdminProof(key, ch.Challenge, directory.WhereBody(op, signed)),
		})
	}
	if resp := send(directory.Where{Addr: "198.51.100.9", Host: "ops"}, true); resp.Code != directory.CodeUnauthenticated {
		t.Errorf("a statement of where changed after it was signed: %d %q, want 401", resp.Code, resp.Error)
	}
	if resp := send(directory.Where{Addr: "ops-laptop", Host: "ops"}, false); resp.Code != directory.CodeInvalid || !strings.Contains(resp.Error, "not an IP address") {
		t.Errorf("a statement of where that is no address: %d %q, want 400 naming it", resp.Code, resp.Error)
	}
	if resp := send(directory.Where{Addr: "192.0.2.1", Host: "ops\nlaptop"}, false); resp.Code != directory.CodeInvalid || !strings.Contains(resp.Error, "host name") {
		t.Errorf("a host name with a line break: %d %q, want 400 naming it", resp.Code, resp.Error)
	}
	if hs, err := a.Directory.HomeServer("home3"); err != nil || hs != nil {
		t.Errorf("a refused request made a change: home3 %+v, %v", hs, err)
	}
}
