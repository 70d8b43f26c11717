package main

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestReadHeapDump reads this process's own heap dump: 2,000 objects of
// 256 bytes kept among 20,000 let go are there, in spans of that class,
// with the room between them.
func TestReadHeapDump(t *testing.T) {
	kept := make([]*[256]byte, 0, 2000)
	for i := range 20000 {
		b := new([256]byte)
		b[0] = byte(i)
		if i%10 == 0 {
			kept = append(kept, b)
		}
	}
	path := filepath.Join(t.TempDir(), "heap.dump")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	debug.WriteHeapDump(f.Fd())
	f.Close()
	runtime.KeepAlive(kept)

	f, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := readHeapDump(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	c := d.classes[256]
	if c == nil || c.objects < 2000 {
		t.Fatalf("256-byte class: %+v, want at least the 2,000 kept", c)
	}
	// 2,000 objects fill 63 spans of 32; one in ten kept of 20,000 leaves
	// them spread over many more.
	if c.spans < 63 || c.room() != c.spans*8192-c.objects*256 {
		t.Errorf("256-byte class: %d spans, %d objects, room %d", c.spans, c.objects, c.room())
	}
	if c.spans < 200 {
		t.Errorf("256-byte class: %d spans for %d objects: one kept in ten should spread them over far more than 63", c.spans, c.objects)
	}

	// Not a dump: a clear error.
	if _, err := readHeapDump(bufio.NewReader(strings.NewReader("hello"))); err == nil || !strings.Contains(err.Error(), "not a Go heap dump") {
		t.Errorf("reading a file that is no dump: %v", err)
	}
}
