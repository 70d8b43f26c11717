package directory

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestOperations: every operation a domain administrator may do, and the
// IM domain each is judged in, read from its typed arguments.
func TestOperations(t *testing.T) {
	ops := operations()
	var mayDomain []string
	for op, o := range ops {
		if o.domainAdmin {
			mayDomain = append(mayDomain, string(op))
		}
	}
	slices.Sort(mayDomain)
	want := []string{"domain.hosts", "domain.list", "domain.show", "home.list", "password.set", "user.disable", "user.enable", "user.import", "user.list", "user.move", "user.show", "whoami"}
	if !slices.Equal(mayDomain, want) {
		t.Errorf("domain administrators may do %v, want %v", mayDomain, want)
	}

	alice := events.NewUser("example.test", "alice")
	for _, tt := range []struct {
		op   Op
		args any
		want string
	}{
		{OpUserEnable, UserSpec{User: alice, Home: "home1"}, "example.test"},
		{OpUserDisable, UserRef{User: alice}, "example.test"},
		{OpUserMove, UserMoveSpec{User: alice, Home: "home2"}, "example.test"},
		{OpUserShow, UserRef{User: alice}, "example.test"},
		{OpPasswordSet, PasswordSpec{User: alice}, "example.test"},
		{OpUserList, DomainRef{Domain: "acme.test"}, "acme.test"},
		{OpUserList, nil, ""},
		{OpDomainShow, DomainRef{Domain: "acme.test"}, "acme.test"},
		{OpDomainHosts, DomainHostsSpec{Domain: "Acme.Test.", AddHosts: []string{"gw.acme.test"}}, "acme.test"},
		{OpWhoami, nil, ""},
	} {
		raw, _ := json.Marshal(tt.args)
		domain, run, err := ops[tt.op].prepare(raw)
		if err != nil || run == nil || domain != tt.want {
			t.Errorf("%s %s: domain %q, %v; want %q", tt.op, raw, domain, err, tt.want)
		}
	}
	if _, _, err := ops[OpUserEnable].prepare(json.RawMessage(`{"user": 7}`)); err == nil || !strings.Contains(err.Error(), "malformed arguments") {
		t.Errorf("malformed arguments: %v", err)
	}

	ops1 := &projections.Administrator{Name: "ops", Role: events.RoleDomain, Domains: []string{"Acme.test"}}
	if err := authorize(ops1, OpDomainCreate, ops[OpDomainCreate].domainAdmin); err == nil || !strings.Contains(err.Error(), "may not domain.create") {
		t.Errorf("a domain administrator creating a domain: %v", err)
	}
	if err := authorizeDomain(ops1, OpUserEnable, "acme.test"); err != nil {
		t.Errorf("a domain administrator in its own domain: %v", err)
	}
	if err := authorizeDomain(ops1, OpUserEnable, "example.test"); err == nil || !strings.Contains(err.Error(), "may not user.enable in IM domain example.test") {
		t.Errorf("a domain administrator in another domain: %v", err)
	}
	org := &projections.Administrator{Name: "admin", Role: events.RoleOrganization}
	if err := authorize(org, "no.such", false); err != nil {
		t.Errorf("an organisation administrator: %v", err)
	}
}

// TestServiceAnswersBeforeClientGivesUp: the service's bound on a request
// ends before the client's bound on its wait for the answer, with room
// for the transit. They were both 30 s, the client's started first, and
// an answer sent at the service's bound (a change recorded whose
// directory projection lags, which says so: look again, do not make it
// again) reached no one.
func TestServiceAnswersBeforeClientGivesUp(t *testing.T) {
	if margin := requestTimeout - handleTimeout; margin < 2*time.Second {
		t.Errorf("the service gives a request %v, the client waits %v for its answer: %v for the challenge and both transits", handleTimeout, requestTimeout, margin)
	}
}
