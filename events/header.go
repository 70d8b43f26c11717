package events

import "github.com/nats-io/nats.go"

// Header returns a NATS message header holding the key, value pairs kv
// (keys in canonical form, as the Header constants are; an odd last key
// is dropped), with room for the headers JetStream's publish options
// add. Its values share one slice: nats.Header.Set made a slice for each
// value, a quarter of the objects the home node made for each fact it
// published.
func Header(kv ...string) nats.Header {
	h := make(nats.Header, len(kv)/2+2)
	vals := make([]string, len(kv)/2)
	for i := range vals {
		vals[i] = kv[2*i+1]
		h[kv[2*i]] = vals[i : i+1 : i+1]
	}
	return h
}
