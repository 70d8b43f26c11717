package events

import (
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestHeader: Header holds what Set would have set, and a value added or
// set later changes no other.
func TestHeader(t *testing.T) {
	h := Header(HeaderType, "subscription.created.v1", HeaderRequest, "r1", HeaderFactID, "f1")
	want := nats.Header{}
	want.Set(HeaderType, "subscription.created.v1")
	want.Set(HeaderRequest, "r1")
	want.Set(HeaderFactID, "f1")
	if len(h) != len(want) {
		t.Fatalf("%v, want %v", h, want)
	}
	for k, v := range want {
		if !slices.Equal(h[k], v) || h.Get(k) != v[0] {
			t.Errorf("%s: %q, want %q", k, h[k], v)
		}
	}
	h.Add(HeaderType, "second")
	h.Set(HeaderMsgID, "m1")
	if got := h.Values(HeaderType); !slices.Equal(got, []string{"subscription.created.v1", "second"}) {
		t.Errorf("%s after Add: %q", HeaderType, got)
	}
	if h.Get(HeaderRequest) != "r1" || h.Get(HeaderFactID) != "f1" || h.Get(HeaderMsgID) != "m1" {
		t.Errorf("the others after Add and Set: %v", h)
	}
	var made nats.Header
	n := testing.AllocsPerRun(20, func() { made = Header(HeaderType, "t", HeaderRequest, "r", HeaderFactID, "f") })
	set := testing.AllocsPerRun(20, func() {
		made = make(nats.Header)
		made.Set(HeaderType, "t")
		made.Set(HeaderRequest, "r")
		made.Set(HeaderFactID, "f")
	})
	if n > 3 || n >= set {
		t.Errorf("%v allocations, want 3 (the map, its table, the values), fewer than Set's %v", n, set)
	}
}
