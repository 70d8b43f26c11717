package homenode

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestStandbyReportsRetentionGap: a warm standby whose projection is
// behind facts the stream's retention removed (it was down longer than
// -audit.retention, or it rebuilds an outdated projection after an
// upgrade) catches up over them. The state only they made is missing from
// the projection it hands its node at takeover, which then catches up
// from the standby's position and finds no gap: the standby must say so,
// at Error, as a home node does (docs/operations.md). The stream is made
// as the retention leaves one, beginning past its first fact, at once
// (projections' cutStream has a retention of 1 s remove one, and waits).
func TestStandbyReportsRetentionGap(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx := t.Context()
	const home = "home1"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream(home), Subjects: []string{events.FactFilter(home)}, FirstSeq: 2}); err != nil {
		t.Fatal(err)
	}
	if err := projections.EnsureFactStream(ctx, js, home, projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	ben := events.NewUser("example.test", "ben")
	publish := func(f events.Fact) {
		t.Helper()
		data, err := events.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(events.FactSubject(home, f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish(&events.ViewSet{Meta: events.Meta{At: at}, Node: ben, ID: 1, Value: "online", Default: "offline", Timeout: 600, Expires: at.Add(time.Hour)})

	db, err := projections.Open(filepath.Join(t.TempDir(), "pebble"), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		WarmStandby(Config{Home: home, DB: db, JetStream: js, Logger: log})(sctx)
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.tail(100), "caught up"); {
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("the standby did not catch up:\n%s", logs.tail(100))
		}
		select {
		case <-time.After(20 * time.Millisecond): // polling, with a deadline
		case <-ctx.Done():
		}
	}
	stop()
	<-done
	out := logs.tail(100)
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "retention") {
		t.Errorf("the standby caught up over facts the retention removed without an Error:\n%s", out)
	}
}
