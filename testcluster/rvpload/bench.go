package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// config is the benchmark's settings.
type config struct {
	rvpd        string
	users       int
	rounds      int
	pairs       int
	msgDuration time.Duration
	watchers    int
	changes     int
	loginUsers  int
	buddyUsers  int
	buddies     int
	concurrency int
	syncModes   []string
	work        string
	password    string
	memory      bool
	// marginal, with memory, first signs in users until half of them
	// are online, and reads the memory at rest there too.
	marginal bool
	// restart kills each server at the end, starts it again and signs
	// every user back in (restartWave).
	restart   bool
	verify    bool
	restAfter time.Duration
	// settleAfter is when the memory is read once more (0: not).
	settleAfter time.Duration
	scenarios   []string
	rvpdArgs    []string
	compare     string
	// heapProfiles, when set, is where each server's heap profile is
	// written with all its users online.
	heapProfiles string
	// heapDumps: with heapProfiles, each rvpd's heap dump too.
	heapDumps bool
}

// target is one server under test.
type target struct {
	name   string
	proc   *proc
	client *client
	sink   *sink
	online atomic.Int64 // users signed in with presence
	// profiles is the URL of the server's Go profiles, "" if it has none.
	profiles string
	// nats is the address of its NATS listener, "" if it has none.
	nats string
	mem0 memory // before any load
	// genCPU is the load generator's CPU time while measuring this server.
	genCPU time.Duration
	// down is why the server was left out of the rest of the run.
	down error
	// dumps: save its heap dump with each heap profile (-heap-dumps).
	dumps bool
	// bin, args and ready are how it was started, to start it again.
	bin   string
	args  []string
	ready *regexp.Regexp
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var syncModes string
	fs.StringVar(&c.rvpd, "rvpd", "bin/rvpd", "the rvpd binary to measure")
	fs.StringVar(&c.heapProfiles, "heap-profiles", "", "directory to write each server's heap profiles to, at start, with all users online, at rest and settled (for go tool pprof -base)")
	fs.BoolVar(&c.heapDumps, "heap-dumps", false, "with -heap-profiles, each rvpd's heap dump too (its /debug/heapdump; rvpload spans reads it); it stops the server's world for about a second")
	fs.StringVar(&c.compare, "compare", "", "another rvpd binary (an earlier build) to measure in the same run, as before-<sync>")
	fs.IntVar(&c.users, "users", 10000, "users in the directory (rvpd dev -demo-users), all online for the memory figure")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds: each scenario runs once per round against each server, in turn")
	fs.IntVar(&c.pairs, "pairs", 100, "messages: pairs of users sending each other messages in a closed loop")
	fs.DurationVar(&c.msgDuration, "msg-duration", 5*time.Second, "messages: how long each run lasts")
	fs.IntVar(&c.watchers, "watchers", 1000, "fan-out: watchers of the user whose state changes")
	fs.IntVar(&c.changes, "changes", 5, "fan-out: state changes per run, one after the other")
	fs.IntVar(&c.loginUsers, "login-users", 1000, "login: users signing in per run")
	fs.IntVar(&c.buddyUsers, "buddy-users", 1000, "buddies: users signing in with a buddy list per run")
	fs.IntVar(&c.buddies, "buddies", 20, "buddies: the length of each buddy list")
	fs.IntVar(&c.concurrency, "concurrency", 50, "login and buddies: users signing in at the same time")
	fs.StringVar(&syncModes, "sync", "default,always", `rvpd -nats.sync settings to measure, each in its own process ("default" is the server's)`)
	fs.StringVar(&c.work, "work", "", "directory for the servers' data and logs (default: a new temporary one, removed afterwards)")
	fs.StringVar(&c.password, "password", "load-test-pw", "the users' password")
	fs.BoolVar(&c.memory, "memory", true, "sign in every remaining user at the end and report resident memory per online user")
	fs.BoolVar(&c.marginal, "marginal", false, "memory: first sign users in until half are online and read the memory at rest there too, for the memory each user added takes (the last sign-ins before the figures read 1 s after are then the second half only)")
	fs.DurationVar(&c.restAfter, "rest", 15*time.Second, "memory: how long the servers are left idle before their memory at rest is read (JetStream keeps a block's buffer 10 s)")
	fs.DurationVar(&c.settleAfter, "settle", 130*time.Second, "memory: when, after the last sign-ins, the memory is read once more: past the streams' windows of duplicate message ids (45 s for requests, 2 min for facts), which hold the id of every recent message whatever the number of users online; 0 (or not past -rest): not read again")
	fs.BoolVar(&c.restart, "restart", true, "at the end, kill each server (SIGKILL), start it again on its data and sign every user back in: a restart's wave of sign-ins")
	fs.BoolVar(&c.verify, "verify", true, "at the end, have each rvpd verify its projections (rvpctl verify) and report how fast it rebuilt them")
	scenarios := fs.String("scenarios", "messages,fan-out,login,buddies", "scenarios to run")
	rvpdArgs := fs.String("rvpd-args", "", `more flags for rvpd dev, e.g. "-ops 127.0.0.1:9191" (its profiles are at the address rvpload prints as it starts it)`)
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file (its share of the machine's CPUs counts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	c.syncModes = strings.Split(syncModes, ",")
	c.scenarios = strings.Split(*scenarios, ",")
	c.rvpdArgs = strings.Fields(*rvpdArgs)
	for _, sc := range c.scenarios {
		if scenarioRuns[sc] == nil {
			return fmt.Errorf("-scenarios: no scenario %q", sc)
		}
	}
	need := 2*c.pairs + 1 + c.watchers + c.rounds*(c.loginUsers+c.buddyUsers)
	if need > c.users {
		return fmt.Errorf("the scenarios need %d users and -users is %d; raise -users or lower the others", need, c.users)
	}
	if c.buddies >= c.buddyUsers {
		return fmt.Errorf("-buddies %d needs more than that many -buddy-users", c.buddies)
	}
	if c.work == "" {
		dir, err := os.MkdirTemp("", "rvpload-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.work = dir
	}
	if err := os.MkdirAll(c.work, 0o750); err != nil {
		return err
	}
	if c.heapProfiles != "" {
		if err := os.MkdirAll(c.heapProfiles, 0o750); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The machine first, before any server runs.
	speed, err := measureMachine()
	if err != nil {
		return err
	}
	progress(stderr, "this machine: %v", speed)
	var targets []*target
	defer func() {
		for _, t := range targets {
			if err := t.proc.stop(); err != nil {
				progress(stderr, "stop %s: %v (log %s)", t.name, err, t.proc.log.Name())
			}
			t.sink.close()
		}
	}()
	// start runs a server; with profiles (pprof: a -pprof flag it takes)
	// its Go heap is measured too.
	// Its profiles' address is printed: the -pprof rvpload gives it comes
	// after -rvpd-args, so it is the one to profile a run through.
	start := func(name, bin string, pprof bool, natsAddr string, ready *regexp.Regexp, args ...string) error {
		profiles := ""
		if pprof {
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			profiles = "http://" + addr + "/debug/pprof/"
			args = append(args, "-pprof", addr)
			progress(stderr, "starting %s (profiles at %s)", name, profiles)
		} else {
			progress(stderr, "starting %s", name)
		}
		p, err := startProc(name, bin, filepath.Join(c.work, name+".log"), ready, args...)
		if err != nil {
			return err
		}
		s, err := newSink()
		if err != nil {
			return err
		}
		t := &target{name: name, proc: p, sink: s, profiles: profiles, nats: natsAddr, client: &client{addr: p.addr, ntDomain: "EXAMPLE", password: c.password},
			bin: bin, args: args, ready: ready, dumps: c.heapDumps}
		targets = append(targets, t)
		return nil
	}
	if err := start("relay", self, true, "", regexp.MustCompile(`relay listening on http://(\S+)`), "relay", "-password", c.password); err != nil {
		return err
	}
	binaries := []struct{ label, bin string }{{"rvpd", c.rvpd}}
	if c.compare != "" {
		binaries = append(binaries, struct{ label, bin string }{"before", c.compare})
	}
	for _, bin := range binaries {
		has, err := devFlags(bin.bin)
		if err != nil {
			return err
		}
		for _, mode := range c.syncModes {
			name := bin.label + "-" + mode
			natsAddr := ""
			if c.verify {
				// rvpctl verify's way in.
				if natsAddr, err = freeAddr(); err != nil {
					return err
				}
			}
			args := []string{"dev", "-reset", "-data", filepath.Join(c.work, name), "-http", "127.0.0.1:0", "-nats", natsAddr,
				"-demo-users", fmt.Sprint(c.users), "-demo-password", c.password, "-log.level", "warn"}
			if mode != "default" {
				args = append(args, "-nats.sync", mode)
			}
			if has["limit.messages"] && has["limit.bytes"] {
				// Capacity is measured, as the relay has no limits: the
				// per-sender rate limits would cap the message pairs.
				args = append(args, "-limit.messages", "0", "-limit.bytes", "0")
			}
			if has["limit.bytes.day"] {
				args = append(args, "-limit.bytes.day", "0")
			}
			if bin.label == "rvpd" {
				args = append(args, c.rvpdArgs...)
			}
			if err := start(name, bin.bin, has["pprof"], natsAddr, regexp.MustCompile(`listening on http://(\S+)`), args...); err != nil {
				return err
			}
		}
	}

	// The memory at start is read at rest too: rvpd dev has just
	// written its demo users' directory events.
	time.Sleep(c.restAfter)
	for _, t := range targets {
		var err error
		if t.mem0, err = t.memoryAtRest(); err != nil {
			return err
		}
		if c.heapProfiles != "" && t.profiles != "" {
			if err := t.saveHeapProfile(filepath.Join(c.heapProfiles, t.name+"-start.heap")); err != nil {
				return err
			}
		}
	}
	b := &bench{cfg: c, targets: targets, log: stderr, machine: speed}
	if err := b.run(); err != nil {
		return err
	}
	b.report(stdout)
	if b.failures > 0 {
		return fmt.Errorf("%d checks failed (see above)", b.failures)
	}
	return nil
}

// devFlags returns the flags an rvpd binary's dev mode takes (an earlier
// build may lack some), from its -h.
func devFlags(bin string) (map[string]bool, error) {
	out, _ := exec.Command(bin, "dev", "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(line, "  -"); ok {
			flags[strings.Fields(name)[0]] = true
		}
	}
	if !flags["demo-users"] {
		return nil, fmt.Errorf("%s dev has no -demo-users flag (is it rvpd, of this branch or later?):\n%s", bin, out)
	}
	return flags, nil
}

// bench runs the scenarios and keeps their results.
type bench struct {
	cfg      config
	targets  []*target
	log      io.Writer
	machine  machine
	results  []result
	memory   []memoryRow
	verified []verifyRow
	restarts []restartRow
	failures int
	// the users of each scenario: user<first>...
	msgFirst, fanFirst, loginFirst, buddyFirst, restFirst int
	// halfway is the memory of each server at rest with half the users
	// online (-marginal), by server; restNext is the first user the last
	// sign-ins (fill) begin with.
	halfway  map[string]halfRow
	restNext int
}

// scenarioRuns are the scenarios by name.
var scenarioRuns = map[string]func(*bench, *target, int) (result, error){
	"messages": (*bench).messages, "fan-out": (*bench).fanOut, "login": (*bench).login, "buddies": (*bench).buddyLogin,
}

// result is one run of a scenario against one server.
type result struct {
	scenario string
	target   string
	round    int
	ops      int           // messages, notifications or users
	wall     time.Duration // from the first request to the last answer (or notification)
	cpu      time.Duration // of the server process
	gen      time.Duration // of the load generator (this process) meanwhile
	p50, p99 time.Duration // fan-out: notification latency
	errors   int
}

func (r result) perSecond() float64 { return float64(r.ops) / r.wall.Seconds() }
func (r result) perCPU() float64 {
	if r.cpu <= 0 {
		return 0
	}
	return float64(r.ops) / r.cpu.Seconds()
}

// fail records a failed check.
func (b *bench) fail(format string, args ...any) {
	b.failures++
	progress(b.log, "FAIL: "+format, args...)
}

func (b *bench) run() error {
	c := b.cfg
	b.msgFirst = 1
	b.fanFirst = b.msgFirst + 2*c.pairs
	b.loginFirst = b.fanFirst + 1 + c.watchers
	b.buddyFirst = b.loginFirst + c.rounds*c.loginUsers
	b.restFirst = b.buddyFirst + c.rounds*c.buddyUsers
	b.restNext = b.restFirst
	for _, t := range b.targets {
		progress(b.log, "%s: signing in %d message users and %d watchers", t.name, 2*c.pairs, c.watchers+1)
		if err := b.setup(t); err != nil {
			return fmt.Errorf("%s: setup: %w", t.name, err)
		}
	}
	for round := 1; round <= c.rounds; round++ {
		// Each round takes the servers in another order.
		order := append(append([]*target(nil), b.targets[(round-1)%len(b.targets):]...), b.targets[:(round-1)%len(b.targets)]...)
		for _, sc := range c.scenarios {
			run := scenarioRuns[sc]
			for _, t := range order {
				if t.down != nil {
					continue
				}
				notes0, gen0 := t.sink.count.Load(), t.genCPU
				r, err := run(b, t, round)
				if err != nil {
					// A server that stopped is reported, and the others
					// go on.
					t.down = err
					b.fail("%s against %s, round %d: %v; %s is left out from here on (its log: %s)", sc, t.name, round, err, t.name, t.proc.log.Name())
					continue
				}
				r.scenario, r.target, r.round, r.gen = sc, t.name, round, t.genCPU-gen0
				b.results = append(b.results, r)
				progress(b.log, "round %d %-8s %-13s %7d in %6.2fs: %9.1f/s, %9.1f per CPU-s%s (%d NOTIFYs received)", round, sc, t.name, r.ops, r.wall.Seconds(), r.perSecond(), r.perCPU(), latencies(r), t.sink.count.Load()-notes0)
			}
		}
	}
	if c.memory {
		if c.marginal {
			if err := b.half(); err != nil {
				return fmt.Errorf("memory with half the users online: %w", err)
			}
		}
		for _, t := range b.targets {
			if t.down != nil {
				continue
			}
			if err := b.fill(t); err != nil {
				return fmt.Errorf("%s: memory: %w", t.name, err)
			}
		}
		if err := b.atRest(); err != nil {
			return fmt.Errorf("memory at rest: %w", err)
		}
	}
	if c.restart {
		b.restartWave()
	}
	if c.verify {
		for _, t := range b.targets {
			if t.down != nil || t.nats == "" {
				continue
			}
			if err := b.verify(t); err != nil {
				b.fail("%s: %v", t.name, err)
			}
		}
	}
	return nil
}

func latencies(r result) string {
	if r.p99 == 0 {
		return ""
	}
	return fmt.Sprintf(", p50 %v p99 %v", r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond))
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns the
// errors, the first few of which it prints.
func (b *bench) parallel(n, workers int, f func(i int) error) (failed int) {
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					if bad.Add(1) <= 3 {
						mu.Lock()
						progress(b.log, "  error: %v", err)
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	return int(bad.Load())
}

// signIn is a login with presence, as librvp does it.
func signIn(t *target, user string) error {
	if err := t.client.login(user, t.sink.callback(user)); err != nil {
		return err
	}
	if err := t.client.setState(user, "online"); err != nil {
		return err
	}
	t.online.Add(1)
	return nil
}

// setup signs in the message pairs, the fan-out user and its watchers,
// who subscribe to it.
func (b *bench) setup(t *target) error {
	c := b.cfg
	var users []string
	for i := range 2*c.pairs + 1 + c.watchers {
		users = append(users, userName(b.msgFirst+i))
	}
	if n := b.parallel(len(users), c.concurrency, func(i int) error { return signIn(t, users[i]) }); n > 0 {
		return fmt.Errorf("%d of %d users could not sign in", n, len(users))
	}
	publisher := userName(b.fanFirst)
	if n := b.parallel(c.watchers, c.concurrency, func(i int) error {
		return t.client.watch(userName(b.fanFirst+1+i), publisher)
	}); n > 0 {
		return fmt.Errorf("%d of %d watchers could not subscribe", n, c.watchers)
	}
	return nil
}

// measure runs f and returns its wall time and the CPU time the server
// used meanwhile; the load generator's own CPU time meanwhile is added to
// t.genCPU (it shares the machine's CPUs with the server).
func measure(t *target, f func() error) (wall, cpu time.Duration, err error) {
	cpu0, err := t.proc.cpu()
	if err != nil {
		return 0, 0, err
	}
	gen0 := ownCPU()
	start := time.Now()
	err = f()
	wall = time.Since(start)
	cpu1, cerr := t.proc.cpu()
	t.genCPU += ownCPU() - gen0
	return wall, cpu1 - cpu0, errors.Join(err, cerr)
}

// ownCPU returns the CPU time (user + system) this process has used.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
