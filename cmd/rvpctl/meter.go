package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// counter shows the progress of a count towards a total (users imported,
// moved, events read) on a progressLine: on a terminal with a bar, the
// count, the rate and the time left; with -json nothing (the output is
// for programs). A few lines do the job, so no library.
type counter struct {
	line  *progressLine // nil: quiet
	what  string
	width int // the bar's, on a terminal

	mu    sync.Mutex
	shown int // the count last written
	done  int
	total int // 0 when unknown: no bar, no time left
	start time.Time
}

// A counter guesses the time left once it has counted for estimateAfter
// or done estimateFrom of the total.
const (
	estimateAfter = time.Second
	estimateFrom  = 0.05
)

// newCounter returns the progress of what towards total (0: unknown),
// shown on w unless quiet.
func newCounter(w io.Writer, what string, total int, quiet bool) *counter {
	c := &counter{what: what, total: total, start: time.Now(), width: 30}
	if !quiet {
		c.line = newProgressLine(w)
	}
	return c
}

// add counts n more done.
func (c *counter) add(n int) {
	c.mu.Lock()
	c.done += n
	c.mu.Unlock()
	c.show(false)
}

// set says how many are done, out of how many (0: unknown).
func (c *counter) set(done, total int) {
	c.mu.Lock()
	c.done, c.total = done, total
	c.mu.Unlock()
	c.show(false)
}

// inPlace reports whether the progress is drawn in place on a terminal,
// where other lines would break it.
func (c *counter) inPlace() bool { return c.line != nil && c.line.tty }

// end shows the last count, unless a plain line showed it already, and
// ends the display.
func (c *counter) end() {
	if c.line == nil {
		return
	}
	c.mu.Lock()
	again := c.line.tty || c.shown != c.done || c.done == 0
	c.mu.Unlock()
	if again {
		c.show(true)
	}
	c.line.end()
}

func (c *counter) show(final bool) {
	if c.line == nil {
		return
	}
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if c.line.show(final, func() string { return c.text(time.Now()) }) {
		c.mu.Lock()
		c.shown = done
		c.mu.Unlock()
	}
}

// text is the progress as one line: what, a bar (on a terminal, towards
// a known total), the count, the rate, the time left or taken.
func (c *counter) text(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	elapsed := now.Sub(c.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(c.done) / s
	}
	count := thousands(uint64(c.done))
	var when string
	// The time left is guessed only once enough was done to judge the
	// rate by (estimateAfter, or estimateFrom of the total): the first
	// event of many read in a few milliseconds, its connection's set-up
	// counted, guessed minutes.
	judged := elapsed >= estimateAfter || float64(c.done) >= estimateFrom*float64(c.total)
	switch {
	case c.total > 0 && c.done < c.total && rate > 0 && judged:
		count += " of " + thousands(uint64(c.total))
		when = fmt.Sprintf("%s left", time.Duration(float64(c.total-c.done)/rate*float64(time.Second)).Round(time.Second))
	case c.total > 0:
		count += " of " + thousands(uint64(c.total))
		fallthrough
	default:
		when = elapsed.Round(100 * time.Millisecond).String()
	}
	text := fmt.Sprintf("%s: %s, %s/s, %s", c.what, count, thousands(uint64(rate)), when)
	if c.line.tty && c.total > 0 {
		filled := min(c.width, c.width*c.done/c.total)
		text = fmt.Sprintf("%s [%s%s] %s, %s/s, %s", c.what, strings.Repeat("=", filled), strings.Repeat(" ", c.width-filled), count, thousands(uint64(rate)), when)
	}
	return text
}
