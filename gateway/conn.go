package gateway

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// conn is one client connection: requests are read and answered one at a
// time, in order.
type conn struct {
	nc    net.Conn
	g     *Gateway
	state *ConnState
	// addr is the client network it is counted under (Gateway.perAddr);
	// zero: none.
	addr netip.Addr
	// movedAsked is the last request target answered with a 302 because
	// its user moved to another home server.
	movedAsked string

	mu   sync.Mutex
	busy bool
}

func (c *conn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		// Wake the reader blocked between requests.
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// setBusy marks the connection busy (a request is being handled) or idle,
// and reports whether the gateway is shutting down. It never holds c.mu
// while taking g.mu: Shutdown takes them in the other order.
func (c *conn) setBusy(b bool) bool {
	c.mu.Lock()
	c.busy = b
	c.mu.Unlock()
	return c.g.closing.Load()
}

// serve reads and answers c's requests through br and bw, reading and
// writing c.nc, until the connection ends, and closes it.
func (c *conn) serve(br *bufio.Reader, bw *bufio.Writer) {
	defer c.nc.Close()
	g := c.g
	client := hostOf(c.nc.RemoteAddr())
	for {
		// Set the idle deadline before going idle: Shutdown, seeing the
		// connection idle, moves it to the past, and that must win.
		c.nc.SetReadDeadline(g.now().Add(g.cfg.IdleTimeout))
		if c.setBusy(false) {
			return
		}
		// Once a request begins, all of it must come within ReadTimeout.
		if _, err := br.Peek(1); err != nil {
			return // idle past IdleTimeout, gone, or woken by Shutdown
		}
		c.nc.SetReadDeadline(g.now().Add(g.cfg.ReadTimeout))
		if g.closing.Load() {
			return // Shutdown may have woken it before the line above
		}
		req, err := rvp.ReadRequest(br, g.cfg.Limits)
		c.setBusy(true)
		if err != nil {
			var pe *rvp.ProtocolError
			if errors.As(err, &pe) {
				if pe.Status == rvp.StatusRequestTimeout {
					g.log.Info("request not sent in time; connection closed", "client", client, "status", pe.Status, "err", pe.Msg, "read_timeout", g.cfg.ReadTimeout)
				} else {
					g.log.Info("malformed request refused", "client", client, "status", pe.Status, "err", pe.Msg)
				}
				c.nc.SetWriteDeadline(g.now().Add(10 * time.Second))
				g.cfg.Metrics.request("", pe.Status, 0)
				respond(nil, nil, pe).WriteTo(bw)
			}
			return
		}
		// Header reading is done; the body is in. Give the handler the
		// request timeout, not the idle one.
		c.nc.SetReadDeadline(time.Time{})
		start := g.now()
		g.inflight.Add(1)
		resp, why := g.handle(g.stopping, c, req, client)
		// Counted before it is written: whoever has the answer sees it
		// counted.
		g.inflight.Add(-1)
		took := g.now().Sub(start)
		g.cfg.Metrics.request(req.Method, resp.Status, took)
		c.nc.SetWriteDeadline(g.now().Add(30 * time.Second))
		if req.Close {
			resp.Close = true
		}
		resp.Head = req.Method == "HEAD"
		err = resp.WriteTo(bw)
		g.logRequest(req, resp, client, took, why)
		if err != nil || resp.Close {
			return
		}
	}
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}
