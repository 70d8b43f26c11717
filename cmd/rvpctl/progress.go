package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/term"

	"github.com/rvp-im/rvpd/projections"
)

// progressLine shows how far a long command is: on a terminal one line
// rewritten in place, elsewhere a plain line a second and one at the end
// (of each projection a rebuild goes through, of an import, ...). Its
// lines are made by update (a rebuild's) and counter (a count's, with a
// bar).
type progressLine struct {
	w    io.Writer
	tty  bool
	mu   sync.Mutex
	open bool // a line is on the terminal without its newline
	last time.Time
	done bool
}

func newProgressLine(w io.Writer) *progressLine {
	f, ok := w.(*os.File)
	return &progressLine{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// update shows a rebuild's progress p.
func (l *progressLine) update(p projections.Progress) {
	l.show(p.Done, func() string {
		return fmt.Sprintf("rebuild %s: %s %s applied, sequence %s of %s, %s events/s, %.1fs",
			p.Projection, thousands(p.Applied), plural(p.Applied, "event"), thousands(p.Seq), thousands(p.Last), thousands(uint64(p.Rate())), p.Elapsed.Seconds())
	})
}

// show writes the line text makes: on a terminal in place of the last
// (final ends it with a newline), elsewhere as a line of its own at most
// once a second and when final.
// It reports whether it wrote.
func (l *progressLine) show(final bool, text func() string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || (!l.tty && !final && time.Since(l.last) < time.Second) {
		return false
	}
	l.last = time.Now()
	switch {
	case !l.tty:
		fmt.Fprintln(l.w, text())
	case final:
		fmt.Fprintf(l.w, "\r%s\x1b[K\n", text())
		l.open = false
	default:
		fmt.Fprintf(l.w, "\r%s\x1b[K", text())
		l.open = true
	}
	return true
}

// end ends the display: nothing is shown after it.
func (l *progressLine) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open {
		fmt.Fprintln(l.w)
	}
	l.done = true
}

// plural is noun as counted n times: "user" for 1, "users" otherwise
// (every noun counted here takes an s).
func plural[N ~int | ~uint64](n N, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

// thousands formats n with thousands separators.
func thousands(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// showProgress shows the Progress reports arriving on inbox until finish
// is called, which shows those that came before it and ends the display.
// The node sends its reports before its answer on one connection, so
// every report has been received when the answer is.
func showProgress(nc *nats.Conn, inbox string, w io.Writer) (finish func(), err error) {
	line := newProgressLine(w)
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	show := func(m *nats.Msg) {
		var p projections.Progress
		if json.Unmarshal(m.Data, &p) == nil {
			line.update(p)
		}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case m := <-ch:
				show(m)
			case <-stop:
				return
			}
		}
	}()
	return func() {
		close(stop)
		<-stopped
		sub.Unsubscribe()
		for {
			select {
			case m := <-ch:
				show(m)
			default:
				line.end()
				return
			}
		}
	}, nil
}
