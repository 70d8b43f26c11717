package main

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// spanBytes is the span length of each small size class, by object size:
// Go's size classes (internal/runtime/gc/sizeclasses.go, unchanged since
// Go 1.21). An object of another size is a large one, in a span of its
// own.
var spanBytes = map[uint64]uint64{
	8: 8192, 16: 8192, 24: 8192, 32: 8192, 48: 8192, 64: 8192, 80: 8192, 96: 8192, 112: 8192, 128: 8192, 144: 8192,
	160: 8192, 176: 8192, 192: 8192, 208: 8192, 224: 8192, 240: 8192, 256: 8192, 288: 8192, 320: 8192, 352: 8192,
	384: 8192, 416: 8192, 448: 8192, 480: 8192, 512: 8192, 576: 8192, 640: 8192, 704: 8192, 768: 8192, 896: 8192,
	1024: 8192, 1152: 8192, 1280: 8192, 1408: 16384, 1536: 8192, 1792: 16384, 2048: 8192, 2304: 16384, 2688: 8192,
	3072: 24576, 3200: 16384, 3456: 24576, 4096: 8192, 4864: 24576, 5376: 16384, 6144: 24576, 6528: 32768,
	6784: 40960, 6912: 49152, 8192: 8192, 9472: 57344, 9728: 49152, 10240: 40960, 10880: 32768, 12288: 24576,
	13568: 40960, 14336: 57344, 16384: 16384, 18432: 73728, 19072: 57344, 20480: 40960, 21760: 65536, 24576: 24576,
	27264: 81920, 28672: 57344, 32768: 32768,
}

// sizeClass is what a heap dump holds of one size class: the spans its
// live objects are in, and the room left in them.
type sizeClass struct {
	size, spans, objects uint64
	// sites counts the sampled objects (GODEBUG=memprofilerate) of this
	// size by where they were allocated.
	sites map[string]int
}

func (c sizeClass) room() uint64 { return c.spans*spanBytes[c.size] - c.objects*c.size }

// heapDump is what spans reads of a heap dump.
type heapDump struct {
	classes map[uint64]*sizeClass
	large   struct{ objects, bytes uint64 }
}

// runSpans reads a Go heap dump (runtime/debug.WriteHeapDump; rvpd serves
// one at /debug/heapdump on its -pprof listener) and prints, for each size
// class, the spans its live objects are in and the room left in them: the
// Go heap's "rest of its spans in use", class by class, which a heap
// profile does not show. An object's span is found from its address and
// size (spanBase). Where the process ran with GODEBUG=memprofilerate=N, the
// dump names where a sample of the objects was allocated, and -sites
// prints the commonest for the classes with the most room.
func runSpans(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpload spans", flag.ContinueOnError)
	fs.SetOutput(stderr)
	top := fs.Int("top", 20, "size classes to print, those with the most room first")
	sites := fs.Int("sites", 0, "allocation sites to print for each class printed (needs a dump of a process run with GODEBUG=memprofilerate=N)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: rvpload spans [-top N] [-sites N] DUMP")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := readHeapDump(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	classes := slices.SortedFunc(maps.Values(d.classes), func(a, b *sizeClass) int { return cmp.Compare(b.room(), a.room()) })
	var objects, bytes, room uint64
	for _, c := range classes {
		objects, bytes, room = objects+c.objects, bytes+c.objects*c.size, room+c.room()
	}
	fmt.Fprintf(stdout, "small objects: %d, %d bytes; room in their spans: %d bytes; large objects: %d, %d bytes\n\n",
		objects, bytes, room, d.large.objects, d.large.bytes)
	fmt.Fprintln(stdout, "| size | spans | objects | bytes | room | fill |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|")
	for _, c := range classes[:min(*top, len(classes))] {
		fmt.Fprintf(stdout, "| %d | %d | %d | %d | %d | %.1f%% |\n", c.size, c.spans, c.objects, c.objects*c.size, c.room(),
			100*float64(c.objects*c.size)/float64(c.spans*spanBytes[c.size]))
	}
	if *sites > 0 {
		for _, c := range classes[:min(*top, len(classes))] {
			if len(c.sites) == 0 {
				continue
			}
			fmt.Fprintf(stdout, "\n%d B, sampled objects by where they were allocated:\n", c.size)
			keys := slices.SortedFunc(maps.Keys(c.sites), func(a, b string) int { return cmp.Compare(c.sites[b], c.sites[a]) })
			for _, k := range keys[:min(*sites, len(keys))] {
				fmt.Fprintf(stdout, "  %5d  %s\n", c.sites[k], k)
			}
		}
	}
	return nil
}

// The records of a heap dump (runtime/heapdump.go).
const (
	tagEOF             = 0
	tagObject          = 1
	tagOtherRoot       = 2
	tagType            = 3
	tagGoroutine       = 4
	tagStackFrame      = 5
	tagParams          = 6
	tagFinalizer       = 7
	tagItab            = 8
	tagOSThread        = 9
	tagMemStats        = 10
	tagQueuedFinalizer = 11
	tagData            = 12
	tagBSS             = 13
	tagDefer           = 14
	tagPanic           = 15
	tagMemProf         = 16
	tagAllocSample     = 17
)

// dumpReader reads a heap dump's fields, keeping the first error.
type dumpReader struct {
	r   *bufio.Reader
	err error
}

func (r *dumpReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.r)
	r.err = err
	return v
}

