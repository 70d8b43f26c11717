package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCounter: on a terminal the count is a bar redrawn in place, with
// the rate and the time left, ended by a newline; elsewhere plain lines;
// quiet, nothing.
func TestCounter(t *testing.T) {
	var b bytes.Buffer
	c := newCounter(&b, "import", 1000, false)
	c.line.tty = true
	c.add(250)
	c.add(250)
	c.end()
	c.add(1) // after the end: nothing
	out := b.String()
	bar := regexp.MustCompile(`^\rimport \[={7} {23}\] 250 of 1,000, [\d,]+/s, \d+s left\x1b\[K` +
		`\rimport \[={15} {15}\] 500 of 1,000, [\d,]+/s, \d+s left\x1b\[K` +
		`\rimport \[={15} {15}\] 500 of 1,000, [\d,]+/s, \d+s left\x1b\[K\n$`)
	if !bar.MatchString(out) {
		t.Errorf("terminal output:\n%q", out)
	}

	b.Reset()
	c = newCounter(&b, "move-users", 3, false)
	c.add(1)
	c.add(1)
	c.add(1)
	c.end()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if strings.Contains(b.String(), "\r") || len(lines) != 2 || !strings.HasPrefix(lines[0], "move-users: 1 of 3, ") || !strings.HasPrefix(lines[1], "move-users: 3 of 3, ") {
		t.Errorf("plain output (the first count, then the last; not a line each within a second):\n%q", b.String())
	}

	b.Reset()
	c = newCounter(&b, "import", 10, true)
	c.add(10)
	c.end()
	if b.Len() != 0 {
		t.Errorf("quiet counter wrote %q", b.String())
	}
}

// TestCounterNoEarlyEstimate: the time left is not guessed from the
// first few done (the audit's first line said "1 of 11,276 ... 8m4s
// left"), only once a second has passed or 5% is done.
func TestCounterNoEarlyEstimate(t *testing.T) {
	var b bytes.Buffer
	c := newCounter(&b, "audit: events read", 11276, false)
	c.line.tty = true
	c.add(1)
	if first := b.String(); !strings.Contains(first, "1 of 11,276") || strings.Contains(first, "left") {
		t.Errorf("first line, 1 of 11,276 read at once: %q, want no time left", first)
	}
	if s := c.text(c.start.Add(500 * time.Millisecond)); strings.Contains(s, "left") {
		t.Errorf("1 of 11,276 in 0.5 s: %q, want no time left yet", s)
	}
	if s := c.text(c.start.Add(2 * time.Second)); !regexp.MustCompile(`1 of 11,276, 0/s, \d+h\d+m\d+s left$`).MatchString(s) {
		t.Errorf("1 of 11,276 in 2 s: %q, want the time left", s)
	}
	c.add(600) // 5.3%
	if s := c.text(c.start.Add(100 * time.Millisecond)); !regexp.MustCompile(`601 of 11,276, [\d,]+/s, \d+s left$`).MatchString(s) {
		t.Errorf("601 of 11,276 in 0.1 s: %q, want the time left", s)
	}
}
