package gateway

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// aliceDirectory returns a directory with the IM domain example.test (NT
// domain EXAMPLE) and its user alice, enabled with a password (which
// aliceKeyring opens as "correct horse"), and the domain.
func aliceDirectory(t *testing.T) (*projections.Directory, *projections.Domain) {
	t.Helper()
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	applyDirectory(t, dir,
		&events.DomainCreated{Domain: "example.test", IMHost: "im.example.test", NTDomain: "EXAMPLE"},
		&events.UserEnabled{User: alice, Home: "home1"},
		&events.PasswordSet{User: alice, Verifiers: []byte("sealed")},
	)
	dom, err := dir.Domain("example.test")
	if err != nil || dom == nil {
		t.Fatalf("domain: %v %v", dom, err)
	}
	return dir, dom
}

// applyDirectory applies evs to dir, after what it holds.
func applyDirectory(t *testing.T, dir *projections.Directory, evs ...events.Event) {
	t.Helper()
	var msgs []projections.Msg
	seq := dir.Position()
	for _, ev := range evs {
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		seq++
		msgs = append(msgs, projections.Msg{Seq: seq, Type: ev.Type(), Data: data})
	}
	if err := dir.ApplyBatch(msgs); err != nil {
		t.Fatal(err)
	}
}

// ntlmSignIn runs an NTLM handshake on st for user with the given LM and NT
// responses (whatever they are: the server challenge is not known in
// advance) and returns the outcome of its authenticate message.
func ntlmSignIn(t *testing.T, c *Credentials, st *ConnState, ar AuthRequest, user string, lm, nt func(challenge []byte) []byte) Outcome {
	t.Helper()
	ar.Req = &rvp.Request{Method: ar.Req.Method, Target: ar.Req.Target, Header: rvp.Header{}}
	ar.Req.Header.Add(rvp.HdrAuthorization, "NTLM "+librvpNegotiate)
	out := c.Authenticate(st, ar)
	if out.Verdict != Challenged || len(out.Challenge) != 1 {
		t.Fatalf("negotiate: %+v", out)
	}
	type2, err := base64.StdEncoding.DecodeString(out.Challenge[0][len("NTLM "):])
	if err != nil {
		t.Fatal(err)
	}
	challenge := type2[24:32]
	ar.Req = &rvp.Request{Method: ar.Req.Method, Target: ar.Req.Target, Header: rvp.Header{}}
	ar.Req.Header.Add(rvp.HdrAuthorization, "NTLM "+base64.StdEncoding.EncodeToString(
		authenticateMessage(lm(challenge), nt(challenge), "EXAMPLE", user)))
	return c.Authenticate(st, ar)
}

func ntlmv1(password string) func([]byte) []byte {
	return func(challenge []byte) []byte { return desl(rvp.NTHash(password), challenge) }
}

func none([]byte) []byte { return nil }

// TestNoNTLMv1SaysNothingOfAccounts: with NTLMv1 switched off, an NTLMv1
// answer is refused the same way whether the account exists or not.
// It was refused with "NTLMv1 is not accepted here" for an enabled user
// only (and without a failure counted), after looking the user up, and
// with the usual challenge, a failure counted, for any other name: a
// free oracle of who the users are.
func TestNoNTLMv1SaysNothingOfAccounts(t *testing.T) {
	dir, dom := aliceDirectory(t)
	c, err := NewCredentials(CredentialsConfig{Keyring: aliceKeyring{"k"}, Directory: dir, NoNTLMv1: true})
	if err != nil {
		t.Fatal(err)
	}
	ar := AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice"}, Client: "192.0.2.1", Domain: dom, Required: true}
	wrong := ntlmv1("guess")
	real := ntlmSignIn(t, c, &ConnState{}, ar, "alice", none, wrong)
	nobody := ntlmSignIn(t, c, &ConnState{}, ar, "nobody", none, wrong)
	if real.Verdict != nobody.Verdict || real.Msg != nobody.Msg {
		t.Errorf("NTLMv1 for a user: %d %q; for no user: %d %q", real.Verdict, real.Msg, nobody.Verdict, nobody.Msg)
	}
	// And it is no guess: even alice's right password in NTLMv1 is no
	// sign-in, and counts nothing against her.
	if out := ntlmSignIn(t, c, &ConnState{}, ar, "alice", none, ntlmv1("correct horse")); out.Verdict != Refused {
		t.Errorf("NTLMv1 with the right password, switched off: %+v", out)
	}
	if w := c.lockout.wait("alice@example.test", "192.0.2.1", time.Now()); w != 0 {
		t.Errorf("NTLMv1 refusals made alice wait %v", w)
	}
}

