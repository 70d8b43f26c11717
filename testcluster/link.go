package testcluster

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Link is a TCP connection between two servers that a test can cut, as a
// WAN outage between sites would: it listens on loopback and forwards
// every connection to its target. Sever closes the connections it carries
// and refuses new ones until Heal. The servers see their connection
// closed, as after a router's reset; a link that silently drops packets
// is not simulated.
type Link struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
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

// pipe copies from src to dst until either ends, then closes both.
func (l *Link) pipe(dst, src net.Conn) {
	defer l.wg.Done()
	io.Copy(dst, src)
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
}

// Heal lets connections through again.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
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
