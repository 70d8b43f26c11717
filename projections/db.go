package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// DB is a Pebble database holding one or more projections.
type DB struct {
	pdb     *pebble.DB
	scratch bool
}

// Options configure Open.
type Options struct {
	// Logger receives Pebble's own messages at debug level. Default: discard.
	Logger *slog.Logger
	// InMemory keeps the database in memory (tests, rebuild comparisons).
	InMemory bool
	// Scratch is for a throwaway copy written at full speed (a rebuild
	// to compare with): no write-ahead log, large memtables.
	Scratch bool
	// CacheSize is the size of Pebble's block cache, in bytes. Default
	// DefaultCacheSize.
	CacheSize int64
	// MemTableSize is the size of each of Pebble's memtables, in bytes.
	// Default DefaultMemTableSize.
	MemTableSize int64
}

// Defaults of Options, written once: rvpd's flags read them. Both are
// memory held outside the Go heap (Pebble allocates them through cgo) for
// as long as the process runs, whatever the number of users. A home node
// keeps the state it reads on every request in its own cache
// (Home.Logins, Views, ACL ...), and the directory is in memory, so the
// block cache serves their misses only; docs/performance.md ("Memory per
// online user, fourth pass") has what smaller sizes cost in throughput.
const (
	DefaultCacheSize    = 8 << 20
	DefaultMemTableSize = 4 << 20
)

// Open opens (creating if needed) the database in dir.
func Open(dir string, o Options) (*DB, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	popts := &pebble.Options{
		FormatMajorVersion:          pebble.FormatNewest,
		CacheSize:                   o.CacheSize,
		MemTableSize:                uint64(o.MemTableSize),
		MemTableStopWritesThreshold: 2,
		MaxOpenFiles:                500,
		Logger:                      pebbleLogger{log},
	}
	// Most of a home node's point reads miss (an ACL never written, a
	// subscription id not there yet): a Bloom filter answers those without
	// reading the tables' blocks. L0's is inherited by the levels below.
	popts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	if o.InMemory {
		popts.FS = vfs.NewMem()
	}
	if o.Scratch {
		popts.DisableWAL = true
		popts.MemTableSize = 64 << 20
		popts.MemTableStopWritesThreshold = 4
		// A scratch copy is read once and thrown away: compacting what
		// its flushes wrote gains it nothing. Pebble compacted the
		// 10,000-buddy store's two flushes (24 MB) into L6 all the same,
		// 12-16% of the rebuild's CPU (BenchmarkRebuildStore); from 16
		// sublevels on it does, so that a rebuild of a far larger store
		// still reads its own writes through few tables.
		popts.L0CompactionThreshold = 16
		popts.L0StopWritesThreshold = 64
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("open pebble at %s: %w", dir, err)
	}
	return &DB{pdb: pdb, scratch: o.Scratch}, nil
}

// Close flushes and closes the database.
func (d *DB) Close() error {
	if d.scratch {
		return d.pdb.Close()
	}
	if err := d.pdb.Flush(); err != nil {
		d.pdb.Close()
		return fmt.Errorf("flush pebble: %w", err)
	}
	return d.pdb.Close()
}

// pebbleLogger sends Pebble's messages to slog. Fatalf panics, because
// Pebble's call sites (corruption, broken invariants) assume it does not
// return.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) { // each flush and compaction tells of itself
		l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "pebble")
	}
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "component", "pebble", "fatal", true)
	panic("pebble: " + msg)
}

// Keys are built from components separated by 0x00; every variable
// component is an events.Token (which never contains 0x00), so a prefix
// never matches a longer name (alice vs alicia).

