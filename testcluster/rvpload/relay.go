package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/rvp"
)

// relay is the baseline: a minimal RVP server doing only what the protocol
// forces. It signs clients in with NTLM against one NT hash (every load
// user has the same password; nothing is looked up or stored), keeps in
// memory the Call-Backs of login subscriptions, the watchers of each user
// and each user's last state, answers PROPPATCH at once and tells the
// watchers through a pool of NOTIFY workers, and forwards each message
// NOTIFY to the recipient's Call-Back on a new connection with
// Connection: close, answering the sender after the callback answered.
// It uses rvpd's own parser, renderers and NOTIFY client, so the ratio
// measures what rvpd does beyond the protocol: events, decisions, facts,
// projections.
type relay struct {
	ntHash   []byte
	ntDomain string
	client   *rvp.Client
	jobs     chan rvp.Outbound
	log      *slog.Logger

	mu    sync.Mutex
	users map[string]*relayUser

	nextID atomic.Int32
}

type relayUser struct {
	callbacks []rvp.URL
	watchers  []rvp.URL // Call-Backs of property subscriptions: principal URLs or listeners
	state     string
}

// relayWorkers is the size of the NOTIFY pool (a home node once had 32;
// it runs up to 1,024 now, which measured no different for the fan-out).
const relayWorkers = 32

func runRelay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpload relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:0", "address to serve RVP on")
	password := fs.String("password", "", "the password every user signs in with (NTLM)")
	ntDomain := fs.String("nt-domain", "EXAMPLE", "the Windows domain in NTLM challenges")
	profiles := fs.String("pprof", "", "address to serve Go's profiles on (net/http/pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *password == "" {
		return errors.New("relay: -password is required")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	r := &relay{
		ntHash: rvp.NTHash(*password), ntDomain: *ntDomain,
		client: &rvp.Client{Buffers: new(rvp.Buffers)}, jobs: make(chan rvp.Outbound, 1<<16),
		log:   slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		users: map[string]*relayUser{},
	}
	for range relayWorkers {
		go func() {
			for out := range r.jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := r.client.Do(ctx, out); err != nil {
					r.log.Warn("NOTIFY failed", "url", out.URL.String(), "err", err)
				}
				cancel()
			}
		}()
	}
	if *profiles != "" {
		pl, err := net.Listen("tcp", *profiles)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(pl)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; ln.Close() }()
	fmt.Fprintf(stdout, "relay listening on http://%s\n", ln.Addr())
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go r.serve(nc)
	}
}

func (r *relay) user(alias string) *relayUser {
	u := r.users[alias]
	if u == nil {
		u = &relayUser{}
		r.users[alias] = u
	}
	return u
}

func (r *relay) serve(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 8<<10)
	bw := bufio.NewWriterSize(nc, 8<<10)
	var handshake *gateway.NTLMHandshake
	authed := ""
	for {
		nc.SetDeadline(time.Now().Add(time.Minute))
		req, err := rvp.ReadRequest(br, rvp.Limits{})
		if err != nil {
			return
		}
		var resp *rvp.Response
		scheme, token, _ := strings.Cut(req.Header.Get(rvp.HdrAuthorization), " ")
		switch {
		case strings.EqualFold(scheme, "NTLM"):
			resp, handshake, authed = r.ntlm(token, handshake)
		case authed == "":
			resp = &rvp.Response{Status: 401, Header: []rvp.Field{{Name: rvp.HdrWWWAuthenticate, Value: "NTLM"}}}
		}
		if resp == nil {
			resp = r.handle(req, authed)
		}
		if req.Close {
			resp.Close = true
		}
		if err := resp.WriteTo(bw); err != nil || resp.Close {
			return
		}
	}
}

// ntlm takes one step of the handshake: the challenge, or the check of
// the answer (nil response: go on with the request as the user).
func (r *relay) ntlm(token string, h *gateway.NTLMHandshake) (*rvp.Response, *gateway.NTLMHandshake, string) {
	refuse := &rvp.Response{Status: 401, Header: []rvp.Field{{Name: rvp.HdrWWWAuthenticate, Value: "NTLM"}}}
	msg, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil || len(msg) < 12 {
		return refuse, nil, ""
	}
	switch msg[8] {
	case 1:
		h = &gateway.NTLMHandshake{}
		type2, err := h.Challenge(msg, r.ntDomain, "RELAY", time.Now())
		if err != nil {
			return refuse, nil, ""
		}
		return &rvp.Response{Status: 401, Header: []rvp.Field{{Name: rvp.HdrWWWAuthenticate, Value: "NTLM " + base64.StdEncoding.EncodeToString(type2)}}}, h, ""
	case 3:
		if h == nil {
			return refuse, nil, ""
		}
		user, ok, err := h.Verify(msg, r.ntHash)
		if err != nil || !ok {
			return &rvp.Response{Status: 403}, nil, ""
		}
		if i := strings.LastIndexAny(user, `\/`); i >= 0 {
			user = user[i+1:]
		}
		return nil, nil, strings.ToLower(user)
	}
	return refuse, nil, ""
}

