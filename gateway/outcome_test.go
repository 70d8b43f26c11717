package gateway

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

func testCredentials(t *testing.T, profile string) *Credentials {
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
	c, err := NewCredentials(CredentialsConfig{Profile: profile, Keyring: macKeyring("k"), Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func authRequest(authorization string) AuthRequest {
	h := rvp.Header{}
	if authorization != "" {
		h.Add(rvp.HdrAuthorization, authorization)
	}
	return AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: h}, Client: "127.0.0.1", Required: true}
}

// TestOutcomes: authentication answers with an outcome, and the gateway's
// one renderer turns it into the response: Exchange's three challenges in
// Exchange's order; a bare NTLM message inside Negotiate whose handshake
// never began gets the profile's challenge (it used to panic slicing
// "NTLM" as if it were "NegotiateRaw ...").
func TestOutcomes(t *testing.T) {
	c := testCredentials(t, ProfileExchange)
	out := c.Authenticate(&ConnState{}, authRequest(""))
	if out.Verdict != Challenged || len(out.Challenge) != 3 || out.Challenge[0] != "Negotiate" || out.Challenge[1] != "NTLM" ||
		!strings.HasPrefix(out.Challenge[2], "Digest ") {
		t.Fatalf("no credentials: %+v", out)
	}
	r := respond(nil, nil, outcomeRefusal(out))
	var got []string
	for _, f := range r.Header {
		if f.Name == rvp.HdrWWWAuthenticate {
			got = append(got, f.Value)
		}
	}
	if r.Status != rvp.StatusUnauthorized || !slices.Equal(got, out.Challenge) || !strings.Contains(string(r.Body), "authentication required") {
		t.Errorf("rendered challenge: %d %v %q", r.Status, got, r.Body)
	}

	type3 := append([]byte(ntlmSignature), 3, 0, 0, 0)
	out = c.Authenticate(&ConnState{}, authRequest("Negotiate "+base64.StdEncoding.EncodeToString(type3)))
	if out.Verdict != Challenged || len(out.Challenge) != 3 || out.Challenge[0] != "Negotiate" {
		t.Errorf("raw NTLM type 3 in Negotiate without a handshake: %+v", out)
	}

	// A type 1 inside Negotiate is answered with the type 2 inside
	// Negotiate, the bare form as the bare form.
	type1 := append([]byte(ntlmSignature), 1, 0, 0, 0, 0x01, 0x02, 0, 0)
	out = c.Authenticate(&ConnState{}, authRequest("Negotiate "+base64.StdEncoding.EncodeToString(type1)))
	if out.Verdict != Challenged || len(out.Challenge) != 1 || !strings.HasPrefix(out.Challenge[0], "Negotiate TlRMTVNTUA") {
		t.Errorf("raw NTLM type 1 in Negotiate: %+v", out)
	}

	// Throttled after too many failures: 403 with Retry-After, said why.
	c = testCredentials(t, ProfileBasic)
	bad := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong"))
	for range DefaultLockoutFree + 1 {
		if out = c.Authenticate(&ConnState{}, authRequest(bad)); out.Verdict != Refused {
			break
		}
	}
	if out.Verdict != Throttled || out.RetryAfter <= 0 {
		t.Fatalf("after %d failures: %+v", DefaultLockoutFree+1, out)
	}
	if r := respond(nil, nil, outcomeRefusal(out)); r.Status != rvp.StatusForbidden || !strings.Contains(string(r.Body), "too many failed sign-ins") ||
		r.Get("Retry-After") != "1" {
		t.Errorf("rendered throttle: %d %v %q", r.Status, r.Header, r.Body)
	}
}
