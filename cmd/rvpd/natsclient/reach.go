package natsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
)

// ReachWatch moves a long-lived connection off a NATS server cut off from
// its cluster: a network partition that leaves the server in the
// minority, its routes down. Such a server answers pings (Liveness sees
// nothing) and takes every request, but none that needs JetStream is
// answered there: a gateway on it answered every request 503 or 504, and
// a home node on it lost its lease, for as long as the partition lasted.
//
// Every Every the connection asks JetStream for its account's
// information ($JS.API.INFO, which the meta leader answers). After Misses
// unanswered in a row, the other servers the connection knows are asked
// the same, each through a connection of its own (Dial); when one
// answers, the connection moves (ForceReconnect: to the next server of
// its list, and again at a later round when that one is cut off too).
// When none answers, the whole cluster is without JetStream for a while
// (no quorum anywhere, a meta leader being elected) and moving would mend
// nothing: the connection stays. A server cut off that led the meta
// group goes on answering as its leader until it finds it has lost its
// quorum (10 to 20 s in nats-server 2.15): a connection on it moves only
// then.
type ReachWatch struct {
	Conn *nats.Conn
	// Dial connects to one server (its URL, as Conn's list has it) with
	// Conn's credentials, not reconnecting: the second opinion.
	Dial func(url string) (*nats.Conn, error)
	// Every is how often JetStream is asked (PingInterval when 0), and the
	// wait for each answer.
	Every time.Duration
	// Misses is how many unanswered in a row make the server suspect (3
	// when 0): longer than a meta leader's election in a healthy cluster.
	Misses int
	Logger *slog.Logger
}

// Run watches until stop is closed or the connection is closed.
func (w ReachWatch) Run(stop <-chan struct{}) {
	if w.Every <= 0 {
		w.Every = PingInterval
	}
	if w.Misses <= 0 {
		w.Misses = 3
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// stop also ends a question waiting for its answer: a process
	// stopping does not wait for it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(w.Every)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if w.Conn.IsClosed() {
			return
		}
		if !w.Conn.IsConnected() {
			misses = 0 // reconnecting: another server's turn
			continue
		}
		at := w.Conn.ConnectedUrlRedacted()
		err := jetStreamAnswers(ctx, w.Conn, w.Every)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			misses = 0
			continue
		}
		if misses++; misses < w.Misses {
			continue
		}
		other, err2 := w.elsewhere(ctx, w.Conn.ConnectedUrl())
		if ctx.Err() != nil {
			return
		}
		if other == "" {
			if misses == w.Misses {
				log.Warn("JetStream does not answer through this NATS server, nor through the others; staying (the cluster may have lost its quorum)",
					"server", at, "err", err, "others", err2)
			}
			continue
		}
		log.Warn("NATS server cut off from its cluster's JetStream; moving to another server",
			"server", at, "unanswered_for", (time.Duration(misses) * w.Every).String(), "err", err, "answered_by", RedactURLs(other))
		if err := w.Conn.ForceReconnect(); err != nil {
			log.Warn("could not move off the NATS server", "server", at, "err", err)
		}
		misses = 0
	}
}

// elsewhere returns the URL of a server of the connection's list, other
// than current, through which JetStream answers, or "" and why none did.
func (w ReachWatch) elsewhere(ctx context.Context, current string) (string, error) {
	here := hostPort(current)
	var errs []error
	for _, u := range w.Conn.Servers() {
		if hostPort(u) == here || ctx.Err() != nil {
			continue
		}
		nc, err := w.Dial(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", RedactURLs(u), err))
			continue
		}
		err = jetStreamAnswers(ctx, nc, w.Every)
		nc.Close()
		if err == nil {
			return u, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", RedactURLs(u), err))
	}
	if len(errs) == 0 {
		return "", errors.New("no other server known")
	}
	return "", errors.Join(errs...)
}

func hostPort(u string) string {
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Host
	}
	return u
}

// jetStreamAnswers asks JetStream for the account's information through
// nc: nil when it answers, an error when the request goes unanswered or
// JetStream says it is unavailable (no meta leader).
func jetStreamAnswers(ctx context.Context, nc *nats.Conn, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, "$JS.API.INFO", nil)
	if errors.Is(err, nats.ErrNoResponders) {
		// No JetStream on the server at all (a server cut off still
		// takes the question, and leaves it unanswered): not a matter
		// of reach.
		return nil
	}
	if err != nil {
		return err
	}
	var r struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	// 10008, "JetStream system temporarily unavailable": no meta leader
	// known to the server. Any other answer (JetStream not enabled for
	// the account, say) is not the server's being cut off.
	if json.Unmarshal(m.Data, &r) == nil && r.Error != nil && r.Error.ErrCode == 10008 {
		return fmt.Errorf("JetStream unavailable: %s", r.Error.Description)
	}
	return nil
}
