package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// TestAuditTableEscapes: text a client controls (a mobile description,
// an alias, a Call-Back) cannot forge a line of rvpctl audit's table,
// recolour the terminal or reorder what follows it: control characters,
// ANSI escapes and bidi marks are shown escaped, one event a line, its
// columns aligned.
func TestAuditTableEscapes(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	mallory := events.NewUser("example.test", "mallory")
	forged := "x\n2026-12-06T12:00:01Z  99  user.password.v1  rvp.dir.user.example=2Etest.bob  admin  10.0.0.1  bob@example.test (verifiers sealed)"
	evs := []events.Event{
		&events.PropertySet{Meta: events.Meta{At: at, Actor: "mallory@example.test", Client: "10.0.0.9"}, Node: mallory,
			Value: events.PropValue{Prop: events.PropMobileDescription, Value: forged}},
		&events.PropertySet{Meta: events.Meta{At: at, Actor: "mallory@example.test", Client: "10.0.0.9"}, Node: mallory,
			Value: events.PropValue{Prop: events.PropMobileDescription, Value: "\x1b[2J\x1b[31mred\r\u0085\u202eevil\u2028"}},
		&events.SubscriptionCreated{Meta: events.Meta{At: at, Actor: "mallory\u200f@example.test"}, Node: events.NewUser("example.test", "m\u202eallory"),
			ID: 1, Kind: events.NotifyPragma, CallBack: "http://10.0.0.9:1/\t\v\x00"},
	}
	rows := [][]string{{"TIME", "SEQ", "TYPE", "NODE/SUBJECT", "ACTOR", "CLIENT", "DETAIL"}}
	for i, ev := range evs {
		rows = append(rows, auditRow(auditEntry{Seq: uint64(i + 1), Time: at, Type: ev.Type(), Subject: "rvp.evt.home1.x.y"}, ev))
	}
	var out bytes.Buffer
	table(&out, rows)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(rows) {
		t.Errorf("%d rows printed as %d lines:\n%s", len(rows), len(lines), out.String())
	}
	for _, bad := range []string{"\x1b", "\r", "\u0085", "\u202e", "\u200f", "\u2028", "\t", "\v", "\x00"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("the table holds %q as it is:\n%s", bad, out.String())
		}
	}
	// Every column starts where its header does.
	for _, col := range []string{"SEQ", "TYPE", "NODE/SUBJECT", "ACTOR"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if r := []rune(l); len(r) <= at || r[at-1] != ' ' || r[at] == ' ' {
				t.Errorf("column %s misaligned in %q", col, l)
			}
		}
	}
	if !strings.Contains(out.String(), `x\n2026-12-06T12:00:01Z`) {
		t.Errorf("the forged text is not shown escaped:\n%s", out.String())
	}
}
