package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"
)

var units = map[string]string{"messages": "messages", "fan-out": "notifications", "login": "users", "buddies": "users"}

// report prints the results as Markdown tables: every run, then for each
// scenario and server the medians over the rounds and the median of the
// ratios to the relay's run in the same round.
func (b *bench) report(w io.Writer) {
	c := b.cfg
	fmt.Fprintf(w, "rvpload %s: %d CPUs, %s; %d users, %d rounds; messages: %d pairs for %v; fan-out: %d watchers × %d changes; login: %d users; buddies: %d users × %d buddies; %d at a time\n\n",
		time.Now().UTC().Format(time.DateTime), runtime.NumCPU(), runtime.Version(), c.users, c.rounds, c.pairs, c.msgDuration, c.watchers, c.changes, c.loginUsers, c.buddyUsers, c.buddies, c.concurrency)
	fmt.Fprintf(w, "This machine at the start: %v. Absolute figures move with these; the ratios to the relay do not.\n\n", b.machine)

	fmt.Fprintln(w, "| scenario | server | relay /s | server /s | ratio /s | relay /CPU-s | server /CPU-s | ratio /CPU-s | p99 relay | p99 server |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, sc := range c.scenarios {
		relay := b.byRound(sc, "relay")
		for _, t := range b.targets {
			if t.name == "relay" {
				continue
			}
			mine := b.byRound(sc, t.name)
			var rate, cpu, relayRate, relayCPU, ratio, ratioCPU []float64
			var p99, relayP99 []time.Duration
			for round, r := range mine {
				rr, ok := relay[round]
				rate, cpu = append(rate, r.perSecond()), append(cpu, r.perCPU())
				p99 = append(p99, r.p99)
				if !ok {
					continue
				}
				relayRate, relayCPU = append(relayRate, rr.perSecond()), append(relayCPU, rr.perCPU())
				relayP99 = append(relayP99, rr.p99)
				ratio = append(ratio, r.perSecond()/rr.perSecond())
				if rr.perCPU() > 0 {
					ratioCPU = append(ratioCPU, r.perCPU()/rr.perCPU())
				}
			}
			p99s := func(d []time.Duration) string {
				if len(d) == 0 || slices.Max(d) == 0 {
					return "—"
				}
				return median(d).Round(time.Millisecond).String()
			}
			fmt.Fprintf(w, "| %s (%s) | %s | %.0f | %.0f | %.3f | %.0f | %.0f | %.3f | %s | %s |\n", sc, units[sc], t.name,
				median(relayRate), median(rate), median(ratio), median(relayCPU), median(cpu), median(ratioCPU), p99s(relayP99), p99s(p99))
		}
	}
	if c.compare != "" {
		fmt.Fprintln(w, "\n| scenario | sync | rvpd/before /s | rvpd/before /CPU-s |")
		fmt.Fprintln(w, "|---|---|---|---|")
		for _, sc := range c.scenarios {
			for _, mode := range c.syncModes {
				after, before := b.byRound(sc, "rvpd-"+mode), b.byRound(sc, "before-"+mode)
				var rate, cpu []float64
				for round, r := range after {
					if rb, ok := before[round]; ok {
						rate = append(rate, r.perSecond()/rb.perSecond())
						if rb.perCPU() > 0 {
							cpu = append(cpu, r.perCPU()/rb.perCPU())
						}
					}
				}
				fmt.Fprintf(w, "| %s | %s | %.3f | %.3f |\n", sc, mode, median(rate), median(cpu))
			}
		}
	}
	fmt.Fprintln(w, "\nEach figure is the median over the rounds; a ratio is the server's rate over the relay's in the same round (median over the rounds). /CPU-s counts the CPU time of the server's process only.")

	if len(b.memory) > 0 {
		fmt.Fprintln(w, "\n| server | users online | resident at start | resident with all online | growth per online user | Go heap in use at start | with all online | growth per online user | last sign-ins |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, m := range b.memory {
			per := func(a, b int64) string { return kib(float64(b-a) / float64(max(m.online, 1))) }
			heap := "— | — | —"
			if m.now.heap > 0 {
				heap = fmt.Sprintf("%s | %s | %s", mib(m.before.heap), mib(m.now.heap), per(m.before.heap, m.now.heap))
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %d in %.1fs (%.0f/s) |\n", m.target, m.online, mib(m.before.rss), mib(m.now.rss),
				per(m.before.rss, m.now.rss), heap, m.signInUsers, m.signInTook.Seconds(), float64(m.signInUsers)/m.signInTook.Seconds())
		}
		fmt.Fprintln(w, "\nMemory is read after the server has collected its garbage (asked through its profiles, where it serves them) and a second has passed.")
		restTable(w, b.memory, "at rest", func(m memoryRow) memory { return m.rest })
		fmt.Fprintf(w, "\nAt rest: the same servers, users still online, after %v idle and two collections (JetStream keeps each block's buffer, 8 MB, for 10 s after its last use; a pool's contents go at the second collection). Growth is from the figures at start, read the same way once the servers had started (rvpd dev writes its demo users' directory events as it starts).\n", b.cfg.restAfter)
		if b.cfg.settleAfter > b.cfg.restAfter {
			restTable(w, b.memory, "settled", func(m memoryRow) memory { return m.settled })
			fmt.Fprintf(w, "\nSettled: read again the same way %v after the last sign-ins, past the streams' windows of duplicate message ids (45 s for requests, 2 min for facts): JetStream keeps the id of every message stored within its window, however many users are online, so the load's last minutes weigh on the figure at rest and not on this one.\n", b.cfg.settleAfter)
		}
		settled := b.cfg.settleAfter > b.cfg.restAfter
		head, rule := "| server | part of the resident memory | at start | 1 s after the last sign-ins | at rest | growth per online user, 1 s after | at rest |", "|---|---|---|---|---|---|---|"
		if settled {
			head, rule = head+" settled | growth per online user, settled |", rule+"---|---|"
		}
		fmt.Fprintln(w, "\n"+head)
		fmt.Fprintln(w, rule)
		for _, m := range b.memory {
			start, now, rest, later := m.before.parts(), m.now.parts(), m.rest.parts(), m.settled.parts()
			if start == nil || now == nil || rest == nil || settled && later == nil {
				continue
			}
			per := func(a, b int64) string { return kib(float64(b-a) / float64(max(m.online, 1))) }
			for i, name := range partNames {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |", m.target, name, mib(start[i]), mib(now[i]), mib(rest[i]), per(start[i], now[i]), per(start[i], rest[i]))
				if settled {
					fmt.Fprintf(w, " %s | %s |", mib(later[i]), per(start[i], later[i]))
				}
				fmt.Fprintln(w)
			}
		}
		fmt.Fprintln(w, "\nThe resident memory at start, 1 s after the last sign-ins, at rest (and settled), split by what holds it: the process's resident pages backed by files, and the Go runtime's own figures (MemStats) read a second after the collection, right before the resident memory; the rest is what the Go runtime does not hold.")
		if len(b.halfway) > 0 {
			fmt.Fprintln(w, "\n| server | users online | resident at rest | Go heap at rest | users online | resident at rest | Go heap at rest | resident per added user | Go heap per added user |")
			fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
			for _, m := range b.memory {
				h, ok := b.halfway[m.target]
				if !ok || m.rest.rss == 0 || m.online <= h.online {
					continue
				}
				added := float64(m.online - h.online)
				heapHalf, heapAll, heapPer := "—", "—", "—"
				if m.rest.heap > 0 && h.rest.heap > 0 {
					heapHalf, heapAll, heapPer = mib(h.rest.heap), mib(m.rest.heap), kib(float64(m.rest.heap-h.rest.heap)/added)
				}
				fmt.Fprintf(w, "| %s | %d | %s | %s | %d | %s | %s | %s | %s |\n", m.target, h.online, mib(h.rest.rss), heapHalf, m.online, mib(m.rest.rss),
					heapAll, kib(float64(m.rest.rss-h.rest.rss)/added), heapPer)
			}
			fmt.Fprintln(w, "\nPer added user: the growth at rest from about half the users online to all of them, over the users added (-marginal): what each further user takes, without what a server holds whatever its users (Pebble's cache and memtables, fixed-size rings) or what the scenarios left; JetStream's deduplication ids of the added users' sign-ins are in it while its window lasts. The last sign-ins before the figures read 1 s after were then the second half only.")
		}
	}

	if len(b.restarts) > 0 {
		fmt.Fprintln(w, "\n| server | serving again after SIGKILL | users signed back in | in | /s | server CPU-s | /CPU-s | ratio to relay /s | ratio /CPU-s | NOTIFYs received | the last after | errors |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
		var relay *result
		for _, r := range b.restarts {
			if r.target == "relay" {
				relay = &r.wave
			}
		}
		for _, r := range b.restarts {
			ratio, ratioCPU := "—", "—"
			if relay != nil && r.target != "relay" {
				ratio = fmt.Sprintf("%.3f", r.wave.perSecond()/relay.perSecond())
				if relay.perCPU() > 0 {
					ratioCPU = fmt.Sprintf("%.3f", r.wave.perCPU()/relay.perCPU())
				}
			}
			last := "—"
			if r.notifies > 0 {
				last = fmt.Sprintf("%.2fs", r.told.Seconds())
			}
			fmt.Fprintf(w, "| %s | %.2fs | %d | %.2fs | %.0f | %.2f | %.0f | %s | %s | %d | %s | %d |\n", r.target, r.serving.Seconds(), r.wave.ops, r.wave.wall.Seconds(),
				r.wave.perSecond(), r.wave.cpu.Seconds(), r.wave.perCPU(), ratio, ratioCPU, r.notifies, last, r.wave.errors)
		}
		fmt.Fprintln(w, "\nA restart's wave: once the rest is measured, each server is killed (SIGKILL), started again on its data and address, and every user signs back in as the login scenario does, the same number at a time. Serving again is from the kill to the server's line saying it listens. The relay starts again empty, having forgotten every subscription, so its wave is sign-ins alone; rvpd keeps them all, and as it takes its home server over from a process that died (which may have left NOTIFYs undelivered) it tells the watchers of the users whose facts were stored within 40 s before the dead process was last known alive (its last fact or lease renewal) their state again (after the rest and the settling, none; an earlier rvpd, given with -compare, may tell every watcher): the ratio is of unequal work, and the NOTIFYs say how unequal. The last NOTIFY's time is from the wave's start; the next server is measured once the NOTIFYs have stopped for a second.")
	}

	if len(b.verified) > 0 {
		fmt.Fprintln(w, "\n| server | facts of home1 rebuilt | in | facts/s | whole verification (home1 and the directory, rebuilt and compared) | its CPU-s | CPU µs per fact | equal |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for _, v := range b.verified {
			fmt.Fprintf(w, "| %s | %d | %.2fs | %.0f | %.2fs | %.2f | %.1f | %v |\n", v.target, v.facts, v.rebuild.Seconds(), v.rate(), v.total.Seconds(),
				v.cpu.Seconds(), float64(v.cpu.Microseconds())/float64(max(v.facts, 1)), v.ok)
		}
		fmt.Fprintln(w, "\nrvpctl verify, asked of each rvpd once the load is over: the rate is the home node's own report of its rebuild of home1 (facts applied over the time taken); the CPU is the whole process's during the whole verification.")
	}

	fmt.Fprintln(w, "\n| round | scenario | server | count | seconds | /s | server CPU-s | /CPU-s | load generator CPU-s | p50 | p99 | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range b.results {
		fmt.Fprintf(w, "| %d | %s | %s | %d | %.2f | %.1f | %.2f | %.1f | %.2f | %s | %s | %d |\n", r.round, r.scenario, r.target, r.ops, r.wall.Seconds(),
			r.perSecond(), r.cpu.Seconds(), r.perCPU(), r.gen.Seconds(), dur(r.p50), dur(r.p99), r.errors)
	}
	fmt.Fprintln(w, "\nThe load generator runs on the same CPUs as the servers: its CPU time while a server was measured is time that server could not have.")
}

// byRound returns a server's results of a scenario by round.
func (b *bench) byRound(scenario, target string) map[int]result {
	m := map[int]result{}
	for _, r := range b.results {
		if r.scenario == scenario && r.target == target {
			m[r.round] = r
		}
	}
	return m
}

func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func dur(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return d.Round(time.Millisecond).String()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }

// restTable prints the memory pick gives of each server (read at rest,
// or settled), in all and per online user.
func restTable(w io.Writer, rows []memoryRow, what string, pick func(memoryRow) memory) {
	fmt.Fprintf(w, "\n| server | users online | resident %s | growth per online user | Go heap in use %s | growth per online user |\n", what, what)
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, m := range rows {
		got := pick(m)
		if got.rss == 0 {
			continue
		}
		per := func(a, b int64) string { return kib(float64(b-a) / float64(max(m.online, 1))) }
		heap := "— | —"
		if got.heap > 0 {
			heap = fmt.Sprintf("%s | %s", mib(got.heap), per(m.before.heap, got.heap))
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", m.target, m.online, mib(got.rss), per(m.before.rss, got.rss), heap)
	}
}
