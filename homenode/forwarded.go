package homenode

// forwardsKept bounds the forwards a node remembers (Node.forwards): a
// request is delivered again within seconds (AckWait) of its forward,
// and one past its sender's deadline is not decided anyway.
const forwardsKept = 4096

// forwardRecord is where a request forwarded from here went: its home
// server and the move it went under.
type forwardRecord struct {
	to   string
	move uint64
}

// forwards remembers the requests forwarded from here lately, by id,
// the oldest forgotten past forwardsKept. Owned by Run's goroutine.
type forwards struct {
	byID  map[string]forwardRecord
	order []string // ids, oldest first
}

// add records that request id was forwarded to home server to under move.
func (f *forwards) add(id, to string, move uint64) {
	if f.byID == nil {
		f.byID = map[string]forwardRecord{}
	}
	if _, ok := f.byID[id]; !ok {
		f.order = append(f.order, id)
	}
	f.byID[id] = forwardRecord{to: to, move: move}
	for len(f.order) > forwardsKept {
		delete(f.byID, f.order[0])
		f.order = f.order[1:]
	}
}

// get returns where request id was forwarded, if it was lately.
func (f *forwards) get(id string) (forwardRecord, bool) {
	fw, ok := f.byID[id]
	return fw, ok
}
