// Command rvpd is the RVP instant-messaging and presence server: a drop-in
// replacement for Exchange 2000 Instant Messaging built on NATS JetStream.
//
// Usage:
//
//	rvpd dev [flags]    every role and an embedded NATS server in one process
//	rvpd node [flags]   the roles given, against an existing NATS cluster
//
// Every flag can also be set from the environment: -nats.sync is
// RVP_NATS_SYNC. A flag given on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	err := exec(context.Background(), os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "rvpd:", err)
		os.Exit(1)
	}
}

const usage = `usage: rvpd <mode> [flags]

modes:
  dev     run every role (gateway, home node, router) and an embedded NATS
          server in one process, with a demo IM domain; for development
  node    run the roles given (-gateway, -home, -router, -admin) against an
          existing NATS cluster; for production, one or more per site

Run "rvpd <mode> -h" for the flags of a mode.
`

// exec is main without the process: tests call it.
func exec(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no mode given")
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], lookupEnv, stdout, stderr)
	case "node":
		return runNode(ctx, args[1:], lookupEnv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown mode %q", args[0])
}

// parseFlags parses args, then fills every flag not given from the
// environment variable RVP_<NAME> (dots and dashes become underscores).
func parseFlags(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; flags come as -name value", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := "RVP_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(f.Name))
		if v, ok := lookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
