// Command rvpctl administers an RVP deployment over NATS: it shows the
// state of the streams, replays the audit log, lists the directory,
// verifies that projections equal a rebuild from their streams, and
// changes the directory as an administrator through the directory
// service.
//
// Usage:
//
//	rvpctl [-nats URL] [-json] <command> [flags]
//
// "rvpctl -h" lists the commands: they are a table (commands), from which
// the usage text is made.
//
// Flags can also be set from the environment: -nats is RVP_NATS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := exec(ctx, os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "rvpctl:", err)
		os.Exit(1)
	}
}

// global holds the flags every command shares.
type global struct {
	nats string
	json bool
	out  io.Writer
}

func exec(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) error {
	cmds := commands()
	fs := flag.NewFlagSet("rvpctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { writeUsage(stderr, cmds); fmt.Fprintln(stderr, "\nflags:"); fs.PrintDefaults() }
	g := global{out: stdout}
	fs.StringVar(&g.nats, "nats", "nats://127.0.0.1:4222", "NATS URL of the cluster (rvpd dev listens on nats://127.0.0.1:4222)")
	fs.BoolVar(&g.json, "json", false, "print JSON lines instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if v, ok := lookupEnv("RVP_NATS"); ok && !flagGiven(fs, "nats") {
		g.nats = v
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no command given")
	}
	return dispatch(ctx, &env{global: g, stdin: stdin, stderr: stderr, lookupEnv: lookupEnv}, cmds, fs.Args())
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// table prints rows as aligned columns.
func table(w io.Writer, rows [][]string) {
	widths := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c + strings.Repeat(" ", widths[i]-len([]rune(c))+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