func key(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// prefixOf returns key(parts...) followed by the separator: every key
// below it.
func prefixOf(parts ...string) []byte { return append(key(parts...), 0) }

// upperBound returns the first key after every key with prefix p.
func upperBound(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func be64(v uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

func be32(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return string(b[:])
}

// reader is what both *pebble.DB and an indexed *pebble.Batch offer.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// get returns a copy of the value at k, or nil when there is none.
func get(r reader, k []byte) (out []byte, err error) {
	_, err = with(r, k, func(v []byte) error {
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// with calls fn with the value at k, valid only during the call; it
// reports whether there is one.
func with(r reader, k []byte, fn func(v []byte) error) (bool, error) {
	v, c, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer c.Close()
	return true, fn(v)
}

func getUint64(r reader, k []byte) (uint64, error) {
	v, err := get(r, k)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("key %q: want 8 bytes, have %d", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// scan calls fn for every key with prefix p, in order.
func scan(r reader, p []byte, fn func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: upperBound(p)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

// diff compares the keys and values under prefix p in a and b, walking
// both in key order, and describes up to max differences ("" means
// equal); it also returns how many keys a holds there.
func diff(a, b reader, p []byte, max int) (string, int, error) {
	bounds := &pebble.IterOptions{LowerBound: p, UpperBound: upperBound(p)}
	ia, err := a.NewIter(bounds)
	if err != nil {
		return "", 0, err
	}
	defer ia.Close()
	ib, err := b.NewIter(bounds)
	if err != nil {
		return "", 0, err
	}
	defer ib.Close()
	var out []string
	n := 0
	okA, okB := ia.First(), ib.First()
	for okA || okB {
		c := 0
		switch {
		case !okB:
			c = -1
		case !okA:
			c = 1
		default:
			c = bytes.Compare(ia.Key(), ib.Key())
		}
		switch {
		case c < 0:
			out = append(out, fmt.Sprintf("only in live: %q = %q", ia.Key(), ia.Value()))
		case c > 0:
			out = append(out, fmt.Sprintf("only in rebuilt: %q = %q", ib.Key(), ib.Value()))
		case !bytes.Equal(ia.Value(), ib.Value()):
			out = append(out, fmt.Sprintf("differs at %q: live %q, rebuilt %q", ia.Key(), ia.Value(), ib.Value()))
		}
		if c <= 0 {
			n++
			okA = ia.Next()
		}
		if c >= 0 {
			okB = ib.Next()
		}
	}
	if err := errors.Join(ia.Error(), ib.Error()); err != nil {
		return "", n, err
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("… and %d more", len(out)-max))
	}
	return strings.Join(out, "\n"), n, nil
}

// commitSorted commits what indexed batch b (built by the caller, not
// committed) writes as one batch holding, in key order, the last write to
// each key: the state it leaves is b's. Pebble inserts a batch into its
// memtable in the batch's order, searching the skiplist afresh for each
// key; in key order it takes up the search where the last key left it.
// The profile of a rebuild put the memtable's insert at a fifth of the
// CPU. The keys come sorted from b's own index; only its deletions are
// sorted here. A batch with other writes than sets and deletes (a range
// deletion), or not indexed, is committed as it is.
func commitSorted(db *pebble.DB, b *pebble.Batch, opts *pebble.WriteOptions) error {
	if !b.Indexed() {
		return b.Commit(opts)
	}
	var deleted [][]byte
	r := b.Reader()
	for {
		kind, k, _, ok, err := r.Next()
		if err != nil {
			return fmt.Errorf("read batch: %w", err)
		}
		if !ok {
			break
		}
		switch kind {
		case pebble.InternalKeyKindSet:
		case pebble.InternalKeyKindDelete:
			deleted = append(deleted, k)
		default:
			return b.Commit(opts)
		}
	}
	slices.SortFunc(deleted, bytes.Compare)
	deleted = slices.CompactFunc(deleted, bytes.Equal)
	// What b leaves set, newest value of each key, in key order.
	it, err := b.NewBatchOnlyIter(context.Background(), nil)
	if err != nil {
		return err
	}
	defer it.Close()
	sb := db.NewBatchWithSize(len(b.Repr()))
	defer sb.Close()
	for ok := it.First(); ok || len(deleted) > 0; {
		var err error
		if ok && (len(deleted) == 0 || bytes.Compare(deleted[0], it.Key()) >= 0) {
			if len(deleted) > 0 && bytes.Equal(deleted[0], it.Key()) {
				deleted = deleted[1:] // deleted, then set again
			}
			err = sb.Set(it.Key(), it.Value(), nil)
			ok = it.Next()
		} else {
			err = sb.Delete(deleted[0], nil)
			deleted = deleted[1:]
		}
		if err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	return sb.Commit(opts)
}
