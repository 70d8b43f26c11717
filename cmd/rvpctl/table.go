package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// command is one rvpctl command: its name, usage, flags and what runs it.
// The usage text (rvpctl -h, rvpctl <area>, rvpctl <command> -h) is made
// from these fields; nothing else lists the commands.
type command struct {
	// name is the words typed: "status", "user enable".
	name string
	// args are the positional arguments: required ones bare ("USER@DOMAIN"),
	// optional ones in brackets.
	args string
	// help says what it does, in a line.
	help string
	// admin commands are done as an administrator, through the directory
	// service: they take -admin and -admin-password-file, and run with a
	// directory client.
	admin bool
	// needs are flags shown without brackets in the usage: the directory
	// service refuses the request without them.
	needs []string
	// flags declares the command's flags on fs and returns what runs it
	// with the positional arguments.
	flags func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, e *env, args []string) error

// noFlags is the flags of a command that has none.
func noFlags(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

// required returns the number of required positional arguments.
func (c command) required() int {
	n := 0
	for _, w := range strings.Fields(c.args) {
		if !strings.HasPrefix(w, "[") {
			n++
		}
	}
	return n
}

// flagSet returns the command's flag set and its run.
func (c command) flagSet(e *env) (*flag.FlagSet, runFunc, *adminFlags) {
	fs := flag.NewFlagSet("rvpctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	run := c.flags(fs)
	var af *adminFlags
	if c.admin {
		af = &adminFlags{}
		fs.StringVar(&af.name, "admin", "", "administrator `name` (default: RVPCTL_ADMIN, else admin)")
		fs.StringVar(&af.passwordFile, "admin-password-file", "", "`file` holding the administrator's password (default: RVPCTL_ADMIN_PASSWORD, else a prompt)")
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: rvpctl %s\n  %s\n", c.synopsis(), c.help)
		fs.PrintDefaults()
	}
	return fs, run, af
}

type adminFlags struct{ name, passwordFile string }

// synopsis is the command's usage line: name, arguments and its own flags.
func (c command) synopsis() string {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs)
	parts := []string{c.name}
	if c.args != "" {
		parts = append(parts, c.args)
	}
	var optional []string
	fs.VisitAll(func(f *flag.Flag) {
		s := "-" + f.Name
		if name, _ := flag.UnquoteUsage(f); name != "" {
			s += " " + name
		}
		if slices.Contains(c.needs, f.Name) {
			parts = append(parts, s) // needed flags first
		} else {
			optional = append(optional, "["+s+"]")
		}
	})
	return strings.Join(append(parts, optional...), " ")
}

// usage writes the usage of cmds: each synopsis and what it does.
func usage(w io.Writer, cmds []command) {
	for _, c := range cmds {
		syn := c.synopsis()
		if len(syn) <= 40 {
			fmt.Fprintf(w, "  %-40s %s\n", syn, c.help)
			continue
		}
		fmt.Fprintf(w, "  %s\n  %-40s %s\n", syn, "", c.help)
	}
}

// writeUsage writes rvpctl's whole usage, generated from the table.
func writeUsage(w io.Writer, cmds []command) {
	fmt.Fprint(w, "usage: rvpctl [-nats URL] [-nats.creds FILE] [-nats.tls-ca FILE] [-nats.tls-cert FILE -nats.tls-key FILE] [-json] <command> [flags]\n\ncommands:\n")
	var admin []command
	for _, c := range cmds {
		if c.admin {
			admin = append(admin, c)
		} else {
			usage(w, []command{c})
		}
	}
	fmt.Fprint(w, "\nadministration, as an administrator (-admin or RVPCTL_ADMIN, and -admin-password-file\nor RVPCTL_ADMIN_PASSWORD, else a prompt):\n")
	usage(w, admin)
	fmt.Fprint(w, "\nrvpctl reads no environment variables but RVPCTL_NATS (and RVPCTL_NATS_CREDS,\nRVPCTL_NATS_TLS_CA, RVPCTL_NATS_TLS_CERT, RVPCTL_NATS_TLS_KEY for the -nats.* flags),\nRVPCTL_ADMIN and RVPCTL_ADMIN_PASSWORD (rvpd's are RVPD_<FLAG>).\n")
}

// find returns the command args start with and the arguments after its
// name; area is set when args name an area ("user") but no command of it.
func find(cmds []command, args []string) (c command, rest []string, area []command) {
	for n := min(2, len(args)); n > 0; n-- {
		name := strings.Join(args[:n], " ")
		for _, c := range cmds {
			if c.name == name {
				return c, args[n:], nil
			}
		}
	}
	for _, c := range cmds {
		if strings.HasPrefix(c.name, args[0]+" ") {
			area = append(area, c)
		}
	}
	return command{}, nil, area
}

// dispatch runs the command args name.
func dispatch(ctx context.Context, e *env, cmds []command, args []string) error {
	c, rest, area := find(cmds, args)
	if c.name == "" {
		if len(area) > 0 {
			usage(e.stderr, area)
			if len(args) == 1 {
				return fmt.Errorf("%s: no action given", args[0])
			}
			return fmt.Errorf("unknown command %q", strings.Join(args[:2], " "))
		}
		writeUsage(e.stderr, cmds)
		return fmt.Errorf("unknown command %q", args[0])
	}
	fs, run, af := c.flagSet(e)
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) < c.required() {
		return fmt.Errorf("rvpctl %s: %s missing", c.name, strings.Fields(c.args)[len(pos)])
	}
	if len(pos) > len(strings.Fields(c.args)) {
		return fmt.Errorf("rvpctl %s: unexpected arguments %q (usage: rvpctl %s)", c.name, pos[len(strings.Fields(c.args)):], c.synopsis())
	}
	if af != nil {
		client, done, err := e.adminClient(af.name, af.passwordFile)
		if err != nil {
			return err
		}
		defer done()
		e.admin = client
		return hint(run(ctx, e, pos))
	}
	return run(ctx, e, pos)
}

// parseInterspersed parses flags that may come after positional arguments
// (rvpctl user enable alice@example.com -home home1) and returns the
// positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
