package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server under test running as its own process.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string // host:port it serves RVP on
	log  *os.File
	done chan error
}

// startProc runs bin with args, its stderr into logPath, and waits until
// a line of its stdout matches ready, whose first group is the address it
// serves on.
func startProc(name, bin, logPath string, ready *regexp.Regexp, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, done: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case p.addr = <-found:
		return p, nil
	case err := <-p.done:
		p.done <- err
		return nil, fmt.Errorf("%s exited before it served (%v); its log: %s", name, err, logPath)
	case <-time.After(3 * time.Minute):
		p.stop()
		return nil, fmt.Errorf("%s did not serve within 3 minutes; its log: %s", name, logPath)
	}
}

// stop sends SIGTERM, and SIGKILL if the process has not ended in 15 s.
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		err = errors.Join(errors.New("did not stop within 15s of SIGTERM; killed"), <-p.done)
	}
	p.log.Close()
	return err
}

// kill ends the process at once (SIGKILL), as an outage would. Its exit
// is left in p.done, for a stop after it.
func (p *proc) kill() error {
	p.cmd.Process.Kill()
	p.done <- <-p.done
	return p.log.Close()
}

// clockTick is USER_HZ, the unit of the CPU times in /proc/<pid>/stat
// (100 on every Linux architecture Go runs on).
const clockTick = 100

// cpu returns the CPU time (user + system) the process has used.
func (p *proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: the fields after the comm, which may
	// hold spaces, start at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", p.cmd.Process.Pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// resident returns the process's resident memory (VmRSS), and of it the
// pages backed by files (RssFile: the binary's, mostly).
func (p *proc) resident() (rss, file int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	kb := func(v string) (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n << 10, err
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if rss, err = kb(v); err != nil {
				return 0, 0, err
			}
			found = true
		}
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			if file, err = kb(v); err != nil {
				return 0, 0, err
			}
		}
	}
	if !found {
		return 0, 0, errors.New("no VmRSS")
	}
	return rss, file, nil
}

// memory is a server's memory: resident, and (when it serves its
// profiles) its Go heap in use after a collection.
type memory struct {
	rss, heap int64
	// file is the resident memory backed by files (the binary).
	file int64
	// The Go runtime's MemStats (when the server serves its profiles),
	// a second after the collection: the heap's spans in use
	// (HeapInuse) and its objects (HeapAlloc: the live ones, and what
	// that second allocated), its free pages not given back to the
	// system (HeapIdle - HeapReleased), and all the runtime holds (Sys -
	// HeapReleased: the heap, stacks, the runtime's own structures).
	heapInuse, heapLive, heapFree, goHeld int64
}

// parts splits the resident memory m into what holds it: the binary's
// pages, the Go heap's objects, the rest of its spans in use (room
// in spans a few live objects keep), its free pages not yet returned,
// the rest of the Go runtime (stacks, GC metadata), and memory outside
// the Go runtime (C allocations: Pebble's cache and memtables). Nil when
// the server does not serve its profiles.
func (m memory) parts() []int64 {
	if m.goHeld == 0 {
		return nil
	}
	return []int64{m.file, m.heapLive, m.heapInuse - m.heapLive, m.heapFree, m.goHeld - m.heapInuse - m.heapFree, m.rss - m.file - m.goHeld}
}

// partNames name the values of memory.parts.
var partNames = []string{"files (the binary)", "Go heap: objects", "Go heap: the rest of its spans in use", "Go heap: free, not returned yet",
	"Go runtime: stacks, GC and other metadata", "the rest: outside the Go runtime (Pebble's cache and memtables), less what the runtime maps untouched"}

// memory measures t's memory; with profiles it first has the server
// collect its garbage, and waits a moment for freed pages to go back.
// The Go runtime's figures of the breakdown (memory.parts) are read
// after that moment, right before the resident memory, so that they add
// up to it.
func (t *target) memory() (memory, error) {
	var m memory
	if t.profiles != "" {
		stats, err := t.memStats(true)
		if err != nil {
			return m, err
		}
		m.heap = stats["HeapInuse"]
		time.Sleep(time.Second)
		if stats, err = t.memStats(false); err != nil {
			return m, err
		}
		m.heapInuse, m.heapLive = stats["HeapInuse"], stats["HeapAlloc"]
		m.heapFree, m.goHeld = stats["HeapIdle"]-stats["HeapReleased"], stats["Sys"]-stats["HeapReleased"]
	}
	var err error
	m.rss, m.file, err = t.proc.resident()
	return m, err
}

// memStats returns the Go runtime's MemStats as the server's heap
// profile gives them, after a collection if gc.
func (t *target) memStats(gc bool) (map[string]int64, error) {
	url := t.profiles + "heap?debug=1"
	if gc {
		url += "&gc=1"
	}
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("%s heap profile: %w", t.name, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	stats := map[string]int64{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = "); ok && strings.HasPrefix(line, "# ") {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				stats[name] = n
			}
		}
	}
	return stats, nil
}

// freeAddr returns a loopback address with a port free now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// saveHeapProfile writes the server's heap profile (go tool pprof) to
// path, and with t.dumps its heap dump (rvpload spans) beside it, as
// .dump, where the server serves one.
func (t *target) saveHeapProfile(path string) error {
	if t.dumps {
		if err := save(strings.TrimSuffix(t.profiles, "pprof/")+"heapdump", strings.TrimSuffix(path, ".heap")+".dump"); err != nil && !errors.Is(err, errNotServed) {
			return fmt.Errorf("%s heap dump: %w", t.name, err)
		}
	}
	if err := save(t.profiles+"heap", path); err != nil {
		return fmt.Errorf("%s heap profile: %w", t.name, err)
	}
	return nil
}

// errNotServed is a 404: the server has no such thing to give.
var errNotServed = errors.New("not served")

// save writes what url answers to path.
func save(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotServed
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
