package projections

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestWatchingCountsWhileApplying: subscribers' counts of watches read
// through the cache while batches are applied (each read that misses the
// cache stores what Pebble held) leave the cache holding the keys there
// are: a count read from Pebble on one side of a batch is never kept
// and then moved by that batch. The reader drops counts as it goes, for
// its reads to miss the cache and store again.
func TestWatchingCountsWhileApplying(t *testing.T) {
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 17))
		facts := randomFacts(rng, 400)
		db, err := Open(t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		h, err := OpenHome(db, "h1")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, k := range watchKeys() {
			if strings.HasPrefix(k, userPrefix) {
				keys = append(keys, k)
			}
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				k := keys[i%len(keys)]
				if i%3 == 0 {
					h.cache.mu.Lock()
					delete(h.cache.watching, newKeyHash().add(k))
					h.cache.mu.Unlock()
				}
				if _, err := h.CountWatching(k, 0, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
		for next := 0; next < len(facts); {
			n := min(1+rng.IntN(8), len(facts)-next)
			if err := h.ApplyBatch(toMsgs(t, facts[next:next+n], uint64(next+1))); err != nil {
				t.Fatal(err)
			}
			next += n
		}
		close(done)
		wg.Wait()
		sameWatching(t, h)
		db.Close()
	}
}
