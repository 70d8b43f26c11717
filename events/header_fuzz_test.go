package events

import "testing"

// FuzzHeaderValues: the values of HeaderForward and HeaderOwner, read
// from a fact's headers (a takeover's reads, a recovery's), never panic,
// and what they read renders back to a value that reads the same; what
// they render reads back as it was.
func FuzzHeaderValues(f *testing.F) {
	for _, s := range []string{"12 home2", "8 node-b", "0 ", " x", "x", "", "18446744073709551615 a b", "-1 x", "+1 x", "1  x"} {
		f.Add(s, uint64(12), "home2")
	}
	f.Fuzz(func(t *testing.T, v string, n uint64, name string) {
		if home, move, ok := ParseForwardHeader(v); ok {
			if h2, m2, ok2 := ParseForwardHeader(ForwardHeader(home, move)); !ok2 || h2 != home || m2 != move {
				t.Errorf("forward %q read as (%q, %d), rendered and read again as (%q, %d, %v)", v, home, move, h2, m2, ok2)
			}
		}
		if term, holder, ok := ParseOwnerHeader(v); ok {
			if t2, h2, ok2 := ParseOwnerHeader(OwnerHeader(term, holder)); !ok2 || t2 != term || h2 != holder {
				t.Errorf("owner %q read as (%d, %q), rendered and read again as (%d, %q, %v)", v, term, holder, t2, h2, ok2)
			}
		}
		if name != "" {
			if home, move, ok := ParseForwardHeader(ForwardHeader(name, n)); !ok || home != name || move != n {
				t.Errorf("forward (%q, %d) rendered and read as (%q, %d, %v)", name, n, home, move, ok)
			}
		}
		if term, holder, ok := ParseOwnerHeader(OwnerHeader(n, name)); !ok || term != n || holder != name {
			t.Errorf("owner (%d, %q) rendered and read as (%d, %q, %v)", n, name, term, holder, ok)
		}
	})
}