// TestLockoutIPv6Network: an IPv6 client is counted by its /64, as
// everywhere else a client address is counted (connections, senders):
// one host is given a /64 and may sign in from any address of it. The
// count was by address, so a client that changed address at each guess
// never made its pair wait, nor its address (guessing many accounts).
func TestLockoutIPv6Network(t *testing.T) {
	dir, dom := aliceDirectory(t)
	c, err := NewCredentials(CredentialsConfig{Profile: ProfileBasic, Keyring: aliceKeyring{"k"}, Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	try := func(client, user, password string) Outcome {
		h := rvp.Header{}
		h.Add(rvp.HdrAuthorization, "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
		return c.Authenticate(&ConnState{}, AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: h},
			Client: client, Domain: dom, Required: true})
	}
	// alice signs in from her own /64: known there.
	if out := try("2001:db8:1::1", "alice", "correct horse"); out.Verdict != Authenticated {
		t.Fatalf("alice: %+v", out)
	}
	// Guesses at alice from one /64, a new address each time.
	var out Outcome
	for i := range DefaultLockoutFree + 1 {
		out = try(fmt.Sprintf("2001:db8:2::%x", i+1), "alice", "guess")
	}
	if out = try("2001:db8:2::ffff", "alice", "guess"); out.Verdict != Throttled {
		t.Errorf("after %d failures from one /64, a guess from another of its addresses: %+v", DefaultLockoutFree+1, out)
	}
	// Guesses at many accounts from one /64.
	for i := range 10*DefaultLockoutFree + 1 {
		try(fmt.Sprintf("2001:db8:3::%x", i+1), fmt.Sprintf("user%d", i), "guess")
	}
	if out = try("2001:db8:3::ffff", "someone", "guess"); out.Verdict != Throttled {
		t.Errorf("after %d failures for many accounts from one /64, another guess from it: %+v", 10*DefaultLockoutFree+1, out)
	}
	// alice on her own /64, from a new address of it (a privacy
	// address), still signs in.
	if out = try("2001:db8:1::2", "alice", "correct horse"); out.Verdict != Authenticated {
		t.Errorf("alice from her /64: %+v", out)
	}
}

// TestNTLMConnectionEndsWithUser: a connection NTLM signed in on speaks
// for its user without credentials, but not once the user is disabled:
// a client that kept its connection open (a request a minute is enough)
// went on speaking, sending messages to enabled users and all, as a user
// the directory no longer has.
func TestNTLMConnectionEndsWithUser(t *testing.T) {
	dir, dom := aliceDirectory(t)
	c, err := NewCredentials(CredentialsConfig{Keyring: aliceKeyring{"k"}, Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	ar := AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: rvp.Header{}}, Client: "192.0.2.1", Domain: dom, Required: true}
	st := &ConnState{}
	if out := ntlmSignIn(t, c, st, ar, "alice", none, ntlmv1("correct horse")); out.Verdict != Authenticated {
		t.Fatalf("sign-in: %+v", out)
	}
	ar.Req = &rvp.Request{Method: "NOTIFY", Target: "/instmsg/aliases/bob", Header: rvp.Header{}}
	if out := c.Authenticate(st, ar); out.Verdict != Authenticated || out.Identity.User != events.NewUser("example.test", "alice") {
		t.Fatalf("the connection's next request: %+v", out)
	}
	applyDirectory(t, dir, &events.UserDisabled{User: events.NewUser("example.test", "alice")})
	if out := c.Authenticate(st, ar); out.Verdict == Authenticated {
		t.Errorf("alice disabled, her connection's next request: %+v", out)
	}
	if st.Identity.Scheme != "" {
		t.Errorf("the connection still holds %+v", st.Identity)
	}
}

// subjectKeyring opens sealed verifiers only for the subject they were
// sealed for, as directory.Keyring's AES-GCM does (the subject is its
// additional data): here "alice-sealed" is alice's, password "correct
// horse", and opens for nobody else.
type subjectKeyring struct{ macKeyring }

func (subjectKeyring) OpenVerifiers(sealed []byte, subject string) (*rvp.Verifiers, error) {
	alice := events.NewUser("example.test", "alice")
	if string(sealed) != "alice-sealed" || subject != events.UserSubject(alice) {
		return nil, fmt.Errorf("sealed secret: cannot open it for %s", subject)
	}
	v := rvp.NewVerifiers(alice, "EXAMPLE", "", "example.test", "correct horse")
	return &v, nil
}

// TestVerifierCacheKeepsSubject: sealed verifiers open only for the user
// they were sealed for, so that alice's, copied onto bob in the directory
// stream, are no password of bob's. The cache of opened verifiers was
// kept by the sealed bytes alone: once alice had signed in, bob's copy
// was found there, never opened for bob, and alice's password signed in
// as bob.
func TestVerifierCacheKeepsSubject(t *testing.T) {
	dir, dom := aliceDirectory(t)
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	applyDirectory(t, dir,
		&events.PasswordSet{User: alice, Verifiers: []byte("alice-sealed")},
		&events.UserEnabled{User: bob, Home: "home1"},
		&events.PasswordSet{User: bob, Verifiers: []byte("alice-sealed")},
	)
	c, err := NewCredentials(CredentialsConfig{Profile: ProfileBasic, Keyring: subjectKeyring{"k"}, Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	try := func(user string) Outcome {
		h := rvp.Header{}
		h.Add(rvp.HdrAuthorization, "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":correct horse")))
		return c.Authenticate(&ConnState{}, AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/" + user, Header: h},
			Client: "192.0.2.1", Domain: dom, Required: true})
	}
	if out := try("alice"); out.Verdict != Authenticated {
		t.Fatalf("alice: %+v", out)
	}
	if out := try("bob"); out.Verdict == Authenticated {
		t.Errorf("alice's password, with her sealed verifiers copied onto bob: %+v", out)
	}
}

// TestLockoutFloodForgetsNoGuessedAccount: a flood of failed sign-ins
// under made-up names, each failing once, does not make the gateway
// forget an account guessed at many times. When the lockout's maps were
// full, every entry not waiting at that moment was forgotten at once:
// one guessed past its free failures (4×Free for the account, from
// addresses it never signed in from) whose last wait had run out went
// with the flood's, its count started again, and another 4×Free guesses
// were checked at full speed. 100,000 made-up names from a thousand IPv6
// /64s (a tunnel broker's free /48 holds 65,536; each /64 within its own
// 10×Free) bought that, again and again: some 40 guesses a flood instead
// of one every few minutes, NTLM as librvp signs in.
func TestLockoutFloodForgetsNoGuessedAccount(t *testing.T) {
	// Her last wait run out, or run out and an hour quiet (entries quiet
	// for an hour went first, whatever their count).
	for _, quiet := range []time.Duration{2 * time.Second, 61 * time.Minute} {
		t.Run(quiet.String(), func(t *testing.T) { lockoutFlood(t, quiet) })
	}
}

func lockoutFlood(t *testing.T, quiet time.Duration) {
	dir, dom := aliceDirectory(t)
	now := time.Unix(1_000_000, 0)
	c, err := NewCredentials(CredentialsConfig{Keyring: aliceKeyring{"k"}, Directory: dir, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ar := AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice"}, Domain: dom, Required: true}
	guess := func(client, user string) Outcome {
		ar.Client = client
		return ntlmSignIn(t, c, &ConnState{}, ar, user, none, ntlmv1("guess"))
	}
	// alice guessed at from a new /64 each time: the account's free
	// failures, then one that makes her wait.
	nets := 0
	fresh := func() string { nets++; return fmt.Sprintf("2001:db8:a:%x::1", nets) }
	free := 4 * DefaultLockoutFree
	for i := range free {
		if out := guess(fresh(), "alice"); out.Verdict != Refused {
			t.Fatalf("guess %d: %+v", i+1, out)
		}
	}
	if out := guess(fresh(), "alice"); out.Verdict != Throttled {
		t.Fatalf("guess %d at alice, past the account's %d free failures: %+v", free+1, free, out)
	}
	// Her wait runs out; a flood of names that fail once each, each /64
	// within its own free failures.
	now = now.Add(quiet)
	names := 0
	for n := range maxLockoutEntries/(10*DefaultLockoutFree) + 1 {
		client := fmt.Sprintf("2001:db8:f:%x::1", n)
		for range 10 * DefaultLockoutFree {
			names++
			if out := guess(client, fmt.Sprint("nobody", names)); out.Verdict != Refused {
				t.Fatalf("made-up name %d from %s: %+v", names, client, out)
			}
		}
	}
	// The guesses at alice go on from new /64s, all at once: the first
	// is checked (her wait ran out) and makes her wait again; none is
	// answered as one within the free failures.
	refused := 0
	for range free {
		if guess(fresh(), "alice").Verdict == Refused {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("after a flood of %d made-up names, %d of %d guesses at alice sent at once were checked and refused without a wait, as if her %d failures had never been",
			names, refused, free, free+1)
	}
}
