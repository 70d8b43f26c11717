package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
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
	// No collection meanwhile: the slots of the ones let go would be
	// used again, and the kept ones packed closer.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
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
	// 2,000 objects would fill 63 spans of 32; one kept in ten of 20,000
	// spreads them over about 20,000/32 = 625, each a tenth full.
	if c.spans < 500 || c.spans > c.objects {
		t.Errorf("256-byte class: %d spans for %d objects, one kept in ten: want about 625", c.spans, c.objects)
	}

	// Cut off, at a record's end (the EOF record is the last byte) or in
	// the middle of one: an error, not a smaller heap.
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{len(whole) - 1, len(whole) / 2, 20} {
		if _, err := readHeapDump(bufio.NewReader(strings.NewReader(string(whole[:n])))); err == nil {
			t.Errorf("a dump cut at %d of %d bytes read without an error", n, len(whole))
		}
	}

	// Not a dump: a clear error.
	if _, err := readHeapDump(bufio.NewReader(strings.NewReader("hello"))); err == nil || !strings.Contains(err.Error(), "not a Go heap dump") {
		t.Errorf("reading a file that is no dump: %v", err)
	}
}

// TestSpanOfObject: objects are counted in the spans their addresses and
// sizes put them in, whatever order the dump gives them in.
func TestSpanOfObject(t *testing.T) {
	var b []byte
	uv := func(v uint64) { b = binary.AppendUvarint(b, v) }
	object := func(addr, size uint64) {
		uv(tagObject)
		uv(addr)
		uv(size)
		b = append(b, make([]byte, size)...)
		uv(0) // no pointer fields
	}
	b = append(b, "go1.7 heap dump\n"...)
	// 256-byte objects: one span at 0x100000 with objects at 512 and 1024,
	// the next page's span with one at its start, then the first again.
	object(0x100000+512, 256)
	object(0x102000, 256)
	object(0x100000+1024, 256)
	// 4864-byte objects, in 24 KiB spans of three pages: one at 0x200000
	// and its fourth object (0x200000 + 3*4864, on the span's second
	// page), the other a span starting at 0x206000.
	object(0x200000, 4864)
	object(0x200000+3*4864, 4864)
	object(0x206000+4864, 4864)
	uv(tagEOF)
	d, err := readHeapDump(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []sizeClass{{size: 256, spans: 2, objects: 3}, {size: 4864, spans: 2, objects: 3}} {
		c := d.classes[want.size]
		if c == nil || c.spans != want.spans || c.objects != want.objects {
			t.Errorf("%d-byte class: %+v, want %d spans, %d objects", want.size, c, want.spans, want.objects)
		}
	}
	if c := d.classes[256]; c != nil && c.room() != 2*8192-3*256 {
		t.Errorf("256-byte class's room: %d, want %d", c.room(), 2*8192-3*256)
	}
}
