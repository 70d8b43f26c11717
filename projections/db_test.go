package projections

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rvp-im/rvpd/events"
)

// TestCommitSorted: random batches of sets and deletes (keys written
// several times in a batch, deleted and set again, deleted where an
// earlier batch wrote them) leave the same keys and values committed
// sorted as committed as they are; a batch with a range deletion too.
func TestCommitSorted(t *testing.T) {
	open := func() *DB {
		db, err := Open("", Options{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	plain, sorted := open(), open()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var ops []func(b *pebble.Batch) error
		for range 1 + rng.IntN(300) {
			k := []byte(fmt.Sprintf("k%03d", rng.IntN(200)))
			v := []byte(fmt.Sprintf("v%d-%d", round, rng.IntN(1000)))
			switch rng.IntN(4) {
			case 0:
				ops = append(ops, func(b *pebble.Batch) error { return b.Delete(k, nil) })
			default:
				ops = append(ops, func(b *pebble.Batch) error { return b.Set(k, v, nil) })
			}
		}
		if round == 30 {
			ops = append(ops, func(b *pebble.Batch) error { return b.DeleteRange([]byte("k050"), []byte("k100"), nil) })
		}
		for _, db := range []*DB{plain, sorted} {
			b := db.pdb.NewIndexedBatch()
			for _, op := range ops {
				if err := op(b); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if db == sorted {
				err = commitSorted(db.pdb, b, pebble.NoSync)
			} else {
				err = b.Commit(pebble.NoSync)
			}
			b.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		d, n, err := diff(plain.pdb, sorted.pdb, []byte("k"), 5)
		if err != nil || d != "" {
			t.Fatalf("round %d, %d keys: %v\n%s", round, n, err, d)
		}
		if round == 49 && n < 50 {
			t.Fatalf("only %d keys written", n)
		}
	}
}

// TestNextIDStored: the next id the facts of a batch move is in the
// store once the batch is committed, written once for the batch: a home
// projection opened again reads it.
func TestNextIDStored(t *testing.T) {
	h := memoryHome(t, "h1")
	bob := events.NewUser("example.test", "bob")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var facts []SeqFact
	for i, id := range []int32{3, 9, 4} {
		facts = append(facts, SeqFact{Seq: uint64(i + 1), Fact: &events.SubscriptionCreated{Meta: events.Meta{At: at}, Node: bob, ID: id,
			Kind: events.NotifyPragma, CallBack: "http://10.0.0.1:1", Lifetime: 60, Expires: at.Add(time.Minute)}})
	}
	if err := h.ApplyFacts(facts); err != nil {
		t.Fatal(err)
	}
	again, err := OpenHome(h.db, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if next, err := again.read().NextID(); err != nil || next != 10 {
		t.Fatalf("next id read from the store %d (%v), want 10", next, err)
	}
}
