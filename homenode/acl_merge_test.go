package homenode

import (
	"slices"
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// TestMergeACL: an ACL write updates the entries of the principals it
// names and leaves the others, in librvp's order of single-ACE writes and
// in others; whoever the writes never named keeps what the default gave.
func TestMergeACL(t *testing.T) {
	alice, bob, carol, dave := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob"),
		events.NewUser("example.test", "carol"), events.NewUser("example.test", "dave")
	const aliceURL = "http://im.example.test/instmsg/aliases/alice"
	creds := []string{events.CredAssertion, events.CredDigest, events.CredNTLM}
	// What librvp writes (librvp-wire.md §2.5), its URLs with the host it
	// was configured with.
	all := events.ACE{Credentials: creds, Grant: []string{events.RightSendTo, events.RightPresence}}
	self := events.ACE{Principal: "http://127.0.0.1:18180/instmsg/aliases/alice", User: alice, Credentials: creds, Grant: events.Rights()}
	buddy := events.ACE{Principal: "http://127.0.0.1:18180/instmsg/aliases/bob", User: bob, Credentials: creds, Grant: []string{events.RightSendTo, events.RightPresence}}
	block := events.ACE{Principal: "http://im.example.test/instmsg/aliases/carol", User: carol, Credentials: creds, Deny: []string{events.RightSendTo, events.RightPresence}}
	unblock := events.ACE{Principal: "http://127.0.0.1:18180/instmsg/aliases/carol", User: carol, Credentials: creds}
	selfDeny := events.ACE{Principal: aliceURL, User: alice, Credentials: creds, Deny: []string{events.RightAll}}

	who := func(u events.User) principal {
		return principal{url: "http://im.example.test/instmsg/aliases/" + u.Alias, user: u, cred: events.CredNTLM, owner: u == alice}
	}
	type rights struct {
		user             events.User
		sendTo, presence bool
		read, writeACL   bool
	}
	for _, tc := range []struct {
		name   string
		writes [][]events.ACE
		want   []rights
		size   int
	}{
		{"librvp order: allprincipals, self, buddy", [][]events.ACE{{all}, {all}, {self}, {buddy}},
			[]rights{{bob, true, true, false, false}, {dave, true, true, false, false}, {alice, true, true, true, true}}, 3},
		{"buddy before self", [][]events.ACE{{buddy}, {self}, {all}},
			[]rights{{bob, true, true, false, false}, {dave, true, true, false, false}, {carol, true, true, false, false}}, 3},
		{"buddy only, the default's allprincipals stays", [][]events.ACE{{buddy}},
			[]rights{{carol, true, true, true, false}, {bob, true, true, true, false}}, 3},
		{"a deny for carol refuses her and only her", [][]events.ACE{{all}, {self}, {buddy}, {block}},
			[]rights{{carol, false, false, false, false}, {dave, true, true, false, false}, {bob, true, true, false, false}}, 4},
		{"an empty ACE removes the entry", [][]events.ACE{{all}, {block}, {unblock}},
			[]rights{{carol, true, true, false, false}}, 2},
		{"the owner's rights cannot be written away", [][]events.ACE{{selfDeny}},
			[]rights{{alice, true, true, true, true}, {dave, true, true, true, false}}, 2},
		{"several entries in one write", [][]events.ACE{{all, buddy, block}},
			[]rights{{carol, false, false, false, false}, {dave, true, true, false, false}}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acl := events.DefaultACL(alice, aliceURL)
			for _, w := range tc.writes {
				acl = mergeACL(acl, w, alice)
			}
			if len(acl) != tc.size {
				t.Errorf("%d entries, want %d: %+v", len(acl), tc.size, acl)
			}
			for _, r := range tc.want {
				p := who(r.user)
				for right, want := range map[string]bool{events.RightSendTo: r.sendTo, events.RightPresence: r.presence,
					events.RightRead: r.read, events.RightWriteACL: r.writeACL} {
					if got := permitted(acl, p, right); got != want {
						t.Errorf("%s %s: %v, want %v (ACL %+v)", r.user.Alias, right, got, want, acl)
					}
				}
			}
			for _, a := range acl {
				if a.User == alice && (!slices.Equal(a.Grant, events.Rights()) || len(a.Deny) > 0) {
					t.Errorf("owner's entry %+v lost rights", a)
				}
			}
		})
	}
}

// TestMergeACLUnchanged: writing what the ACL already holds changes
// nothing, so librvp's writes at every sign-in add no facts.
func TestMergeACLUnchanged(t *testing.T) {
	alice := events.NewUser("example.test", "alice")
	acl := events.DefaultACL(alice, "http://im.example.test/instmsg/aliases/alice")
	again := mergeACL(acl, []events.ACE{acl[0]}, alice)
	if !sameACL(acl, again) {
		t.Errorf("rewriting an entry changed the ACL: %+v → %+v", acl, again)
	}
	changed := mergeACL(acl, []events.ACE{{Credentials: acl[0].Credentials, Grant: []string{events.RightSendTo}}}, alice)
	if sameACL(acl, changed) {
		t.Error("a different grant left the ACL the same")
	}
	if !sameACL(acl, events.DefaultACL(alice, "http://im.example.test/instmsg/aliases/alice")) {
		t.Error("mergeACL modified its input")
	}
}