func (r *dumpReader) uvarints(n int) {
	for range n {
		r.uvarint()
	}
}

// skip discards n bytes.
func (r *dumpReader) skip(n uint64) {
	if r.err == nil {
		_, r.err = r.r.Discard(int(n))
	}
}

func (r *dumpReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	b := make([]byte, n)
	_, r.err = io.ReadFull(r.r, b)
	return string(b)
}

// fields skips a field list: kind and offset pairs, up to a kind 0.
func (r *dumpReader) fields() {
	for r.err == nil && r.uvarint() != 0 {
		r.uvarint()
	}
}

// readHeapDump reads the objects of a heap dump into size classes, and
// the allocation sites of the sampled ones.
func readHeapDump(br *bufio.Reader) (*heapDump, error) {
	const header = "go1.7 heap dump\n"
	h := make([]byte, len(header))
	if _, err := io.ReadFull(br, h); err != nil || string(h) != header {
		return nil, fmt.Errorf("not a Go heap dump (its first line is not %q)", strings.TrimSpace(header))
	}
	d := &heapDump{classes: map[uint64]*sizeClass{}}
	r := &dumpReader{r: br}
	spans := map[[2]uint64]bool{}  // size, base
	size := map[uint64]uint64{}    // sampled objects' sizes, by address
	buckets := map[uint64]string{} // allocation sites, by bucket
	var samples [][2]uint64        // object, bucket
	for {
		tag := r.uvarint()
		if r.err != nil {
			break // a dump ends with its EOF record, never short of it
		}
		switch tag {
		case tagEOF:
			for _, s := range samples {
				if c := d.classes[size[s[0]]]; c != nil {
					if c.sites == nil {
						c.sites = map[string]int{}
					}
					c.sites[buckets[s[1]]]++
				}
			}
			return d, nil
		case tagObject:
			addr, n := r.uvarint(), r.uvarint()
			r.skip(n)
			r.fields()
			span, small := spanBytes[n]
			if !small {
				d.large.objects++
				d.large.bytes += n
				continue
			}
			size[addr] = n
			c := d.classes[n]
			if c == nil {
				c = &sizeClass{size: n}
				d.classes[n] = c
			}
			c.objects++
			if base := spanBase(addr, n, span); !spans[[2]uint64{n, base}] {
				spans[[2]uint64{n, base}] = true
				c.spans++
			}
		case tagOtherRoot:
			r.str()
			r.uvarint()
		case tagType:
			r.uvarints(2)
			r.str()
			r.skip(1)
		case tagGoroutine:
			r.uvarints(5)
			r.skip(2)
			r.uvarint()
			r.str()
			r.uvarints(4)
		case tagStackFrame:
			r.uvarints(3)
			r.skip(r.uvarint())
			r.uvarints(3)
			r.str()
			r.fields()
		case tagParams:
			r.skip(1)
			r.uvarints(3)
			r.str()
			r.str()
			r.uvarint()
		case tagFinalizer, tagQueuedFinalizer:
			r.uvarints(5)
		case tagItab:
			r.uvarints(2)
		case tagOSThread:
			r.uvarints(3)
		case tagMemStats:
			r.uvarints(24 + 256 + 1)
		case tagData, tagBSS:
			r.uvarint()
			r.skip(r.uvarint())
			r.fields()
		case tagDefer:
			r.uvarints(7)
		case tagPanic:
			r.uvarints(6)
		case tagMemProf:
			b := r.uvarint()
			r.uvarint()
			var frames []string
			for i, n := 0, r.uvarint(); i < int(n) && r.err == nil; i++ {
				fn := r.str()
				r.str()
				r.uvarint()
				if i > 0 && len(frames) < 4 { // the first is the allocator's own
					frames = append(frames, fn[strings.LastIndexByte(fn, '/')+1:])
				}
			}
			r.uvarints(2)
			buckets[b] = strings.Join(frames, " < ")
		case tagAllocSample:
			samples = append(samples, [2]uint64{r.uvarint(), r.uvarint()})
		default:
			return nil, fmt.Errorf("unknown record %d", tag)
		}
	}
	if errors.Is(r.err, io.EOF) {
		return nil, errors.New("the dump ends short of its last record: cut off?")
	}
	return nil, fmt.Errorf("reading the dump: %w", r.err)
}

// spanBase returns the start of the span of span bytes holding the object
// of size bytes at addr: spans begin on a page (8 KiB) and hold objects
// from their start, one after the other; of the pages a span that long
// could begin on, one only is a whole number of objects away.
func spanBase(addr, size, span uint64) uint64 {
	const page = 8192
	for p := addr &^ (page - 1); p+span > addr; p -= page {
		if (addr-p)%size == 0 {
			return p
		}
		if p < page {
			break
		}
	}
	return addr &^ (page - 1)
}
