package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress shows how far a long command is: on a terminal a bar redrawn
// in place with the count, the rate and the time left; elsewhere a plain
// line every few seconds and one at the end; with -json nothing (the
// output is for programs). A few lines do the job, so no library.
type progress struct {
	w     io.Writer
	what  string
	total int // 0 when unknown: no bar, no time left
	tty   bool
	quiet bool
	width int

	mu    sync.Mutex
	done  int
	start time.Time
	last  time.Time
	shown bool // a line is on the terminal without its newline
	ended bool
}

// newProgress returns the progress of what, out of total (0: unknown).
func newProgress(w io.Writer, what string, total int, quiet bool) *progress {
	p := &progress{w: w, what: what, total: total, quiet: quiet, start: time.Now(), width: 80}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 40 {
			p.width = cols
		}
	}
	return p
}

// add counts n more done.
func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.show(false)
}

// set says how many are done.
func (p *progress) set(done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	p.show(false)
}

// end shows the last state and ends the display.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.show(true)
	p.ended = true
}

func (p *progress) show(final bool) {
	if p.quiet || p.ended {
		return
	}
	now := time.Now()
	every := 2 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if !final && now.Sub(p.last) < every {
		return
	}
	p.last = now
	text := p.line(now)
	switch {
	case !p.tty:
		fmt.Fprintln(p.w, text)
	case final:
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", text)
		p.shown = false
	default:
		fmt.Fprintf(p.w, "\r%s\x1b[K", text)
		p.shown = true
	}
}

// line is the progress as one line: what, a bar, count, rate, time left.
func (p *progress) line(now time.Time) string {
	elapsed := now.Sub(p.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(p.done) / s
	}
	count := thousands(uint64(p.done))
	left := ""
	if p.total > 0 {
		count += "/" + thousands(uint64(p.total))
		switch {
		case p.done >= p.total:
			left = fmt.Sprintf(", took %s", elapsed.Round(100*time.Millisecond))
		case rate > 0:
			left = fmt.Sprintf(", %s left", time.Duration(float64(p.total-p.done)/rate*float64(time.Second)).Round(time.Second))
		}
	} else {
		left = fmt.Sprintf(", %s", elapsed.Round(100*time.Millisecond))
	}
	tail := fmt.Sprintf(" %s, %s/s%s", count, thousands(uint64(rate)), left)
	if p.total <= 0 || !p.tty {
		return p.what + ":" + tail
	}
	barWidth := min(40, p.width-len(p.what)-len(tail)-4)
	if barWidth < 10 {
		return p.what + ":" + tail
	}
	filled := min(barWidth, barWidth*p.done/p.total)
	return p.what + " [" + strings.Repeat("=", filled) + strings.Repeat(" ", barWidth-filled) + "]" + tail
}

// thousands formats n with thousands separators.
func thousands(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
