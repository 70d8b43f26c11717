package natstest

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStartConnect: a server that does not listen is reached in-process,
// one that listens over TCP on loopback, each with JetStream of the
// domain asked for.
func TestStartConnect(t *testing.T) {
	for _, c := range []struct {
		name    string
		options []Option
		domain  string
		tcp     bool
	}{
		{"in-process", nil, "", false},
		{"listening, of a domain", []Option{Listen(), Domain("d1")}, "d1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := Start(t, c.options...)
			if (ns.Addr() != nil) != c.tcp {
				t.Fatalf("listening on %v", ns.Addr())
			}
			nc, js := Connect(t, ns)
			want := "pipe" // net.Pipe's, in-process
			if c.tcp {
				want = ns.Addr().String()
			}
			if got := nc.ConnectedAddr(); got != want {
				t.Errorf("connected to %q, want %q", got, want)
			}
			info, err := js.AccountInfo(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if info.Domain != c.domain {
				t.Errorf("JetStream domain %q, want %q", info.Domain, c.domain)
			}
		})
	}
}

// TestStoreDirKeptAcrossRestart: a server started on the store of an
// earlier one (shut down) finds its streams.
func TestStoreDirKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ns := Start(t, StoreDir(dir))
	_, js := Connect(t, ns)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "s", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()

	_, js = Connect(t, Start(t, StoreDir(dir)))
	st, err := js.Stream(t.Context(), "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("stream S after the restart: %d messages, want 1", n)
	}
}

// TestWithoutJetStream: a plain server answers core NATS, and JetStream
// not at all.
func TestWithoutJetStream(t *testing.T) {
	nc, js := Connect(t, Start(t, WithoutJetStream()))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(t.Context()); !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Errorf("JetStream of a server without it: %v", err)
	}
}
