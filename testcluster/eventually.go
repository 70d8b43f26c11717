package testcluster

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// Eventually calls f until it returns nil or d has passed; then it fails
// the test with f's last error. It polls; it never sleeps to synchronise.
func Eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", d, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// LongTest skips a long fault or load test unless RVP_LONG=1 or -run
// names it: make test stays fast; .ci/run runs it by name.
func LongTest(t testing.TB) {
	t.Helper()
	if os.Getenv("RVP_LONG") == "1" {
		return
	}
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), t.Name()) {
		return
	}
	t.Skipf("long test: run with RVP_LONG=1 or -run %s", t.Name())
}
