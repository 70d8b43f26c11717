package homenode

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Policy
		want   []string // in the error; none: valid
	}{
		{name: "defaults", policy: Policy{}},
		{name: "short test leases", policy: Policy{MinLease: time.Second, MinLifetime: time.Second, DeliveryTimeout: 2 * time.Second}},
		{name: "lifetimes crossed", policy: Policy{MinLifetime: 2 * time.Hour, MaxLifetime: time.Hour}, want: []string{"subscription lifetimes"}},
		{name: "leases crossed and too short", policy: Policy{MinLease: 2 * time.Minute, MaxLease: time.Minute}, want: []string{"presence leases: the minimum", "Net::RVP"}},
		{name: "delivery outlasts the client", policy: Policy{DeliveryTimeout: time.Hour}, want: []string{"delivery timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", tc.policy)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestNewRefusesBadPolicy: a node is not made with a policy Validate
// refuses, whoever builds it (rvpd checks its flags the same way first).
func TestNewRefusesBadPolicy(t *testing.T) {
	_, err := New(Config{Policy: Policy{MinLease: 2 * time.Minute, MaxLease: time.Minute}})
	if err == nil || !strings.Contains(err.Error(), "policy: presence leases") {
		t.Fatalf("New with crossed leases: %v", err)
	}
}
