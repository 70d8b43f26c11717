package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// messages: each pair's first user sends the second instant messages in a
// closed loop (the next once the last is answered) for msgDuration. Every
// message is unique and checked at the recipient's Call-Back: each one
// answered 200 must have arrived exactly once, unchanged and in order,
// and nothing else may arrive.
func (b *bench) messages(t *target, round int) (result, error) {
	c := b.cfg
	type pairLog struct {
		sent, failed, got []string
	}
	logs := make([]pairLog, c.pairs)
	recipient := map[string]int{}
	for p := range c.pairs {
		recipient[userName(b.msgFirst+2*p+1)] = p
	}
	var mu sync.Mutex
	var stray atomic.Int64
	t.sink.handle(func(n notification) {
		text, ok := messageText(n.body)
		if !ok {
			return // presence
		}
		p, ok := recipient[n.alias]
		if !ok {
			stray.Add(1)
			return
		}
		mu.Lock()
		logs[p].got = append(logs[p].got, text)
		mu.Unlock()
	})
	defer t.sink.handle(nil)
	var firstErr atomic.Value
	wall, cpu, err := measure(t, func() error {
		deadline := time.Now().Add(c.msgDuration)
		var wg sync.WaitGroup
		for p := range c.pairs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from, to := userName(b.msgFirst+2*p), userName(b.msgFirst+2*p+1)
				for i := 0; time.Now().Before(deadline); i++ {
					// Characters XML and MIME could mangle, and a unique tag.
					text := fmt.Sprintf("round %d %s→%s #%d <&> %08x", round, from, to, i, rand.Uint32())
					status, err := t.client.send(from, to, text)
					mu.Lock()
					if err == nil && status == 200 {
						logs[p].sent = append(logs[p].sent, text)
					} else {
						logs[p].failed = append(logs[p].failed, text)
						if err == nil {
							err = fmt.Errorf("message %s→%s answered %d", from, to, status)
						}
						firstErr.CompareAndSwap(nil, err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return nil
	})
	if err != nil {
		return result{}, err
	}
	// A duplicate could still be on its way: give it a moment.
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var sent, failed, lost, dup, altered, disordered int
	for p, l := range logs {
		sent += len(l.sent)
		failed += len(l.failed)
		seen := map[string]int{}
		for _, s := range l.got {
			seen[s]++
		}
		pairLost, pairAltered := 0, 0
		for _, s := range l.sent {
			if seen[s] == 0 {
				pairLost++
			}
		}
		for s, n := range seen {
			if n > 1 {
				dup += n - 1
			}
			if !slices.Contains(l.sent, s) && !slices.Contains(l.failed, s) {
				pairAltered++
				if altered+pairAltered <= 3 {
					progress(b.log, "  pair %d received a text never sent: %q", p, s)
				}
			}
		}
		lost += pairLost
		altered += pairAltered
		if len(l.failed) == 0 && pairLost == 0 && pairAltered == 0 && !slices.Equal(deduplicate(l.got), l.sent) {
			disordered++
		}
	}
	if err, ok := firstErr.Load().(error); ok {
		progress(b.log, "  first failed message: %v", err)
	}
	if failed > 0 || lost > 0 || dup > 0 || altered > 0 || stray.Load() > 0 || disordered > 0 {
		b.fail("messages to %s, round %d: %d answered 200, %d failed, %d lost, %d duplicated, %d altered, %d to a wrong user, %d pairs out of order",
			t.name, round, sent, failed, lost, dup, altered, stray.Load(), disordered)
	}
	return result{ops: sent, wall: wall, cpu: cpu, errors: failed}, nil
}

// deduplicate returns s without repeats, in first-seen order.
func deduplicate(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// fanOut: the fan-out user changes its state, changes times, each once
// every watcher has been told the one before (or a minute has passed).
// The rate is watchers told per second from each PROPPATCH sent to the
// last notification it caused, the latencies from each PROPPATCH sent to
// each notification.
func (b *bench) fanOut(t *target, round int) (result, error) {
	c := b.cfg
	publisher := userName(b.fanFirst)
	watchers := map[string]bool{}
	for i := range c.watchers {
		watchers[userName(b.fanFirst+1+i)] = true
	}
	var mu sync.Mutex
	var state string
	var arrived map[string]time.Time
	var done chan struct{}
	dups := 0
	t.sink.handle(func(n notification) {
		st, from, ok := notifiedState(n.body)
		if !ok || !watchers[n.alias] || !strings.HasSuffix(from, "/"+publisher) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if st != state {
			return
		}
		if _, seen := arrived[n.alias]; seen {
			dups++
			return
		}
		arrived[n.alias] = n.at
		if len(arrived) == len(watchers) {
			close(done)
		}
	})
	defer t.sink.handle(nil)
	var r result
	var lat []time.Duration
	_, cpu, err := measure(t, func() error {
		for k := range c.changes {
			mu.Lock()
			state = []string{"busy", "away", "on-phone", "at-lunch"}[((round-1)*c.changes+k)%4]
			arrived, done = map[string]time.Time{}, make(chan struct{})
			wait := done
			mu.Unlock()
			start := time.Now()
			if err := t.client.setState(publisher, state); err != nil {
				return err
			}
			select {
			case <-wait:
			case <-time.After(time.Minute):
			}
			mu.Lock()
			last := time.Duration(0)
			for _, at := range arrived {
				lat = append(lat, at.Sub(start))
				last = max(last, at.Sub(start))
			}
			told := len(arrived)
			mu.Unlock()
			r.ops += told
			r.wall += last
			if told < c.watchers {
				b.fail("fan-out on %s, round %d: %d of %d watchers told %s within a minute", t.name, round, told, c.watchers, state)
				r.errors += c.watchers - told
			}
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	r.cpu = cpu
	if len(lat) == 0 {
		r.wall = time.Minute
		return r, nil
	}
	slices.Sort(lat)
	r.p50, r.p99 = percentile(lat, 50), percentile(lat, 99)
	if dups > 0 {
		progress(b.log, "  %d notifications told a watcher a state twice", dups)
	}
	return r, nil
}

// percentile returns the p-th percentile of sorted values (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// login: loginUsers users not signed in yet sign in with presence,
// concurrency at a time.
func (b *bench) login(t *target, round int) (result, error) {
	c := b.cfg
	first := b.loginFirst + (round-1)*c.loginUsers
	var failed int
	wall, cpu, err := measure(t, func() error {
		failed = b.parallel(c.loginUsers, c.concurrency, func(i int) error { return signIn(t, userName(first+i)) })
		return nil
	})
	if failed > 0 {
		b.fail("login on %s, round %d: %d of %d users could not sign in", t.name, round, failed, c.loginUsers)
	}
	return result{ops: c.loginUsers - failed, wall: wall, cpu: cpu, errors: failed}, err
}

// buddyLogin: buddyUsers users sign in as librvp does with a buddy list:
// login, presence, then a subscription to each buddy (chosen among the
// users signing in in the same run; the same lists for every server). The
// server pushes each online buddy's state to the subscriber: one NOTIFY
// for each pair, at the subscription or when the buddy comes online. The
// run ends when the last of them has come (a server may answer before it
// has told the watchers: a sign-in is done when the buddy list shows who
// is online).
func (b *bench) buddyLogin(t *target, round int) (result, error) {
	c := b.cfg
	first := b.buddyFirst + (round-1)*c.buddyUsers
	rng := rand.New(rand.NewPCG(uint64(round), 20))
	lists := make([][]string, c.buddyUsers)
	for i := range lists {
		picked := map[int]bool{i: true}
		for len(lists[i]) < c.buddies {
			j := rng.IntN(c.buddyUsers)
			if !picked[j] {
				picked[j] = true
				lists[i] = append(lists[i], userName(first+j))
			}
		}
	}
	var failed int
	var told, want int64
	wall, cpu, err := measure(t, func() error {
		told0 := t.sink.count.Load()
		failed = b.parallel(c.buddyUsers, c.concurrency, func(i int) error {
			user := userName(first + i)
			if err := signIn(t, user); err != nil {
				return err
			}
			for _, buddy := range lists[i] {
				if err := t.client.watch(user, buddy); err != nil {
					return err
				}
			}
			return nil
		})
		want = int64((c.buddyUsers - failed) * c.buddies)
		deadline := time.Now().Add(time.Minute)
		for told = t.sink.count.Load() - told0; told < want && time.Now().Before(deadline); told = t.sink.count.Load() - told0 {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	if failed > 0 {
		b.fail("buddies on %s, round %d: %d of %d users could not sign in with their buddies", t.name, round, failed, c.buddyUsers)
	}
	if told < want {
		b.fail("buddies on %s, round %d: %d of %d watchers told their buddy is online within a minute of the last sign-in", t.name, round, told, want)
	}
	return result{ops: c.buddyUsers - failed, wall: wall, cpu: cpu, errors: failed}, err
}

// memoryRow is a server's memory before any load and with its users
// online.
type memoryRow struct {
	target      string
	online      int64
	before, now memory
	signInTook  time.Duration
	signInUsers int
	// rest is the memory once the server has been idle for -rest since
	// the last sign-ins (past 10 s): JetStream keeps a block's 8 MB write and
	// read buffer for 10 s after its last use, and Go's pools keep what
	// they hold until a second collection; neither is a user's.
	rest memory
	// settled is the memory read the same way -settle after the last
	// sign-ins, past the streams' windows of duplicate ids (zero: not
	// read).
	settled memory
}

// target returns the server named name.
func (b *bench) target(name string) *target {
	for _, t := range b.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

// atRest reads each filled server's memory once it has been idle for
// -rest, collecting its garbage twice (a pool's contents go at the
// second collection); and again at -settle, when that is later.
func (b *bench) atRest() error {
	start := time.Now()
	time.Sleep(b.cfg.restAfter)
	if err := b.readAll(func(m *memoryRow, t *target) error {
		rest, err := t.memoryAtRest()
		if err != nil {
			return err
		}
		m.rest = rest
		if b.cfg.heapProfiles != "" && t.profiles != "" {
			return t.saveHeapProfile(filepath.Join(b.cfg.heapProfiles, t.name+"-rest.heap"))
		}
		return nil
	}); err != nil {
		return err
	}
	if b.cfg.settleAfter <= b.cfg.restAfter {
		return nil
	}
	time.Sleep(time.Until(start.Add(b.cfg.settleAfter)))
	return b.readAll(func(m *memoryRow, t *target) (err error) {
		if m.settled, err = t.memoryAtRest(); err != nil {
			return err
		}
		if b.cfg.heapProfiles != "" && t.profiles != "" {
			return t.saveHeapProfile(filepath.Join(b.cfg.heapProfiles, t.name+"-settled.heap"))
		}
		return nil
	})
}

// readAll calls read for each filled server still running.
func (b *bench) readAll(read func(*memoryRow, *target) error) error {
	for i := range b.memory {
		m := &b.memory[i]
		if t := b.target(m.target); t != nil && t.down == nil {
			if err := read(m, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// memoryAtRest reads t's memory after a second collection (a pool's
// contents go at the second).
func (t *target) memoryAtRest() (memory, error) {
	if _, err := t.memory(); err != nil {
		return memory{}, err
	}
	return t.memory()
}

// halfRow is a server's memory at rest with about half its users online.
type halfRow struct {
	online int64
	rest   memory
}

// half signs in, on every server, the users after the scenarios' until
// half of the users are online, leaves the servers idle for -rest and
// reads their memory as atRest does: with the figure at rest once all
// are online, the memory each user added takes, without what the servers
// hold whatever the number of users (or what the scenarios left).
func (b *bench) half() error {
	c := b.cfg
	n := c.users/2 - (b.restFirst - 1)
	if n <= 0 {
		progress(b.log, "the scenarios' users are half of the users or more: no figure with half online")
		return nil
	}
	for _, t := range b.targets {
		if t.down != nil {
			continue
		}
		progress(b.log, "%s: signing in %d users, to half of them", t.name, n)
		if failed := b.parallel(n, c.concurrency, func(i int) error { return signIn(t, userName(b.restFirst+i)) }); failed > 0 {
			b.fail("%s: %d of %d users could not sign in", t.name, failed, n)
		}
	}
	b.restNext = b.restFirst + n
	time.Sleep(c.restAfter)
	b.halfway = map[string]halfRow{}
	for _, t := range b.targets {
		if t.down != nil {
			continue
		}
		m, err := t.memoryAtRest()
		if err != nil {
			return err
		}
		b.halfway[t.name] = halfRow{online: t.online.Load(), rest: m}
	}
	return nil
}

// fill signs in every user not signed in yet, then measures the server's
// memory.
func (b *bench) fill(t *target) error {
	c := b.cfg
	n := c.users - b.restNext + 1
	progress(b.log, "%s: signing in the other %d users", t.name, n)
	start := time.Now()
	if failed := b.parallel(n, c.concurrency, func(i int) error { return signIn(t, userName(b.restNext+i)) }); failed > 0 {
		b.fail("%s: %d of %d users could not sign in", t.name, failed, n)
	}
	took := time.Since(start)
	m, err := t.memory()
	if err != nil {
		return err
	}
	if c.heapProfiles != "" && t.profiles != "" {
		if err := t.saveHeapProfile(filepath.Join(c.heapProfiles, t.name+".heap")); err != nil {
			return err
		}
	}
	b.memory = append(b.memory, memoryRow{target: t.name, online: t.online.Load(), before: t.mem0, now: m, signInTook: took, signInUsers: n})
	return nil
}
