package rvp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// Client sends requests to client callbacks and other servers the way RVP
// peers expect: a new connection per request, Host naming the callback,
// Content-Type and Content-Length always, Connection: close; and it reads
// only the status line and header of the answer, because librvp and Net::RVP
// answer without Content-Length and Net::RVP keeps the connection open. It
// follows no redirects by itself.
type Client struct {
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration
	// Timeout bounds the whole exchange after connecting. Default 10s.
	Timeout time.Duration
	// Dialer connects; nil means a net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// Proxy, when set, is an HTTP proxy every request to another
	// organisation (Outbound.Foreign) goes through (the request target is
	// then the absolute URL). Everything else (a NOTIFY to one of our
	// clients' listeners, inside, which an Internet proxy reaches, if at
	// all, as its own network and loopback) is connected to directly, and
	// guarded as such.
	Proxy *URL
	// Guard, when set, is asked about the address of every connection
	// (after name resolution, peer tables and redirects) before it is
	// made, by the net.Dialer of NetDialer, and again once it is made for
	// a Dialer that does not use NetDialer; an error fails the request as
	// an unreachable peer would (CallbackPolicy.Dialable).
	Guard func(netip.AddrPort) error
	// Federation, when set, takes Guard's place for a request marked
	// Outbound.Foreign (another organisation's URL) whose host the Dialer
	// does not map (a peer table, as HostMap: its entries are the
	// administrator's and trusted as given, with their redirects): those
	// addresses come from DNS, which whoever controls that organisation's
	// names controls (CallbackPolicy.Discovered). It is asked at each hop
	// of a redirect.
	Federation func(netip.AddrPort) error
	// Buffers, when set, lends each exchange its reader and writer, which
	// go back when it ends: a home server's NOTIFYs (one connection each)
	// would otherwise allocate 8 KiB apiece for the collector to take back.
	Buffers *Buffers
}

// Buffers lend a Client's exchanges their 4 KiB reader and writer. The
// zero value is ready; it is safe for concurrent use.
type Buffers struct{ pool sync.Pool }

type exchangeBuffers struct {
	r *bufio.Reader
	w *bufio.Writer
}

// get returns a reader and a writer on conn: lent by b, or new when b is
// nil.
func (b *Buffers) get(conn net.Conn) *exchangeBuffers {
	if b != nil {
		if x, ok := b.pool.Get().(*exchangeBuffers); ok {
			x.r.Reset(conn)
			x.w.Reset(conn)
			return x
		}
	}
	return &exchangeBuffers{r: bufio.NewReaderSize(conn, 4096), w: bufio.NewWriterSize(conn, 4096)}
}

// put gives x back to b, holding no connection.
func (b *Buffers) put(x *exchangeBuffers) {
	if b == nil {
		return
	}
	x.r.Reset(nil)
	x.w.Reset(nil)
	b.pool.Put(x)
}

type guardKey struct{}

// ErrRefusedAddress marks a connection a Client's Guard refused.
var ErrRefusedAddress = errors.New("refused by the server's policy")

// NetDialer returns the net.Dialer a Client's Dialer connects with: when
// the Client that dials (ctx) has a Guard, the dialer asks it about each
// address it is about to connect to, once the name is resolved, so that
// the server never connects to an address its policy refuses, not even
// to close the connection at once.
func NetDialer(ctx context.Context) *net.Dialer {
	guard, _ := ctx.Value(guardKey{}).(func(netip.AddrPort) error)
	// No TCP keep-alive: a connection lives for one request, at most
	// Timeout, shorter than the first probe, and the four socket options
	// that set it were a system call each for every NOTIFY.
	if guard == nil {
		return &net.Dialer{KeepAlive: -1}
	}
	return &net.Dialer{KeepAlive: -1, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err == nil {
			err = guard(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRefusedAddress, err)
		}
		return nil
	}}
}

// Outbound is a request to send.
type Outbound struct {
	Method string // default NOTIFY
	URL    URL
	Header []Field
	Body   []byte
	// ReadBody reads the answer's body too (by Content-Length, or to the
	// connection's end), at most MaxAnswerBody bytes.
	ReadBody bool
	// Redirects is how many 302s to follow, re-sending the same method,
	// header and body to Location (servers do; Go's client would turn the
	// request into a GET).
	Redirects int
	// Foreign marks a request to another organisation's URL, which the
	// Client's Federation guard judges, and which goes through the
	// Client's Proxy, if it has one.
	Foreign bool
}

