package events

// Header returns a NATS message header (convert it: nats.Header(h))
// holding the key, value pairs kv (an odd last key is dropped), with room
// for the headers JetStream's publish options add. Its values share one
// slice, each capped at its own element: nats.Header.Set made a slice for
// each value, a quarter of the objects the home node made for each fact
// it published.
func Header(kv ...string) map[string][]string {
	h := make(map[string][]string, len(kv)/2+2)
	vals := make([]string, len(kv)/2)
	for i := range vals {
		vals[i] = kv[2*i+1]
		h[kv[2*i]] = vals[i : i+1 : i+1]
	}
	return h
}
