package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// hdrNoteFrom names, on a note, the process that sent it: a random id of
// its own (names such as a gateway's can repeat across sites).
const hdrNoteFrom = "Rvp-Note-From"

// ShareNotes shares notes of type T, as JSON on core NATS subject, with
// every other process on nc's cluster and its sites (over their leaf
// connections): take is called with each of the others' notes that valid
// accepts; this process's own are skipped, and one that cannot be read
// is logged, once a minute at most (a broken peer sends many). tell
// publishes one of this process's notes; stop ends the sharing. Notes are
// not stored: one lost on the way (a link down) is lost. The gateways'
// sign-in throttling (Credentials.ShareLockout) and the operator
// console's share theirs so.
func ShareNotes[T any](nc *nats.Conn, subject string, log *slog.Logger, now func() time.Time, valid func(T) bool, take func(T)) (tell func(T) error, stop func(), err error) {
	var b [8]byte
	rand.Read(b[:])
	self := hex.EncodeToString(b[:])
	var warned atomic.Int64 // when a bad note was last logged, Unix seconds
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if m.Header.Get(hdrNoteFrom) == self {
			return
		}
		var n T
		err := json.Unmarshal(m.Data, &n)
		if err == nil && valid(n) {
			take(n)
			return
		}
		if t := now().Unix(); warned.Load() < t-60 {
			warned.Store(t)
			log.Warn("note from another process not understood; dropped (once a minute at most is said)", "subject", subject, "err", err)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("share notes on %s: %w", subject, err)
	}
	tell = func(n T) error {
		msg := nats.NewMsg(subject)
		msg.Header.Set(hdrNoteFrom, self)
		var err error
		if msg.Data, err = json.Marshal(n); err != nil {
			return err
		}
		return nc.PublishMsg(msg)
	}
	return tell, func() { sub.Unsubscribe() }, nil
}
