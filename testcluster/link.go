package testcluster

import (
	"net"
	"sync"
	"testing"
)

// Link is a TCP connection between two servers that a test can cut, as a
// WAN outage between sites would: it listens on loopback and forwards
// every connection to its target. Sever closes the connections it carries
// and refuses new ones until Heal: the servers see their connection
// closed, as after a router's reset. Silence stops forwarding without
// closing anything, as a WAN link that drops packets does: each side's
// writes pile up until NATS's pings give up on the connection.
type Link struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	quiet  *sync.Cond // signalled when the link speaks again
	cut    bool
	silent bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewLink starts a link to target (host:port); the test's cleanup closes
// it.
func NewLink(t testing.TB, target string) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	l.quiet = sync.NewCond(&l.mu)
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

// Addr is the address to connect to instead of the target.
func (l *Link) Addr() string { return l.ln.Addr().String() }

func (l *Link) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.mu.Unlock()
		u, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			c.Close()
			u.Close()
			continue
		}
		l.conns[c], l.conns[u] = struct{}{}, struct{}{}
		l.mu.Unlock()
		l.wg.Add(2)
		go l.pipe(u, c)
		go l.pipe(c, u)
	}
}

// pipe copies from src to dst until either ends, then closes both;
// while the link is silent what it has read waits.
func (l *Link) pipe(dst, src net.Conn) {
	defer l.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			for l.silent && !l.cut {
				l.quiet.Wait()
			}
			l.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	l.mu.Lock()
	delete(l.conns, dst)
	delete(l.conns, src)
	l.mu.Unlock()
}

// Sever cuts the link: the connections it carries are closed, and new
// ones refused until Heal.
func (l *Link) Sever() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
	l.quiet.Broadcast()
}

// Silence stops the link forwarding anything, its connections left open,
// until Heal.
func (l *Link) Silence() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.silent = true
}

// Heal lets connections through again: a severed link takes new ones, a
// silent one forwards what waited.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut, l.silent = false, false
	l.quiet.Broadcast()
}

// Severed reports whether the link is cut.
func (l *Link) Severed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

func (l *Link) close() {
	l.ln.Close()
	l.Sever()
	l.wg.Wait()
}
