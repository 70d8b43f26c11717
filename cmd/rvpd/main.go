// Command rvpd is the RVP instant-messaging and presence server: a drop-in
// replacement for Exchange 2000 Instant Messaging built on NATS JetStream.
//
// Usage:
//
//	rvpd dev [flags]    every role and an embedded NATS server in one process
//	rvpd init [flags]   set up an empty NATS cluster: streams, key, first administrator
//	rvpd node [flags]   the roles given, against an existing NATS cluster
//
// Every flag can also be set from the environment as RVPD_<FLAG>:
// -log.level is RVPD_LOG_LEVEL. A flag given on the command line wins.
// rvpd reads no other variables but RVPD_CLUSTER_KEY (the cluster key
// itself); rvpctl's are RVPCTL_<NAME>, so neither program can take the
// other's settings.
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
	err := execIn(context.Background(), os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "rvpd:", err)
		os.Exit(1)
	}
}

const usage = `usage: rvpd <mode> [flags]

modes:
  dev     run every role (gateway, home node, router) and an embedded NATS
          server in one process, with a demo IM domain; for development
  init    set up an empty NATS cluster for production: streams, cluster key,
          the first organisation administrator (then rvpctl does the rest)
  node    run the roles given (-gateway, -home, -router, -admin) against an
          existing NATS cluster; for production, one or more per site

Run "rvpd <mode> -h" for the flags of a mode.
`

// exec is main without the process and with an empty standard input:
// tests call it.
func exec(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	return execIn(ctx, args, lookupEnv, strings.NewReader(""), stdout, stderr)
}

// execIn is main without the process.
func execIn(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no mode given")
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], lookupEnv, stdout, stderr)
	case "node":
		return runNode(ctx, args[1:], lookupEnv, stdout, stderr)
	case "init":
		return runInit(ctx, args[1:], lookupEnv, stdin, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown mode %q", args[0])
}

// envPrefix begins the name of every environment variable rvpd reads:
// its own, so that no other program's (rvpctl's are RVPCTL_) can reach it.
const envPrefix = "RVPD_"

// envClusterKey is the environment variable that may hold the cluster
// key (64 hex digits), instead of a file.
const envClusterKey = envPrefix + "CLUSTER_KEY"

// envName is the environment variable of flag name: RVPD_ and the name
// upper-cased, dots and dashes as underscores.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))
}

// setUsage makes fs's -h say how it is used and where else its flags
// come from.
func setUsage(fs *flag.FlagSet, synopsis string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\n"+
			"Every flag can also be set in the environment as %s<FLAG>, dots and dashes as\n"+
			"underscores (-log.level is %s); a flag given here wins. rvpd reads no\n"+
			"other variable but %s (the cluster key itself).\n\nflags:\n",
			synopsis, envPrefix, envName("log.level"), envClusterKey)
		fs.PrintDefaults()
	}
}

// parseFlags parses args, then fills every flag not given from its
// environment variable (envName).
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
		env := envName(f.Name)
		if v, ok := lookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
