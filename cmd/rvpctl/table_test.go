package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
)

func noEnv(string) (string, bool) { return "", false }

// TestCommandTable: the usage is made from the table, every command in it
// once; an area without an action lists its commands; arguments are
// counted before anything connects.
func TestCommandTable(t *testing.T) {
	cmds := commands()
	seen := map[string]bool{}
	var out bytes.Buffer
	writeUsage(&out, cmds)
	for _, c := range cmds {
		if seen[c.name] {
			t.Errorf("command %q twice in the table", c.name)
		}
		seen[c.name] = true
		if c.help == "" {
			t.Errorf("command %q has no help", c.name)
		}
		if !strings.Contains(out.String(), "  "+c.synopsis()) {
			t.Errorf("usage lacks %q:\n%s", c.synopsis(), out.String())
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.flags(fs)
		for _, n := range c.needs {
			if fs.Lookup(n) == nil {
				t.Errorf("command %q needs -%s, which it does not declare", c.name, n)
			}
		}
	}
	for _, want := range []string{"user enable USER@DOMAIN -home server [-email address]", "router create NAME -domain domain -host name [-mode mode]", "presence USER@DOMAIN [-at moment]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}

	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := exec(context.Background(), append([]string{"-nats", "nats://127.0.0.1:1"}, args...), noEnv, strings.NewReader(""), &stdout, &stderr)
		return stderr.String(), err
	}
	if stderr, err := run("user"); err == nil || err.Error() != "user: no action given" || !strings.Contains(stderr, "user disable USER@DOMAIN") || strings.Contains(stderr, "domain create") {
		t.Errorf("rvpctl user: %v\n%s", err, stderr)
	}
	if _, err := run("user", "enable", "-home", "home1"); err == nil || err.Error() != "rvpctl user enable: USER@DOMAIN missing" {
		t.Errorf("rvpctl user enable without a user: %v", err)
	}
	if _, err := run("status", "extra"); err == nil || !strings.Contains(err.Error(), `unexpected arguments ["extra"]`) {
		t.Errorf("rvpctl status extra: %v", err)
	}
	if _, err := run("user", "enable", "a@b.test", "-mode", "proxy"); err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -mode") {
		t.Errorf("a flag of another command: %v", err)
	}
	if stderr, err := run("frobnicate"); err == nil || err.Error() != `unknown command "frobnicate"` || !strings.Contains(stderr, "administration") {
		t.Errorf("rvpctl frobnicate: %v\n%s", err, stderr)
	}
	if _, err := run("whoami"); err == nil || !strings.Contains(err.Error(), "no password for administrator admin") {
		t.Errorf("rvpctl whoami without a password: %v", err)
	}
}

// TestTableWideText: columns are aligned by the cells' width on a
// terminal, not their count of runes: a CJK display name takes two
// columns a character, a combining accent none.
func TestTableWideText(t *testing.T) {
	var b bytes.Buffer
	table(&b, [][]string{{"USER", "DISPLAY NAME", "HOME"}, {"taro@example.test", "山田太郎", "home1"}, {"jose@example.test", "Jose\u0301", "home2"}, {"ann@example.test", "Ann", "home1"}})
	want := "USER               DISPLAY NAME  HOME\n" +
		"taro@example.test  山田太郎      home1\n" +
		"jose@example.test  Jose\u0301          home2\n" +
		"ann@example.test   Ann           home1\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant\n%s", b.String(), want)
	}
}
