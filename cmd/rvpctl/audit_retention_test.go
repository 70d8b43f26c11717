package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// onWrite is a writer that calls hook, once, before it writes the first
// text containing said.
type onWrite struct {
	buf  bytes.Buffer
	said string
	hook func()
}

func (w *onWrite) Write(p []byte) (int, error) {
	if w.hook != nil && strings.Contains(string(p), w.said) {
		w.hook()
		w.hook = nil
	}
	return w.buf.Write(p)
}

// TestAuditEventsRemovedWhileReading: facts the stream's retention
// removes after the audit counted them and before its reader reaches
// them (-audit.retention removes the oldest facts all day long, while an
// audit of a large stream runs) are not an unreadable stream. Before, a
// reader waited 5 s for the events it had counted, then called the
// stream unreadable ("1 of its 3 events read, then none came for 5s"):
// the audit failed, telling the auditor to start the NATS servers of a
// stream that was online. The removal is made here (a deletion) at a
// moment the audit is known to have counted home1's events: when it says
// on stderr what home2's retention removed, after home1's reader began.
func TestAuditEventsRemovedWhileReading(t *testing.T) {
	url, js := startNATS(t, "")
	ctx := context.Background()
	for _, h := range []string{"home1", "home2"} {
		cfg := jetstream.StreamConfig{Name: events.FactStream(h), Subjects: []string{events.FactFilter(h)}}
		if h == "home2" {
			cfg.MaxMsgs = 1 // its first is removed: the audit says so
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamDirectory, Subjects: []string{events.DirectoryFilter}}); err != nil {
		t.Fatal(err)
	}
	bob := events.NewUser("example.test", "bob")
	meta := events.Meta{At: time.Now(), Actor: "bob@example.test"}
	for _, h := range []string{"home1", "home2"} {
		for _, v := range []string{"online", "busy", "away"} {
			publishEvent(t, js, events.FactSubject(h, bob), "", &events.ViewSet{Meta: meta, Node: bob, ID: 1, Value: v}, nil)
		}
	}
	home1, err := js.Stream(ctx, events.FactStream("home1"))
	if err != nil {
		t.Fatal(err)
	}
	stderr := &onWrite{said: events.FactStream("home2") + ": its first event left", hook: func() {
		if err := home1.DeleteMsg(ctx, 1); err != nil {
			t.Error(err)
		}
	}}
	var out bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	started := time.Now()
	err = exec(ctx, []string{"-json", "audit"}, lookup, strings.NewReader(""), &out, stderr)
	took := time.Since(started)
	if stderr.hook != nil {
		t.Fatalf("the audit never said what home2's retention removed; the test proves nothing\nstderr:\n%s", stderr.buf.String())
	}
	if err != nil {
		t.Fatalf("audit with home1's first fact removed while it read: %v (after %s)\nstderr:\n%s", err, took.Round(time.Millisecond), stderr.buf.String())
	}
	var seqs []uint64
	for _, e := range auditLines(t, out.String()) {
		if e.Stream == events.FactStream("home1") {
			seqs = append(seqs, e.Seq)
		}
	}
	if len(seqs) != 2 || seqs[0] != 2 || seqs[1] != 3 {
		t.Errorf("home1's facts shown: sequences %v, want 2 and 3", seqs)
	}
	if took >= auditFetchWait {
		t.Errorf("the audit took %s: it waited for the removed fact", took)
	}
}
