// Command rvpload is the load benchmark (`make bench-load`): it starts
// `rvpd dev` as its own process with N users (-demo-users), once per
// durability setting, and a bare relay process (`rvpload relay`, the
// baseline: only what the protocol forces), and runs the same scenarios
// against each in turn, round after round, over real HTTP on loopback,
// signing in with NTLM on every connection as librvp does:
//
//   - messages: pairs of users sending each other instant messages in a
//     closed loop; every message is checked at its recipient's Call-Back
//     (none lost, duplicated or altered);
//   - fan-out: one user's state change told to every watcher;
//   - login: users signing in (login SUBSCRIBE, PROPPATCH online);
//   - buddies: users signing in and subscribing to a buddy list;
//   - memory: resident memory with every user online.
//
// It prints each rate per second of wall time and per CPU-second of the
// server process (from /proc/<pid>/stat), and each ratio to the relay's
// in the same round. docs/performance.md explains the figures.
//
// Usage:
//
//	rvpload -rvpd bin/rvpd [flags]   the benchmark
//	rvpload relay [flags]            the bare relay alone
//	rvpload spans [flags] DUMP       a heap dump's size classes: spans and room
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "relay":
		err = runRelay(os.Args[2:], os.Stdout, os.Stderr)
	case len(os.Args) > 1 && os.Args[1] == "spans":
		err = runSpans(os.Args[2:], os.Stdout, os.Stderr)
	default:
		err = runBench(os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "rvpload:", err)
		os.Exit(1)
	}
}

// progress writes a line of progress to w.
func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, format+"\n", args...)
}
