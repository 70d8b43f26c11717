// Command rvpctl administers an RVP deployment over NATS: it shows the
// state of the streams, replays the audit log, lists the directory,
// verifies that projections equal a rebuild from their streams, and
// changes the directory as an administrator through the directory
// service.
//
// Usage:
//
//	rvpctl [-nats URL] [-nats.creds FILE] [-nats.tls-ca FILE] [-nats.tls-cert FILE -nats.tls-key FILE] [-json] <command> [flags]
//
// "rvpctl -h" lists the commands: they are a table (commands), from which
// the usage text is made.
//
// Its environment variables are its own, RVPCTL_<NAME>, so that none of
// rvpd's (RVPD_<FLAG>) can reach it: -nats is RVPCTL_NATS (-nats.tls-ca
// RVPCTL_NATS_TLS_CA, and so on for -nats.creds, -nats.tls-cert and
// -nats.tls-key), the administrator RVPCTL_ADMIN and
// RVPCTL_ADMIN_PASSWORD.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/width"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
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
	nats       string
	natsClient natsclient.Flags
	json       bool
	out        io.Writer
}

func exec(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) error {
	cmds := commands()
	fs := flag.NewFlagSet("rvpctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { writeUsage(stderr, cmds); fmt.Fprintln(stderr, "\nflags:"); fs.PrintDefaults() }
	g := global{out: stdout}
	fs.StringVar(&g.nats, "nats", "nats://127.0.0.1:4222", "NATS URLs of the cluster, comma-separated (default: RVPCTL_NATS, else where rvpd dev listens)")
	g.natsClient.Register(fs, envName, func(flag string) string { return " (default: " + envName(flag) + ")" })
	fs.BoolVar(&g.json, "json", false, "print JSON lines instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// -nats and -nats.* come from RVPCTL_NATS, RVPCTL_NATS_TLS_CA...
	// when not given.
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if (f.Name != "nats" && !strings.HasPrefix(f.Name, "nats.")) || flagGiven(fs, f.Name) {
			return
		}
		env := envName(f.Name)
		if v, ok := lookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	if err := errors.Join(append(errs, g.natsClient.Validate())...); err != nil {
		return err
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

// table prints rows as aligned columns, each cell as printable shows it,
// aligned by the width it takes on a terminal (cellWidth).
func table(w io.Writer, rows [][]string) {
	shown := make([][]string, len(rows))
	widths := map[int]int{}
	for i, r := range rows {
		shown[i] = make([]string, len(r))
		for j, c := range r {
			shown[i][j] = printable(c)
			widths[j] = max(widths[j], cellWidth(shown[i][j]))
		}
	}
	for _, r := range shown {
		var b strings.Builder
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c + strings.Repeat(" ", widths[i]-cellWidth(c)+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// cellWidth is how many columns of a terminal s takes: two for an East
// Asian wide or full-width character (CJK), none for a combining mark,
// one for the others. s is printable's: it holds no control character.
func cellWidth(s string) int {
	n := 0
	for _, r := range s {
		switch k := width.LookupRune(r).Kind(); {
		case unicode.In(r, unicode.Mn, unicode.Me):
		case k == width.EastAsianWide || k == width.EastAsianFullwidth:
			n += 2
		default:
			n++
		}
	}
	return n
}

// printable returns s as a table or a line for people shows it: what a
// terminal would act on or hide is written as a Go escape (\n, \x1b,
// \u202e), so that text a client chose (a mobile description, an alias,
// a Call-Back) can neither forge a line of the audit nor recolour,
// clear or reorder what follows it. Control characters (C0, DEL, C1),
// format characters (bidi marks, zero-width ones), line and paragraph
// separators and spaces other than ' ' are escaped, and so are bytes
// that are not UTF-8.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// envName is the environment variable of flag name: RVPCTL_ and the
// name upper-cased, dots and dashes as underscores (-nats.tls-ca is
// RVPCTL_NATS_TLS_CA).
func envName(flag string) string {
	return "RVPCTL_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))
}
