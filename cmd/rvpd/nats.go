package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsLogger adapts the embedded server's logger to slog. Fatalf records
// the error instead of exiting the process (the stock logger calls
// os.Exit), so a failed start is reported as an error.
type natsLogger struct {
	log   *slog.Logger
	fatal chan error
}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  {}
func (l natsLogger) Tracef(format string, v ...any)  {}
func (l natsLogger) Fatalf(format string, v ...any) {
	err := fmt.Errorf(format, v...)
	l.log.Error(err.Error(), "fatal", true)
	select {
	case l.fatal <- err:
	default:
	}
}

// natsConfig configures the embedded server.
type natsConfig struct {
	Name     string
	StoreDir string
	// Listen is host:port for NATS clients (port 0 picks one), or "" for
	// no listener.
	Listen string
	// Sync is "always", or an fsync interval; "" keeps the server default
	// (2m).
	Sync string
}

// startNATS starts an embedded JetStream server and waits until it takes
// connections. The fatal channel reports errors after start.
func startNATS(c natsConfig, log *slog.Logger) (*server.Server, chan error, error) {
	opts := &server.Options{
		ServerName:         c.Name,
		JetStream:          true,
		StoreDir:           c.StoreDir,
		NoSigs:             true,
		JetStreamMaxMemory: 256 << 20,
		MaxPayload:         1 << 20,
	}
	if c.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("-nats %q: want host:port: %w", c.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, nil, fmt.Errorf("-nats %q: bad port", c.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	switch c.Sync {
	case "":
	case "always":
		opts.SyncAlways = true
	default:
		d, err := time.ParseDuration(c.Sync)
		if err != nil || d <= 0 {
			return nil, nil, fmt.Errorf("-nats.sync %q: want \"always\" or a duration such as 1s", c.Sync)
		}
		opts.SyncInterval = d
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("configure nats: %w", err)
	}
	fatal := make(chan error, 1)
	ns.SetLoggerV2(natsLogger{log: log, fatal: fatal}, false, false, false)
	go ns.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case err := <-fatal:
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, nil, fmt.Errorf("start nats: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, nil, errors.New("start nats: not ready after 30s")
		}
	}
	return ns, fatal, nil
}
