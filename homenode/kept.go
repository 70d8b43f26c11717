package homenode

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// A handoff carries a user's state to her new home server, and no other
// message holds it. The requests stream keeps what it holds for
// -requests.max-age (1 h by default), for requests no gateway waits for
// any longer by then; a handoff its new home server's node did not read
// in that time (not started yet, down) was dropped, and her watchers'
// subscriptions and her ACL with it. A handoff is published marked to be
// kept past the stream's max age (Nats-TTL: never, nats-server 2.11 and
// later, on a stream that allows per-message TTLs: rvpd creates its
// requests streams so), and deleted once it is done with (doneWith).

// keptTTL marks a message to be kept past its stream's max age.
const keptTTL = "never"

// errTTLDisabled is JetStream's answer to a per-message TTL on a stream
// that does not allow them (JSMessageTTLDisabledErr).
const errTTLDisabled jetstream.ErrorCode = 10166

// requestCopy returns a new message on subject with m's headers (but
// JetStream's own, which the publish sets anew, and the mark to keep it,
// which publishKept sets) and data.
func requestCopy(subject string, m jetstream.Msg) *nats.Msg {
	msg := nats.NewMsg(subject)
	for k, v := range m.Headers() {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	msg.Data = m.Data()
	return msg
}

// publishKept publishes msg, a request, under message id id; a handoff
// marked to be kept past its stream's max age. A stream that does not
// allow it (one created by an older version, or by hand) takes it
// unmarked, kept as long as any request: said once.
func (n *Node) publishKept(ctx context.Context, msg *nats.Msg, id string) error {
	kept := msg.Header.Get(events.HeaderType) == events.TypeHandoff
	if kept {
		msg.Header.Set(jetstream.MsgTTLHeader, keptTTL)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	var api *jetstream.APIError
	if kept && errors.As(err, &api) && api.ErrorCode == errTTLDisabled {
		if n.ttlRefused.CompareAndSwap(false, true) {
			n.log.Warn("a requests stream does not allow per-message TTLs: handoffs to it are kept only as long as any request (its max age, -requests.max-age), and one its home server's node does not read by then is lost with the state it carries; allow them: rvpctl streams upgrade (docs/operations.md, moving users)",
				"subject", msg.Subject)
		}
		msg.Header.Del(jetstream.MsgTTLHeader)
		_, err = n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	}
	return err
}

// doneWith acknowledges m, a request decided, forwarded or appended
// anew; one kept past its stream's max age (a handoff) is deleted from
// the stream first, which would otherwise keep it for ever.
func (n *Node) doneWith(m jetstream.Msg) error {
	if m.Headers().Get(jetstream.MsgTTLHeader) == keptTTL {
		if err := n.deleteKept(m); err != nil {
			n.log.Warn("a handoff done with is left in its requests stream (kept past the stream's max age): delete it by hand if many are", "subject", m.Subject(), "err", err)
		}
	}
	return m.Ack()
}

func (n *Node) deleteKept(m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.cfg.JetStream.Stream(ctx, md.Stream)
	if err != nil {
		return err
	}
	return st.DeleteMsg(ctx, md.Sequence.Stream)
}
