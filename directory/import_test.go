package directory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestImportPasswordRefused: an import whose users are enabled but whose
// passwords the stream refuses (here: full, with DiscardNew) says so for
// each of them. It answered "created" (enabled, and its password set) and
// nothing else: rvpctl wrote the generated passwords to its file as
// working ones, and importing again said "exists, password included", so
// nothing told the administrator these users could never sign in.
func TestImportPasswordRefused(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	dir := a.Directory
	aliases := []string{"ann", "ben", "cid"}
	var spec directory.ImportSpec
	for _, alias := range aliases {
		u := events.NewUser("example.test", alias)
		v := rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", "secret-"+alias)
		spec.Users = append(spec.Users, directory.ImportUser{Spec: directory.UserSpec{User: u, Home: "home1"}, Verifiers: &v})
	}
	// Room for the users' user.enabled, none for their passwords.
	st, err := f.js.Stream(ctx, events.StreamDirectory)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxMsgs, cfg.Discard = int64(info.State.Msgs)+int64(len(aliases)), jetstream.DiscardNew
	if _, err := f.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	results, err := a.ImportUsers(ctx, spec, func(string) error { return nil })
	if err != nil {
		t.Fatalf("ImportUsers: %v", err)
	}
	for i, alias := range aliases {
		u := events.NewUser("example.test", alias)
		pw, perr := dir.Password(u)
		rec, _ := dir.User(u)
		t.Logf("%s: %+v; enabled %v, password %v (%v)", alias, results[i], rec != nil && rec.Enabled, pw != nil, perr)
		if results[i].Outcome == directory.ImportCreated && (rec == nil || !rec.Enabled) {
			t.Errorf("%s: the import said created, and the directory does not have it enabled", alias)
		}
		if pw != nil {
			continue // the stream took it after all: nothing to say
		}
		if results[i].Error == "" || !strings.Contains(results[i].Error, "password") {
			t.Errorf("%s has no password, and the import said %+v", alias, results[i])
		}
	}
}

// TestImportLowerCases: an import names its users lower-case whatever a
// client of the directory service sends (rvpctl lower-cases; another may
// not), as EnableUser does. It looked them up as sent: a user of an
// existing IM domain written with capitals was refused as of a domain that
// does not exist, and a disabled user written with capitals was reported
// "exists" (an enabled user), as enableUsers, which lower-cases, found its
// record and left it.
func TestImportLowerCases(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	dir := a.Directory
	bob := events.NewUser("example.test", "bob")
	if err := a.EnableUser(ctx, directory.UserSpec{User: bob, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.DisableUser(ctx, bob); err != nil {
		t.Fatal(err)
	}
	spec := directory.ImportSpec{Users: []directory.ImportUser{
		{Spec: directory.UserSpec{User: events.User{Domain: "Example.Test", Alias: "Alice"}, Home: "home1"}},
		{Spec: directory.UserSpec{User: events.User{Domain: "example.test", Alias: "BOB"}, Home: "home1"}},
	}}
	results, err := a.ImportUsers(ctx, spec, func(string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Outcome != directory.ImportCreated {
		t.Errorf("Alice@Example.Test: %+v, want created", results[0])
	}
	if rec, _ := dir.User(events.NewUser("example.test", "alice")); rec == nil || !rec.Enabled {
		t.Errorf("alice@example.test after the import: %+v", rec)
	}
	if results[1].Outcome != directory.ImportRefused || !strings.Contains(results[1].Error, "disabled") {
		t.Errorf("BOB@example.test, disabled: %+v, want refused as disabled", results[1])
	}
}
