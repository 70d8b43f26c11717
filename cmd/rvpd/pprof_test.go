package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestHeapDump: /debug/heapdump answers with a whole Go heap dump, its
// length given.
func TestHeapDump(t *testing.T) {
	rec := httptest.NewRecorder()
	heapDump(rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	resp := rec.Result()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, rec.Body)
	}
	body := rec.Body.String()
	if !strings.HasPrefix(body, "go1.7 heap dump\n") {
		t.Errorf("body starts %q, want a Go heap dump's header", body[:min(len(body), 20)])
	}
	if n, err := strconv.Atoi(resp.Header.Get("Content-Length")); err != nil || n != len(body) || n < 1<<16 {
		t.Errorf("Content-Length %q, body %d bytes", resp.Header.Get("Content-Length"), len(body))
	}
}
