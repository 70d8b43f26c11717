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

// rss returns the process's resident memory.
func (p *proc) rss() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// memory is a server's memory: resident, and (when it serves its
// profiles) its Go heap in use after a collection.
type memory struct {
	rss, heap int64
}

// memory measures t's memory; with profiles it first has the server
// collect its garbage, and waits a moment for freed pages to go back.
func (t *target) memory() (memory, error) {
	var m memory
	if t.profiles != "" {
		resp, err := http.Get(t.profiles + "heap?gc=1&debug=1")
		if err != nil {
			return m, fmt.Errorf("%s heap profile: %w", t.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return m, err
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
				m.heap, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		time.Sleep(time.Second)
	}
	var err error
	m.rss, err = t.proc.rss()
	return m, err
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
// path.
func (t *target) saveHeapProfile(path string) error {
	resp, err := http.Get(t.profiles + "heap")
	if err != nil {
		return fmt.Errorf("%s heap profile: %w", t.name, err)
	}
	defer resp.Body.Close()
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