// mapsHost reports whether d's peer table (a Peer method, as HostMap's
// and routernode's) names host's organisation, as the router looks it up:
// by host, then by the domain under an "im." host.
func mapsHost(d any, host string) bool {
	pt, ok := d.(interface{ Peer(string) (string, bool) })
	return ok && Peered(pt, host)
}

// Peered reports whether peer table pt names the organisation of host
// (with or without port): by the host, its name, or its domain under an
// "im." host (PeerKeys), as the router finds a peer.
func Peered(pt interface{ Peer(string) (string, bool) }, host string) bool {
	for _, k := range PeerKeys(host) {
		if _, ok := pt.Peer(k); ok {
			return true
		}
	}
	return false
}

// PeerKeys returns the keys a federation peer table is looked up by for
// host (with or without its port), in order: the host as given, its name,
// and the domain under an "im." name.
func PeerKeys(host string) []string {
	name := strings.ToLower(host)
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	return []string{host, name, events.Organisation(name)}
}

// MaxAnswerBody bounds a body read with Outbound.ReadBody.
const MaxAnswerBody = 256 << 10

// Answer is the status and header (and with ReadBody, the body) of a
// peer's answer.
type Answer struct {
	Status int
	Reason string
	Header Header
	Body   []byte
}

// Do sends req and returns the peer's answer, following 302s as
// req.Redirects allows. An error means no status was received: the peer
// could not be reached or did not answer in time.
func (c *Client) Do(ctx context.Context, req Outbound) (*Answer, error) {
	var proxy *URL
	if req.Foreign {
		proxy = c.Proxy
	}
	if req.Foreign && mapsHost(c.Dialer, req.URL.Hostname()) {
		// A peer the administrator's table names is trusted as given,
		// its redirects too (as the router trusts it).
		req.Foreign = false
	}
	for {
		ans, err := c.do(ctx, req, proxy)
		if err != nil || ans.Status != StatusMoved || req.Redirects <= 0 {
			return ans, err
		}
		loc, err := ParseURL(ans.Header.Get(HdrLocation))
		if err != nil {
			return ans, nil // a 302 without a usable Location is the answer
		}
		req.URL, req.Redirects = loc, req.Redirects-1
	}
}

