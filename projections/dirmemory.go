package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/rvp-im/rvpd/events"
)

// dirMemory is the directory projection's records in memory, decoded, by
// key: kind → the rest of the key (its tokens, 0-separated) → value
// (Domain, HomeServer, Router, UserRecord, Administrator, Settings, a
// host's domain or home server name, sealed verifiers). It holds what
// Pebble holds under the same keys.
type dirMemory struct {
	mu    sync.RWMutex
	kinds map[string]map[string]any
	// homed indexes the enabled users by home server: home → the rest of
	// their "user" keys. A home server's deletion asks whether it hosts
	// one, up to a hundred times while an import appends: reading every
	// user of every domain for it took 270 ms an attempt at 100,000
	// users.
	homed map[string]map[string]struct{}
	// names indexes the names of our hosts (hostName: no port, lower
	// case) by the records that have them: an IM domain's (its own, its
	// IM host's, e-mail domains' and hosts'), a home server's, a
	// router's. OurHost, asked of every request another organisation's
	// principal makes, looks a name up by each of its labels instead of
	// reading every domain, home server and router.
	names map[string]map[memKey]struct{}
}

// memKey is a record's key: its kind and the rest.
type memKey struct{ kind, rest string }

// memEntry is one key's new value; a nil value deletes it.
type memEntry struct {
	kind, rest string
	value      any
}

// decodeEntry decodes the value of one directory key as the memory keeps
// it; a nil v (a deletion) gives an entry without value.
func (d *Directory) decodeEntry(k, v []byte) (memEntry, error) {
	tail, ok := bytes.CutPrefix(k, d.prefix)
	if !ok {
		return memEntry{}, fmt.Errorf("key %q is not the directory's", k)
	}
	kind, rest, _ := strings.Cut(string(tail), "\x00")
	e := memEntry{kind: kind, rest: rest}
	if v == nil {
		return e, nil
	}
	var err error
	switch kind {
	case "pos", "format":
		e.kind = "" // kept by d.pos; the layout's version
	case "host", "homehost":
		e.value = string(v)
	case "pw":
		e.value = bytes.Clone(v)
	case "dom":
		e.value, err = decodeAs[Domain](v)
	case "home":
		e.value, err = decodeAs[HomeServer](v)
	case "router":
		e.value, err = decodeAs[Router](v)
	case "user":
		e.value, err = decodeAs[UserRecord](v)
	case "admin":
		e.value, err = decodeAs[Administrator](v)
	case "set":
		e.value, err = decodeAs[Settings](v)
	default:
		return e, fmt.Errorf("directory key %q: unknown kind %q", k, kind)
	}
	if err != nil {
		return e, fmt.Errorf("decode %q: %w", k, err)
	}
	return e, nil
}

func decodeAs[T any](v []byte) (T, error) {
	var x T
	err := json.Unmarshal(v, &x)
	return x, err
}

func (m *dirMemory) set(e memEntry) {
	if e.kind == "" {
		return
	}
	byRest := m.kinds[e.kind]
	switch e.kind {
	case "dom", "home", "router":
		if was, ok := byRest[e.rest]; ok {
			m.indexNames(e.kind, e.rest, was, false)
		}
		if e.value != nil {
			m.indexNames(e.kind, e.rest, e.value, true)
		}
	}
	if e.kind == "user" {
		if was, ok := byRest[e.rest].(UserRecord); ok && was.Enabled {
			delete(m.homed[was.Home], e.rest)
			if len(m.homed[was.Home]) == 0 {
				delete(m.homed, was.Home)
			}
		}
		if u, ok := e.value.(UserRecord); ok && u.Enabled {
			if m.homed == nil {
				m.homed = map[string]map[string]struct{}{}
			}
			if m.homed[u.Home] == nil {
				m.homed[u.Home] = map[string]struct{}{}
			}
			m.homed[u.Home][e.rest] = struct{}{}
		}
	}
	if e.value == nil {
		delete(byRest, e.rest)
		return
	}
	if byRest == nil {
		byRest = map[string]any{}
		m.kinds[e.kind] = byRest
	}
	byRest[e.rest] = e.value
}

// reset forgets every record.
func (m *dirMemory) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kinds = map[string]map[string]any{}
	m.homed = nil
	m.names = nil
}

// apply applies a committed batch's entries, in order.
func (m *dirMemory) apply(es []memEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range es {
		m.set(e)
	}
}

// memGet returns the value of kind at the rest made of parts, each an
// events.Token, 0-separated, as the directory's keys are. The rest is
// built on the caller's stack: each request looks up its users, domains
// and hosts, and making their tokens and the rest as strings was 4% of
// the objects rvpd allocated signing users in with buddy lists.
func memGet[T any](m *dirMemory, kind string, parts ...string) (T, bool) {
	var buf [128]byte
	rest := buf[:0]
	for i, p := range parts {
		if i > 0 {
			rest = append(rest, 0)
		}
		rest = events.AppendToken(rest, p)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.kinds[kind][string(rest)].(T)
	return v, ok
}

// memRecord returns a copy of the record of kind at the rest made of
// parts (memGet), or nil.
func memRecord[T any](m *dirMemory, kind string, parts ...string) *T {
	v, ok := memGet[T](m, kind, parts...)
	if !ok {
		return nil
	}
	return &v
}

// memList returns the records of kind whose rest starts with prefix, in
// key order (Pebble's).
func memList[T any](m *dirMemory, kind, prefix string) []T {
	m.mu.RLock()
	keys := make([]string, 0, len(m.kinds[kind]))
	for k := range m.kinds[kind] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []T
	for _, k := range keys {
		out = append(out, m.kinds[kind][k].(T))
	}
	m.mu.RUnlock()
	return out
}

// homedUser returns the enabled user homed on home whose key comes first
// (a refusal names the same one each time), or nil.
func (m *dirMemory) homedUser(home string) *UserRecord {
	m.mu.RLock()
	defer m.mu.RUnlock()
	first, found := "", false
	for rest := range m.homed[home] {
		if !found || rest < first {
			first, found = rest, true
		}
	}
	if !found {
		return nil
	}
	u := m.kinds["user"][first].(UserRecord)
	return &u
}
