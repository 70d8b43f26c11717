package gateway

import (
	"encoding/base64"
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
