package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSmoke runs the load benchmark as make bench-load does, with a few
// users for one round: the relay and rvpd dev as processes, every
// scenario, the message checks, the restart's wave, rvpctl verify (after
// the restart), the report.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd and the relay")
	}
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../../cmd/rvpd", ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(dir, "rvpload"), "-rvpd", filepath.Join(dir, "rvpd"), "-work", filepath.Join(dir, "work"),
		"-users", "60", "-rounds", "1", "-pairs", "3", "-msg-duration", "500ms", "-watchers", "10",
		"-login-users", "10", "-buddy-users", "10", "-buddies", "3", "-concurrency", "4", "-sync", "default", "-rest", "1s", "-settle", "2s",
		"-heap-profiles", filepath.Join(dir, "heap"), "-heap-dumps")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rvpload: %v\n%s\n%s", err, stderr.String(), out)
	}
	for _, want := range []string{
		"| messages (messages) | rvpd-default |", "| fan-out (notifications) | rvpd-default |",
		"| login (users) | rvpd-default |", "| buddies (users) | rvpd-default |",
		"| rvpd-default | 60 |", "| relay | 60 |", "This machine at the start: encoding/json ", " | true |\n", "\nAt rest: ", "| resident settled |", "\nSettled: read again",
		"| serving again after SIGKILL |", "\nA restart's wave: ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// rvpd's heap dump, settled, fetched from its /debug/heapdump and
	// read whole, as rvpload spans reads it.
	f, err := os.Open(filepath.Join(dir, "heap", "rvpd-default-settled.dump"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d, err := readHeapDump(bufio.NewReader(f)); err != nil {
		t.Errorf("rvpd's heap dump: %v", err)
	} else if len(d.classes) < 20 {
		t.Errorf("rvpd's heap dump: objects of %d sizes only", len(d.classes))
	}
	// Each server served again after its kill, and all 60 users signed
	// back in without an error; rvpd told their watchers (the relay,
	// empty, had none to tell).
	for name, notifies := range map[string]string{"relay": `0 \| —`, "rvpd-default": `[1-9][0-9]* \| [0-9.]+s`} {
		if row := regexp.MustCompile(`\| ` + name + ` \| [0-9.]+s \| 60 \| [0-9.]+s \| [^\n]* \| ` + notifies + ` \| 0 \|\n`); !row.Match(out) {
			t.Errorf("no restart row for %s with 60 users back in, NOTIFYs %s, and no error:\n%s", name, notifies, out)
		}
	}
}
