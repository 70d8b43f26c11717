package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// restartWave is what the sign-in rate is for: each server is killed
// (SIGKILL, as an outage would end it), started again on its data and
// address, and every user signs back in at once, as their clients do when
// the server is back. It reports how long the server took to serve again,
// and then the wave as a scenario ("restart", one round). After the
// scenarios and the memory's sign-ins, rvpd's users all have state
// (logins, views, watchers): each first look at a user reads it from a
// cold store, and as rvpd takes its home server over from the process
// that died it tells the watchers of the users changed lately (within
// 40 s before the process was last known alive) their state again: after
// the rest, none. The relay comes back empty, and tells no one.
func (b *bench) restartWave() {
	c := b.cfg
	for _, t := range b.targets {
		if t.down != nil {
			continue
		}
		progress(b.log, "%s: killing it, starting it again and signing its %d users back in", t.name, c.users)
		took, err := t.restart()
		if err != nil {
			t.down = err
			b.fail("restart of %s: %v; %s is left out from here on", t.name, err, t.name)
			continue
		}
		t.online.Store(0)
		notes0, gen0 := t.sink.count.Load(), t.genCPU
		var failed int
		start := time.Now()
		wall, cpu, err := measure(t, func() error {
			failed = b.parallel(c.users, c.concurrency, func(i int) error { return signIn(t, userName(1+i)) })
			return nil
		})
		if err != nil {
			t.down = err
			b.fail("restart wave on %s: %v", t.name, err)
			continue
		}
		if failed > 0 {
			b.fail("restart wave on %s: %d of %d users could not sign back in", t.name, failed, c.users)
		}
		r := result{scenario: "restart", target: t.name, round: 1, ops: c.users - failed, wall: wall, cpu: cpu, errors: failed, gen: t.genCPU - gen0}
		b.results = append(b.results, r)
		// The watchers are told after the sign-ins are answered: the next
		// server's measures wait until the NOTIFYs stop.
		if !quiet(&t.sink.count, time.Second, time.Minute) {
			b.fail("restart wave on %s: NOTIFYs still coming a minute after the last sign-in", t.name)
		}
		row := restartRow{target: t.name, serving: took, wave: r, notifies: t.sink.count.Load() - notes0}
		if row.notifies > 0 {
			row.told = time.Unix(0, t.sink.last.Load()).Sub(start)
		}
		b.restarts = append(b.restarts, row)
		told := ""
		if row.notifies > 0 {
			told = fmt.Sprintf(", the last %.2fs after the wave began", row.told.Seconds())
		}
		progress(b.log, "%s served again %.2fs after it was killed; %d users back in %.2fs: %.1f/s, %.1f per CPU-s (%d NOTIFYs received%s)", t.name, took.Seconds(), r.ops, wall.Seconds(), r.perSecond(), r.perCPU(), row.notifies, told)
	}
}

// restartRow is one server's restart: the time from its kill to serving
// again, and the wave of sign-ins after, with the NOTIFYs its users'
// Call-Backs received meanwhile.
type restartRow struct {
	target   string
	serving  time.Duration
	wave     result
	notifies int64
	// told is when the last of the NOTIFYs came, from the wave's start
	// (0: none came).
	told time.Duration
}

// quiet waits until n has not moved for still, for at most limit; false
// means it was still moving.
func quiet(n *atomic.Int64, still, limit time.Duration) bool {
	last, at := n.Load(), time.Now()
	for end := at.Add(limit); time.Since(at) < still; {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
		if v := n.Load(); v != last {
			last, at = v, time.Now()
		}
	}
	return true
}

// restart kills t's process and starts it again with the same flags but
// on the data it has (no -reset) and the address it served on (the
// watchers' Call-Backs name it); it returns the time from the kill to
// serving.
func (t *target) restart() (time.Duration, error) {
	start := time.Now()
	if err := t.proc.kill(); err != nil {
		return 0, err
	}
	args := slices.DeleteFunc(slices.Clone(t.args), func(a string) bool { return a == "-reset" })
	if i := slices.Index(args, "-http"); i >= 0 && i+1 < len(args) {
		args[i+1] = t.proc.addr
	} else {
		args = append(args, "-http", t.proc.addr)
	}
	p, err := startProc(t.name, t.bin, filepath.Join(filepath.Dir(t.proc.log.Name()), t.name+"-restarted.log"), t.ready, args...)
	if err != nil {
		return 0, err
	}
	if p.addr != t.proc.addr {
		p.stop()
		return 0, fmt.Errorf("started again on %s, not %s", p.addr, t.proc.addr)
	}
	t.proc = p
	return time.Since(start), nil
}
