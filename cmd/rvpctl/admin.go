package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// hint makes the directory service's refusals say what to do.
func hint(err error) error {
	var ae *directory.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case directory.CodeUnauthenticated:
			return fmt.Errorf("%s (set RVP_ADMIN and RVP_ADMIN_PASSWORD, or -admin and -admin-password-file)", ae.Msg)
		case directory.CodeForbidden:
			return fmt.Errorf("not allowed: %s", ae.Msg)
		}
	}
	return err
}

// io are the streams and environment of a command.
type cmdIO struct {
	g         global
	stdin     io.Reader
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	in        *bufio.Reader
}

// readSecret reads a secret: prompted on a terminal (twice, when confirm),
// else one line of stdin.
func (c *cmdIO) readSecret(prompt string, confirm bool) (string, error) {
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.stderr, prompt+": ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", err
		}
		if confirm {
			fmt.Fprint(c.stderr, "again: ")
			b2, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(c.stderr)
			if err != nil {
				return "", err
			}
			if string(b) != string(b2) {
				return "", errors.New("the two entries differ")
			}
		}
		return string(b), nil
	}
	if c.in == nil {
		c.in = bufio.NewReader(c.stdin)
	}
	line, err := c.in.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("%s: read from standard input: %w", prompt, err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (c *cmdIO) admin(ctx context.Context, adminFlag, passwordFile string) (*directory.Client, func(), error) {
	name := adminFlag
	if name == "" {
		name = "admin"
		if v, ok := c.lookupEnv("RVP_ADMIN"); ok {
			name = v
		}
	}
	var password string
	switch v, ok := c.lookupEnv("RVP_ADMIN_PASSWORD"); {
	case passwordFile != "":
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("-admin-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case ok:
		password = v
	default:
		f, isFile := c.stdin.(*os.File)
		if !isFile || !term.IsTerminal(int(f.Fd())) {
			return nil, nil, fmt.Errorf("no password for administrator %s: set RVP_ADMIN_PASSWORD or -admin-password-file", name)
		}
		p, err := c.readSecret("password of administrator "+name, false)
		if err != nil {
			return nil, nil, err
		}
		password = p
	}
	nc, _, err := connect(c.g)
	if err != nil {
		return nil, nil, err
	}
	return &directory.Client{Conn: nc, Name: name, Password: password}, nc.Close, nil
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

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseUser(s string) (events.User, error) {
	alias, domain, ok := strings.Cut(s, "@")
	if !ok || alias == "" || domain == "" {
		return events.User{}, fmt.Errorf("user %q: want alias@domain", s)
	}
	return events.NewUser(domain, alias), nil
}

const adminUsage = `administration (authenticated as an administrator: -admin or RVP_ADMIN, and
-admin-password-file or RVP_ADMIN_PASSWORD, else a prompt):
  domain create DOMAIN [-im-host H] [-email-domains D,..] [-hosts H,..] [-nt-domain N]
  domain list | show DOMAIN | delete DOMAIN
  home create NAME -host H [-site S] [-no-users] | list | allow-users NAME | deny-users NAME | delete NAME
  home move-users NAME -home H  move every user of home server NAME to H, online ones included
  router create NAME -domain D -host H [-mode auto|redirect|proxy] | list | delete NAME
  user enable USER@DOMAIN -home H [-name N] [-email E] [-nt-account A]
  user disable USER@DOMAIN | move USER@DOMAIN -home H | list [-domain D] | show USER@DOMAIN
  password set USER@DOMAIN      new password prompted, or one line of standard input
  password reset USER@DOMAIN    a new password is generated and printed
  firewall set CIDR,.. | show   address ranges inside the firewall (redirected by routers)
  federation set on|off | show  Internet-capable: presence and messages with other organisations
  admin add NAME -role organization|domain [-domains D,..]   its password as for "password set"
  admin remove NAME | list
  whoami
`

// cmdAdmin runs the administration commands.
func cmdAdmin(ctx context.Context, c *cmdIO, area string, args []string) error {
	if area == "whoami" {
		args = append([]string{""}, args...)
	}
	if len(args) == 0 {
		fmt.Fprint(c.stderr, adminUsage)
		return fmt.Errorf("%s: no action given", area)
	}
	action := args[0]
	fs := flag.NewFlagSet("rvpctl "+area+" "+action, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	adminName := fs.String("admin", "", "administrator name (default: RVP_ADMIN, else admin)")
	passwordFile := fs.String("admin-password-file", "", "file holding the administrator's password")
	f := struct {
		imHost, emailDomains, hosts, ntDomain, host, site, domain, home, name, email, ntAccount, role, domains, mode *string
		noUsers                                                                                                      *bool
	}{
		imHost: fs.String("im-host", "", "IM host (default im.DOMAIN)"), emailDomains: fs.String("email-domains", "", "e-mail domains mapped to the IM domain"),
		hosts: fs.String("hosts", "", "more host names of the IM domain"), ntDomain: fs.String("nt-domain", "", "Windows domain name for NTLM and Digest"),
		host: fs.String("host", "", "host name"), site: fs.String("site", "", "site"), domain: fs.String("domain", "", "IM domain"),
		home: fs.String("home", "", "home server"), name: fs.String("name", "", "display name"), email: fs.String("email", "", "e-mail address"),
		ntAccount: fs.String("nt-account", "", "Windows account name, when not the alias"), role: fs.String("role", "", "organization or domain"),
		domains: fs.String("domains", "", "IM domains a domain administrator administers"), noUsers: fs.Bool("no-users", false, "the home server hosts no user accounts"),
		mode: fs.String("mode", "auto", "router mode: auto (redirect clients inside the firewall, proxy the others), redirect or proxy"),
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	arg := func(i int, what string) (string, error) {
		if len(pos) <= i {
			return "", fmt.Errorf("rvpctl %s %s: %s missing", area, action, what)
		}
		return pos[i], nil
	}
	user := func() (events.User, error) {
		s, err := arg(0, "USER@DOMAIN")
		if err != nil {
			return events.User{}, err
		}
		return parseUser(s)
	}
	a, done, err := c.admin(ctx, *adminName, *passwordFile)
	if err != nil {
		return err
	}
	defer done()
	out := c.g.out
	ok := func(format string, args ...any) error { fmt.Fprintf(out, format+"\n", args...); return nil }

	switch strings.TrimSpace(area + " " + action) {
	case "whoami":
		me, err := a.Whoami(ctx)
		if err != nil {
			return hint(err)
		}
		return c.print(me, [][]string{{"ADMINISTRATOR", "ROLE", "DOMAINS"}, {me.Name, me.Role, strings.Join(me.Domains, ",")}})
	case "domain create":
		d, err := arg(0, "DOMAIN")
		if err != nil {
			return err
		}
		spec := directory.DomainSpec{Domain: d, IMHost: *f.imHost, EmailDomains: splitList(*f.emailDomains), Hosts: splitList(*f.hosts), NTDomain: *f.ntDomain}
		if spec.IMHost == "" {
			spec.IMHost = "im." + d
		}
		if err := a.CreateDomain(ctx, spec); err != nil {
			return hint(err)
		}
		return ok("IM domain %s created (IM host %s); point the DNS record _rvp._tcp.%s at its router", d, spec.IMHost, d)
	case "domain list", "domain show":
		var doms []projections.Domain
		if action == "show" {
			d, err := arg(0, "DOMAIN")
			if err != nil {
				return err
			}
			dom, err := a.Domain(ctx, d)
			if err != nil {
				return hint(err)
			}
			doms = append(doms, dom)
		} else if doms, err = a.Domains(ctx); err != nil {
			return hint(err)
		}
		rows := [][]string{{"DOMAIN", "IM HOST", "E-MAIL DOMAINS", "HOSTS", "WINDOWS DOMAIN"}}
		for _, d := range doms {
			rows = append(rows, []string{d.Domain, d.IMHost, strings.Join(d.EmailDomains, ","), strings.Join(d.Hosts, ","), d.NTDomain})
		}
		return c.print(doms, rows)
	case "domain delete":
		d, err := arg(0, "DOMAIN")
		if err != nil {
			return err
		}
		if err := a.DeleteDomain(ctx, d); err != nil {
			return hint(err)
		}
		return ok("IM domain %s deleted", d)
	case "home create":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.CreateHomeServer(ctx, directory.HomeServerSpec{Name: n, Host: *f.host, Site: *f.site, HostsUsers: !*f.noUsers}); err != nil {
			return hint(err)
		}
		return ok("home server %s created at %s", n, *f.host)
	case "home allow-users", "home deny-users":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.AllowUsers(ctx, n, action == "allow-users"); err != nil {
			return hint(err)
		}
		return ok("home server %s: hosting user accounts %s", n, map[bool]string{true: "allowed", false: "not allowed"}[action == "allow-users"])
	case "home move-users":
		from, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if *f.home == "" || *f.home == from {
			return errors.New("give the home server to move them to: -home H (another one)")
		}
		users, err := a.Users(ctx, "")
		if err != nil {
			return hint(err)
		}
		moved := 0
		for _, u := range users {
			if u.Home != from || !u.Enabled {
				continue
			}
			if err := a.MoveUser(ctx, u.User, *f.home); err != nil {
				return fmt.Errorf("%d users moved; %s not: %w", moved, u.User, hint(err))
			}
			fmt.Fprintf(out, "%s moved\n", u.User)
			moved++
		}
		return ok("%d users of home server %s moved to %s", moved, from, *f.home)
	case "home delete":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.DeleteHomeServer(ctx, n); err != nil {
			return hint(err)
		}
		return ok("home server %s deleted", n)
	case "home list":
		homes, err := a.HomeServers(ctx)
		if err != nil {
			return hint(err)
		}
		rows := [][]string{{"HOME SERVER", "HOST", "SITE", "HOSTS USERS"}}
		for _, h := range homes {
			rows = append(rows, []string{h.Name, h.Host, h.Site, strconv.FormatBool(h.HostsUsers)})
		}
		return c.print(homes, rows)
	case "router create":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.CreateRouter(ctx, directory.RouterSpec{Name: n, Domain: *f.domain, Host: *f.host, Mode: *f.mode}); err != nil {
			return hint(err)
		}
		return ok("router %s created for IM domain %s at %s (%s)", n, *f.domain, *f.host, *f.mode)
	case "router delete":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.DeleteRouter(ctx, n); err != nil {
			return hint(err)
		}
		return ok("router %s deleted", n)
	case "router list":
		routers, err := a.Routers(ctx)
		if err != nil {
			return hint(err)
		}
		rows := [][]string{{"ROUTER", "DOMAIN", "HOST", "MODE"}}
		for _, r := range routers {
			rows = append(rows, []string{r.Name, r.Domain, r.Host, r.Mode})
		}
		return c.print(routers, rows)
	case "user enable":
		u, err := user()
		if err != nil {
			return err
		}
		spec := directory.UserSpec{User: u, Home: *f.home, DisplayName: *f.name, Email: *f.email, NTAccount: *f.ntAccount}
		if err := a.EnableUser(ctx, spec); err != nil {
			return hint(err)
		}
		return ok("%s enabled for instant messaging on home server %s; set its password with rvpctl password set %s", u, *f.home, u)
	case "user disable":
		u, err := user()
		if err != nil {
			return err
		}
		if err := a.DisableUser(ctx, u); err != nil {
			return hint(err)
		}
		return ok("%s disabled", u)
	case "user move":
		u, err := user()
		if err != nil {
			return err
		}
		if err := a.MoveUser(ctx, u, *f.home); err != nil {
			return hint(err)
		}
		return ok("%s moved to home server %s", u, *f.home)
	case "user list":
		users, err := a.Users(ctx, *f.domain)
		if err != nil {
			return hint(err)
		}
		rows := [][]string{{"USER", "ENABLED", "HOME SERVER", "DISPLAY NAME", "E-MAIL"}}
		for _, u := range users {
			rows = append(rows, []string{u.User.String(), strconv.FormatBool(u.Enabled), u.Home, u.DisplayName, u.Email})
		}
		return c.print(users, rows)
	case "user show":
		u, err := user()
		if err != nil {
			return err
		}
		s, err := a.User(ctx, u)
		if err != nil {
			return hint(err)
		}
		rows := [][]string{
			{"IM address:", s.Address}, {"public (logical) URL:", s.LogicalURL}, {"home server (physical) URL:", s.PhysicalURL},
			{"home server:", s.Home}, {"display name:", s.DisplayName}, {"e-mail:", s.Email},
			{"enabled:", strconv.FormatBool(s.Enabled)}, {"password set:", strconv.FormatBool(s.Password)},
		}
		return c.print(s, rows)
	case "password set", "password reset":
		u, err := user()
		if err != nil {
			return err
		}
		dom, err := a.Domain(ctx, u.Domain)
		if err != nil {
			return hint(err)
		}
		rec, err := a.User(ctx, u)
		if err != nil {
			return hint(err)
		}
		var pw string
		if action == "reset" {
			pw = newPassword()
		} else if pw, err = c.readSecret("new password of "+u.String(), true); err != nil {
			return err
		}
		if len(pw) < 8 {
			return errors.New("a password needs at least 8 characters")
		}
		// The verifiers are computed here: the password never leaves rvpctl.
		v := rvp.NewVerifiers(u, dom.NTDomain, rec.NTAccount, dom.Domain, pw)
		if err := a.SetPassword(ctx, u, v); err != nil {
			return hint(err)
		}
		if action == "reset" {
			return ok("new password of %s: %s", u, pw)
		}
		return ok("password of %s set", u)
	case "firewall set":
		ranges, err := arg(0, "CIDR,..")
		if err != nil {
			return err
		}
		if err := a.SetTopology(ctx, splitList(ranges)); err != nil {
			return hint(err)
		}
		return ok("firewall topology set: clients in %s are inside", ranges)
	case "firewall show", "federation show":
		s, err := a.Settings(ctx)
		if err != nil {
			return hint(err)
		}
		return c.print(s, [][]string{{"inside the firewall:", strings.Join(s.Inside, ", ")}, {"Internet-capable:", strconv.FormatBool(s.InternetCapable)}})
	case "federation set":
		v, err := arg(0, "on|off")
		if err != nil {
			return err
		}
		if v != "on" && v != "off" {
			return fmt.Errorf("federation set %q: want on or off", v)
		}
		if err := a.SetInternetCapable(ctx, v == "on"); err != nil {
			return hint(err)
		}
		return ok("Internet-capable: %s", v)
	case "admin add":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		pw, err := c.readSecret("password of administrator "+n, true)
		if err != nil {
			return err
		}
		if len(pw) < 8 {
			return errors.New("a password needs at least 8 characters")
		}
		v, err := directory.NewAdminVerifier(pw)
		if err != nil {
			return err
		}
		if err := a.SetAdmin(ctx, directory.AdminSpec{Name: n, Role: *f.role, Domains: splitList(*f.domains), Verifier: &v}); err != nil {
			return hint(err)
		}
		return ok("administrator %s set (%s)", n, *f.role)
	case "admin remove":
		n, err := arg(0, "NAME")
		if err != nil {
			return err
		}
		if err := a.RemoveAdmin(ctx, n); err != nil {
			return hint(err)
		}
		return ok("administrator %s removed", n)
	case "admin list":
		admins, err := a.Administrators(ctx)
		if err != nil {
			return hint(err)
		}
		rows := [][]string{{"ADMINISTRATOR", "ROLE", "DOMAINS"}}
		for _, x := range admins {
			rows = append(rows, []string{x.Name, x.Role, strings.Join(x.Domains, ",")})
		}
		return c.print(admins, rows)
	}
	fmt.Fprint(c.stderr, adminUsage)
	return fmt.Errorf("unknown command %q", area+" "+action)
}

// print writes v as JSON lines with -json, else rows as a table.
func (c *cmdIO) print(v any, rows [][]string) error {
	if c.g.json {
		return printJSON(c.g.out, v)
	}
	table(c.g.out, rows)
	return nil
}

// newPassword returns a random password of 14 letters and digits.
func newPassword() string {
	const letters = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 14)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
