package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/oklog/run"
)

// addPprof serves Go's profiles (net/http/pprof, under /debug/pprof/) on
// addr, for finding where a loaded server spends its time, and a heap
// dump at /debug/heapdump (see heapDump), and returns
// the address it listens on; "" serves nothing. It never shares the RVP
// listener.
func addPprof(g *run.Group, addr string, log *slog.Logger) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("-pprof %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/heapdump", func(w http.ResponseWriter, r *http.Request) { heapDump(w, log) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("profiles served", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	g.Add(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String(), nil
}

// heapDump answers with a heap dump of the process
// (runtime/debug.WriteHeapDump, after a collection): every live object
// with its address and size, which `rvpload spans` reads into size
// classes, the spans they are in and the room left in them; a heap
// profile says what is live, not how thinly it is spread. The world is
// stopped while it is written, about a second for 100 MB of heap: it is
// for a server under study, not one carrying users. It holds the
// process's memory as it is, password verifiers and messages included:
// the listener is for loopback or an operators' network only.
func heapDump(w http.ResponseWriter, log *slog.Logger) {
	f, err := os.CreateTemp("", "rvpd-heapdump-*")
	if err != nil {
		http.Error(w, "heap dump: "+err.Error()+"; is the temporary directory writable?", http.StatusInternalServerError)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	start := time.Now()
	runtime.GC()
	debug.WriteHeapDump(f.Fd())
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		http.Error(w, "heap dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	log.Info("heap dump written", "bytes", size, "took", time.Since(start))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	io.Copy(w, f)
}