// do sends req once, through proxy when it is not nil.
func (c *Client) do(ctx context.Context, req Outbound, proxy *URL) (*Answer, error) {
	dialTimeout, timeout := c.DialTimeout, c.Timeout
	if dialTimeout <= 0 {
		dialTimeout = 5 * time.Second
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	addr := req.URL.Host
	if proxy != nil {
		addr = proxy.Host
	}
	addr = DialAddr(addr)
	guard := c.Guard
	if req.Foreign && c.Federation != nil && proxy == nil {
		guard = c.Federation
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if guard != nil {
		dctx = context.WithValue(dctx, guardKey{}, guard)
	}
	var conn net.Conn
	var err error
	if c.Dialer != nil {
		conn, err = c.Dialer.DialContext(dctx, "tcp", addr)
	} else {
		conn, err = NetDialer(dctx).DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	defer conn.Close()
	// NetDialer asked the Guard before connecting; another Dialer may not
	// have: the address it reached is asked about now.
	if guard != nil && c.Dialer != nil {
		ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
		if err == nil {
			err = guard(ap)
		}
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w: %w", addr, ErrRefusedAddress, err)
		}
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	method := req.Method
	if method == "" {
		method = "NOTIFY"
	}
	target := req.URL.Path
	if target == "" {
		target = "/"
	}
	if proxy != nil {
		target = "http://" + req.URL.Host + target
	}
	bufs := c.Buffers.get(conn)
	defer c.Buffers.put(bufs)
	w := bufs.w
	w.WriteString(method + " " + target + " HTTP/1.1\r\n")
	writeField(w, "Host", req.URL.Host)
	for _, f := range req.Header {
		switch strings.ToLower(f.Name) {
		case "host", "content-length", "connection":
			continue
		}
		writeField(w, f.Name, f.Value)
	}
	writeField(w, HdrContentLength, strconv.Itoa(len(req.Body)))
	writeField(w, "Connection", "close")
	w.WriteString("\r\n")
	w.Write(req.Body)
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("send %s to %s: %w", method, addr, err)
	}

	br := bufs.r
	ans, err := readFinalAnswer(br)
	if err != nil {
		return nil, fmt.Errorf("answer to %s from %s: %w", method, addr, err)
	}
	if req.ReadBody {
		if ans.Body, err = readBody(br, ans.Header); err != nil {
			return nil, fmt.Errorf("body of the answer from %s: %w", addr, err)
		}
	}
	return ans, nil
}

func readBody(br *bufio.Reader, h Header) ([]byte, error) {
	if cl := h.Get(HdrContentLength); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 || n > MaxAnswerBody {
			return nil, fmt.Errorf("bad or too large Content-Length %q", cl)
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	b, err := io.ReadAll(io.LimitReader(br, MaxAnswerBody+1))
	if len(b) > MaxAnswerBody {
		return nil, errors.New("answer body too large")
	}
	return b, err
}

// maxInterim bounds the interim (1xx) answers read before the final one.
const maxInterim = 8

// readFinalAnswer reads the final answer, past any interim ones (100
// Continue, which IIS sends unasked to a request with a body): HTTP/1.1
// clients must take those (RFC 9110 §15.2), and the status that counts
// is the final one. A 101 (Switching Protocols) was never asked for.
func readFinalAnswer(br *bufio.Reader) (*Answer, error) {
	for range maxInterim {
		ans, err := readAnswer(br)
		switch {
		case err != nil:
			return ans, err
		case ans.Status == 101:
			return nil, errors.New("101 Switching Protocols, which no request asks for")
		case ans.Status >= 200:
			return ans, nil
		}
	}
	return nil, fmt.Errorf("more than %d interim answers", maxInterim)
}

// readAnswer reads a status line and header; clients answer with bare LF,
// without reason phrase, or with nothing after the status line but the
// connection's end.
func readAnswer(br *bufio.Reader) (*Answer, error) {
	line, err := readLine(br, 8<<10)
	if err != nil {
		return nil, fmt.Errorf("status line: %w", err)
	}
	s := string(line)
	if !strings.HasPrefix(s, "HTTP/") || len(s) < 12 || s[8] != ' ' {
		return nil, fmt.Errorf("malformed status line %q", truncate(s, 60))
	}
	code, err := strconv.Atoi(s[9:12])
	if err != nil || code < 100 || code > 999 {
		return nil, fmt.Errorf("malformed status line %q", truncate(s, 60))
	}
	ans := &Answer{Status: code, Reason: strings.TrimSpace(s[12:]), Header: make(Header)}
	for range 100 {
		line, err := readLine(br, 8<<10)
		if err != nil || len(line) == 0 {
			// The answer's end, or the peer closed after the status: the
			// status is what counts.
			return ans, nil
		}
		if name, value, ok := strings.Cut(string(line), ":"); ok {
			ans.Header.Add(name, strings.TrimSpace(value))
		}
	}
	return ans, errors.New("answer header has more than 100 lines")
}

// HostMap is a Dialer that connects to the address a host name maps to
// (a federation peer table), and dials every other address as given.
type HostMap map[string]string

// Peer returns the address host maps to.
func (m HostMap) Peer(host string) (string, bool) { a, ok := m[strings.ToLower(host)]; return a, ok }

// DialContext implements Client's Dialer: a host the table names (by
// itself, or by its domain under an "im." host, as the router looks a peer
// up) is dialled at its entry's address.
func (m HostMap) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		for _, k := range PeerKeys(host) {
			if to, ok := m[k]; ok {
				addr = to
				break
			}
		}
	}
	return NetDialer(ctx).DialContext(ctx, network, addr)
}

// ParseHostMap parses "host=host:port,..." (a flag's value).
func ParseHostMap(s string) (HostMap, error) {
	m := HostMap{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("peer %q: want host=host:port", kv)
		}
		m[strings.ToLower(strings.TrimSpace(k))] = DialAddr(strings.TrimSpace(v))
	}
	return m, nil
}
