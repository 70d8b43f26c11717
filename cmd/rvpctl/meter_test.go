package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
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
