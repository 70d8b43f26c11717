package directory

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestKeyring: verifiers sealed for one subject open for it only, with
// the key they were sealed with only; an administrator's verifier checks
// its password.
func TestKeyring(t *testing.T) {
	key, err := ParseKey(strings.Repeat("ab", KeySize))
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	u := events.NewUser("example.test", "alice")
	v := rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", "secret-pw-1")
	sealed, err := k.SealVerifiers(v, events.UserSubject(u))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, v.NT) {
		t.Fatal("the NT hash is in the sealed bytes in clear")
	}
	got, err := k.OpenVerifiers(sealed, events.UserSubject(u))
	if err != nil || !bytes.Equal(got.NT, rvp.NTHash("secret-pw-1")) || got.HA1[`EXAMPLE\alice`] != v.HA1[`EXAMPLE\alice`] {
		t.Fatalf("opened %+v, %v", got, err)
	}
	if _, err := k.OpenVerifiers(sealed, events.UserSubject(events.NewUser("example.test", "bob"))); err == nil {
		t.Error("verifiers sealed for alice opened for bob")
	}
	other, _ := NewKeyring(bytes.Repeat([]byte{1}, KeySize))
	if _, err := other.OpenVerifiers(sealed, events.UserSubject(u)); err == nil {
		t.Error("verifiers opened with another cluster key")
	}

	av, err := NewAdminVerifier("admin-pw-1")
	if err != nil {
		t.Fatal(err)
	}
	sealedAdmin, err := k.SealAdminVerifier(av, "ops")
	if err != nil {
		t.Fatal(err)
	}
	opened, err := k.OpenAdminVerifier(sealedAdmin, "ops")
	if err != nil || !opened.Check("admin-pw-1") || opened.Check("admin-pw-2") {
		t.Errorf("administrator verifier: %+v, %v", opened, err)
	}
	if _, err := k.OpenAdminVerifier(sealedAdmin, "eve"); err == nil {
		t.Error("an administrator verifier opened for another name")
	}
}
