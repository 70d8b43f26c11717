package events

import (
	"maps"
	"slices"
	"testing"
)

// TestHeader: Header holds the pairs given, each value its own; a value
// added to one key later (as nats.Header.Add appends) or set changes no
// other.
func TestHeader(t *testing.T) {
	h := Header(HeaderType, "subscription.created.v1", HeaderRequest, "r1", HeaderFactID, "f1", "Odd")
	want := map[string][]string{HeaderType: {"subscription.created.v1"}, HeaderRequest: {"r1"}, HeaderFactID: {"f1"}}
	if !maps.EqualFunc(h, want, slices.Equal) {
		t.Fatalf("%v, want %v", h, want)
	}
	h[HeaderType] = append(h[HeaderType], "second")
	h[HeaderMsgID] = []string{"m1"}
	want[HeaderType] = []string{"subscription.created.v1", "second"}
	want[HeaderMsgID] = []string{"m1"}
	if !maps.EqualFunc(h, want, slices.Equal) {
		t.Errorf("after an append and a set: %v, want %v", h, want)
	}
	var made map[string][]string
	n := testing.AllocsPerRun(20, func() { made = Header(HeaderType, "t", HeaderRequest, "r", HeaderFactID, "f") })
	set := testing.AllocsPerRun(20, func() {
		made = map[string][]string{}
		for _, kv := range [][2]string{{HeaderType, "t"}, {HeaderRequest, "r"}, {HeaderFactID, "f"}} {
			made[kv[0]] = []string{kv[1]} // what nats.Header.Set does
		}
	})
	if n > 3 || n >= set {
		t.Errorf("%v allocations, want 3 (the map, its table, the values), fewer than a slice for each value's %v", n, set)
	}
}
