package events

import "testing"

// FuzzFactSubject: the fact subject read back from a stored message
// (rebuilds and migrations group facts by it) names the home server and
// user it was written for, and a subject it accepts is the one written
// for what it returns.
func FuzzFactSubject(f *testing.F) {
	f.Add("home1", "example.test", "alice", FactSubject("home1", NewUser("example.test", "alice")))
	f.Add("", "a.b", "*>", "rvp.evt.x.y.=41")
	f.Fuzz(func(t *testing.T, home, domain, alias, subj string) {
		u := User{Domain: domain, Alias: alias}
		h, back, err := ParseFactSubject(FactSubject(home, u))
		if err != nil || h != home || back != u {
			t.Fatalf("FactSubject(%q, %+v) = %q parses to %q, %+v, %v", home, u, FactSubject(home, u), h, back, err)
		}
		if h, u, err := ParseFactSubject(subj); err == nil && FactSubject(h, u) != subj {
			t.Fatalf("ParseFactSubject(%q) = %q, %+v, whose subject is %q", subj, h, u, FactSubject(h, u))
		}
	})
}