// alias returns the alias a principal URL or request target names, "" if
// none.
func alias(target string) string {
	path := target
	if u, err := rvp.ParseURL(target); err == nil && strings.Contains(target, "://") {
		path = u.Path
	}
	ref, err := rvp.ParseNodePath(path)
	if err != nil {
		return ""
	}
	return ref.Alias
}

func (r *relay) handle(req *rvp.Request, authed string) *rvp.Response {
	node := alias(req.Target)
	if node == "" {
		return &rvp.Response{Status: 404}
	}
	from := req.Header.Get(rvp.HdrFromPrincipal)
	if a := alias(from); from != "" && a != authed {
		return &rvp.Response{Status: 403}
	}
	switch req.Method {
	case "SUBSCRIBE":
		if id := req.Header.Get(rvp.HdrSubscriptionID); id != "" {
			// A renewal: the subscription stands as it was.
			return &rvp.Response{Status: 200, Header: []rvp.Field{{Name: rvp.HdrSubscriptionID, Value: id},
				{Name: rvp.HdrLifetime, Value: req.Header.Get(rvp.HdrLifetime)}}}
		}
		cb, err := rvp.ParseURL(req.Header.Get(rvp.HdrCallBack))
		if err != nil {
			return &rvp.Response{Status: 400}
		}
		id := r.nextID.Add(1)
		resp := &rvp.Response{Status: 200, Header: []rvp.Field{
			{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(id))},
			{Name: rvp.HdrLifetime, Value: req.Header.Get(rvp.HdrLifetime)},
		}}
		r.mu.Lock()
		defer r.mu.Unlock()
		if strings.EqualFold(req.Header.Get(rvp.HdrNotificationType), events.NotifyPragma) {
			u := r.user(node)
			u.callbacks = append(u.callbacks, cb)
			return resp
		}
		u := r.user(node)
		u.watchers = append(u.watchers, cb)
		if u.state != "" && u.state != "offline" {
			// librvp ignores the answer's body: tell the watcher now.
			r.tellLocked(nodeURL(req, from), from, cb, u.state)
		}
		return resp
	case "PROPPATCH":
		state, _, err := rvp.ParsePropertyUpdate(req.Body)
		if err != nil || state == nil {
			return &rvp.Response{Status: 400}
		}
		href := from
		r.mu.Lock()
		u := r.user(node)
		u.state = state.Value
		for _, w := range u.watchers {
			r.tellLocked(href, "", w, state.Value)
		}
		r.mu.Unlock()
		lease := events.Lease{Value: state.Value, Default: state.Default, Timeout: state.Timeout, ViewID: r.nextID.Add(1)}
		if lease.Default == "" {
			lease.Default = "offline"
		}
		return &rvp.Response{Status: 207, Header: []rvp.Field{{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML}},
			Body: rvp.LeaseMultistatus(href, lease, nil, nil)}
	case "NOTIFY":
		r.mu.Lock()
		cbs := append([]rvp.URL(nil), r.user(node).callbacks...)
		r.mu.Unlock()
		for _, cb := range cbs {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ans, err := r.client.Do(ctx, rvp.Outbound{URL: cb, Body: req.Body, Header: []rvp.Field{
				{Name: rvp.HdrVersion, Value: rvp.Version},
				{Name: rvp.HdrAckType, Value: "DeepOr"},
				{Name: rvp.HdrHopCount, Value: "2"},
				{Name: rvp.HdrFromPrincipal, Value: from},
				{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
			}})
			cancel()
			if err == nil && ans.Status/100 == 2 {
				return &rvp.Response{Status: 200}
			}
		}
		return &rvp.Response{Status: 412}
	}
	return &rvp.Response{Status: 200}
}

// nodeURL is the URL of the node a request addresses, with the host (and
// port) of the requester's principal, as the requester knows it.
func nodeURL(req *rvp.Request, from string) string {
	if u, err := rvp.ParseURL(from); err == nil {
		return "http://" + u.Host + req.Target
	}
	return "http://" + req.Header.Get("Host") + req.Target
}

// tellLocked queues the NOTIFY telling the subscriber at cb the state of
// the node at href; a Call-Back that is a user's principal URL reaches
// that user's login Call-Backs. r.mu is held.
func (r *relay) tellLocked(href, to string, cb rvp.URL, state string) {
	targets := []rvp.URL{cb}
	if a := alias(cb.String()); a != "" {
		to = cb.String()
		targets = r.user(a).callbacks
	}
	body := rvp.PropNotification(rvp.Contact{Href: href}, rvp.Contact{Href: to}, state)
	for _, t := range targets {
		out := rvp.Outbound{URL: t, Body: body, Header: []rvp.Field{
			{Name: rvp.HdrVersion, Value: rvp.Version},
			{Name: rvp.HdrFromPrincipal, Value: href},
			{Name: rvp.HdrNotificationType, Value: events.NotifyPropChange},
			{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
		}}
		select {
		case r.jobs <- out:
		default:
			r.log.Warn("NOTIFY queue full; one dropped", "url", t.String())
		}
	}
}
