package gateway

import (
	"encoding/base64"
	"testing"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// aliceKeyring opens every sealed verifier as alice's, password
// "correct horse".
type aliceKeyring struct{ macKeyring }

func (aliceKeyring) OpenVerifiers([]byte, string) (*rvp.Verifiers, error) {
	v := rvp.NewVerifiers(events.NewUser("example.test", "alice"), "EXAMPLE", "", "example.test", "correct horse")
	return &v, nil
}

// FuzzAuthorization feeds two Authorization values, one request after the
// other on one connection (an NTLM handshake's two steps, or anything
// else), to the credential checker: its dispatch on the scheme, NTLM's
// negotiate and authenticate messages bare or inside SPNEGO, Digest's
// parameters and Basic's credentials. It must not panic, and every
// outcome is one the renderer can answer: a challenge to a 401, a wait
// to a throttled 403, and an identity only for alice.
func FuzzAuthorization(f *testing.F) {
	type1 := "TlRMTVNTUAABAAAABwIAAAcABwAxAAAACQAJACgAAAAIkwBQDwAAADEyNy4wLjAuMUVYQU1QTEU=" // librvp's
	for _, s := range [][2]string{
		{"NTLM " + type1, "NTLM " + base64.StdEncoding.EncodeToString(append([]byte(ntlmSignature+"\x03\x00\x00\x00\x18\x00\x18\x00\x40\x00\x00\x00"), make([]byte, 80)...))},
		{"Negotiate " + type1, "Negotiate " + base64.StdEncoding.EncodeToString([]byte("\xa1\x81\x80"+ntlmSignature+"\x03\x00\x00\x00"))},
		{"Negotiate YIIBHAYGKwYBBQUCoIIBEDCCAQygGjAYBgorBgEEAYI3AgIeBgorBgEEAYI3AgIKooHt", ""},
		{`Digest username="EXAMPLE\alice", realm="example.test", qop="auth", algorithm="MD5", uri="/instmsg/aliases/alice", nonce="x", nc=00000001, cnonce="c", response="00"`, ""},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong")), "Basic !!"},
		{"", "NTLM"},
	} {
		f.Add(s[0], s[1])
	}
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		f.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	var msgs []projections.Msg
	for i, ev := range []events.Event{
		&events.DomainCreated{Domain: "example.test", IMHost: "im.example.test", NTDomain: "EXAMPLE"},
		&events.UserEnabled{User: alice, Home: "home1"},
		&events.PasswordSet{User: alice, Verifiers: []byte("sealed")},
	} {
		data, err := events.Encode(ev)
		if err != nil {
			f.Fatal(err)
		}
		msgs = append(msgs, projections.Msg{Seq: uint64(i + 1), Type: ev.Type(), Data: data})
	}
	if err := dir.ApplyBatch(msgs); err != nil {
		f.Fatal(err)
	}
	dom, err := dir.Domain("example.test")
	if err != nil || dom == nil {
		f.Fatalf("domain: %v %v", dom, err)
	}
	creds, err := NewCredentials(CredentialsConfig{Profile: ProfileExchange, AllowBasic: true, Keyring: aliceKeyring{"k"}, Directory: dir})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, second string) {
		st := &ConnState{}
		for _, v := range []string{first, second} {
			h := rvp.Header{}
			if v != "" {
				h.Add(rvp.HdrAuthorization, v)
			}
			ar := AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: h},
				Client: "192.0.2.1", Domain: dom, Required: true}
			out := creds.Authenticate(st, ar)
			switch out.Verdict {
			case Authenticated:
				if out.Identity.User != alice || out.Identity.Scheme == "" {
					t.Fatalf("authenticated as %+v", out.Identity)
				}
			case Challenged, Refused:
				if len(out.Challenge) == 0 {
					t.Fatalf("verdict %d without a challenge: %+v", out.Verdict, out)
				}
			case Throttled:
				if out.RetryAfter <= 0 {
					t.Fatalf("throttled without a wait: %+v", out)
				}
			default:
				t.Fatalf("verdict %d", out.Verdict)
			}
			respond(ar.Req, nil, outcomeRefusal(out)) // renders
		}
	})
}
