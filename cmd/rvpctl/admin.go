package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// adminCommands are the administration commands: changes and listings of
// the directory through the directory service, as an administrator.
func adminCommands() []command {
	return []command{
		{name: "whoami", help: "the administrator you are and its role", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, _ []string) error {
				me, err := e.admin.Whoami(ctx)
				if err != nil {
					return err
				}
				return e.print(me, [][]string{{"ADMINISTRATOR", "ROLE", "DOMAINS"}, {me.Name, me.Role, strings.Join(me.Domains, ",")}})
			})},

		{name: "domain create", args: "DOMAIN", help: "create an IM domain", admin: true,
			flags: func(fs *flag.FlagSet) runFunc {
				imHost := fs.String("im-host", "", "IM `host` (default im.DOMAIN)")
				emailDomains := fs.String("email-domains", "", "e-mail `domains` mapped to the IM domain, comma-separated")
				hosts := fs.String("hosts", "", "more host `names` of the IM domain, comma-separated")
				ntDomain := fs.String("nt-domain", "", "Windows `domain` name for NTLM and Digest")
				return func(ctx context.Context, e *env, args []string) error {
					d := args[0]
					spec := directory.DomainSpec{Domain: d, IMHost: *imHost, EmailDomains: splitList(*emailDomains), Hosts: splitList(*hosts), NTDomain: *ntDomain}
					if spec.IMHost == "" {
						spec.IMHost = "im." + d
					}
					if err := e.admin.CreateDomain(ctx, spec); err != nil {
						return err
					}
					return e.ok("IM domain %s created (IM host %s); point the DNS record _rvp._tcp.%s at its router", d, spec.IMHost, d)
				}
			}},
		{name: "domain list", help: "the IM domains", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, _ []string) error {
				doms, err := e.admin.Domains(ctx)
				if err != nil {
					return err
				}
				return e.printDomains(doms)
			})},
		{name: "domain show", args: "DOMAIN", help: "one IM domain", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				dom, err := e.admin.Domain(ctx, args[0])
				if err != nil {
					return err
				}
				return e.printDomains([]projections.Domain{dom})
			})},
		{name: "domain hosts", args: "DOMAIN", help: "add or remove host names and e-mail domains of an IM domain", admin: true,
			flags: func(fs *flag.FlagSet) runFunc {
				add := fs.String("add", "", "host `names` to add (a DNS alias of the IM server, a gateway's own name clients use), comma-separated")
				remove := fs.String("remove", "", "host `names` to remove, comma-separated")
				emailAdd := fs.String("email-add", "", "e-mail `domains` to map to the IM domain, comma-separated")
				emailRemove := fs.String("email-remove", "", "e-mail `domains` to map no more, comma-separated")
				return func(ctx context.Context, e *env, args []string) error {
					spec := directory.DomainHostsSpec{Domain: args[0], AddHosts: splitList(*add), RemoveHosts: splitList(*remove),
						AddEmailDomains: splitList(*emailAdd), RemoveEmailDomains: splitList(*emailRemove)}
					if len(spec.AddHosts)+len(spec.RemoveHosts)+len(spec.AddEmailDomains)+len(spec.RemoveEmailDomains) == 0 {
						return errors.New("give the host names to add or remove (-add, -remove, -email-add, -email-remove); rvpctl domain show lists them")
					}
					dom, err := e.admin.ChangeDomainHosts(ctx, spec)
					if err != nil {
						return err
					}
					return e.printDomains([]projections.Domain{dom})
				}
			}},
		{name: "domain delete", args: "DOMAIN", help: "delete an IM domain that has no users, routers or domain administrators left", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				if err := e.admin.DeleteDomain(ctx, args[0]); err != nil {
					return err
				}
				return e.ok("IM domain %s deleted", args[0])
			})},

		{name: "home create", args: "NAME", help: "create a home server", admin: true, needs: []string{"host"},
			flags: func(fs *flag.FlagSet) runFunc {
				host := fs.String("host", "", "host `name` of the home server")
				site := fs.String("site", "", "`site` of the home server")
				noUsers := fs.Bool("no-users", false, "the home server hosts no user accounts")
				return func(ctx context.Context, e *env, args []string) error {
					n := args[0]
					if err := e.admin.CreateHomeServer(ctx, directory.HomeServerSpec{Name: n, Host: *host, Site: *site, HostsUsers: !*noUsers}); err != nil {
						return err
					}
					return e.ok("home server %s created at %s", n, *host)
				}
			}},
		{name: "home list", help: "the home servers", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, _ []string) error {
				homes, err := e.admin.HomeServers(ctx)
				if err != nil {
					return err
				}
				rows := [][]string{{"HOME SERVER", "HOST", "SITE", "HOSTS USERS"}}
				for _, h := range homes {
					rows = append(rows, []string{h.Name, h.Host, h.Site, strconv.FormatBool(h.HostsUsers)})
				}
				return e.print(homes, rows)
			})},
		{name: "home allow-users", args: "NAME", help: "let a home server host user accounts", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error { return e.allowUsers(ctx, args[0], true) })},
		{name: "home deny-users", args: "NAME", help: "no longer let a home server host user accounts", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error { return e.allowUsers(ctx, args[0], false) })},
		{name: "home move-users", args: "NAME", help: "move every user of home server NAME to H, online ones included", admin: true, needs: []string{"home"},
			flags: func(fs *flag.FlagSet) runFunc {
				to := fs.String("home", "", "home server `H` to move them to")
				return func(ctx context.Context, e *env, args []string) error {
					from := args[0]
					if *to == "" || *to == from {
						return errors.New("give the home server to move them to: -home H (another one)")
					}
					users, err := e.admin.Users(ctx, "")
					if err != nil {
						return err
					}
					users = slices.DeleteFunc(users, func(u projections.UserRecord) bool { return u.Home != from || !u.Enabled })
					prog := newCounter(e.stderr, "move-users", len(users), e.json)
					defer prog.end()
					moved := 0
					for _, u := range users {
						if err := e.admin.MoveUser(ctx, u.User, *to); err != nil {
							return fmt.Errorf("%d %s moved; %s not: %w", moved, plural(moved, "user"), u.User, hint(err))
						}
						if !prog.inPlace() { // a line a user, unless the bar is drawn on the terminal
							fmt.Fprintf(e.out, "%s moved\n", u.User)
						}
						moved++
						prog.add(1)
					}
					prog.end()
					e.warnUnserved(ctx, *to)
					return e.ok("%d %s of home server %s moved to %s", moved, plural(moved, "user"), from, *to)
				}
			}},
		{name: "home delete", args: "NAME", help: "delete a home server no user is on", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				if err := e.admin.DeleteHomeServer(ctx, args[0]); err != nil {
					return err
				}
				return e.ok("home server %s deleted", args[0])
			})},

		{name: "router create", args: "NAME", help: "create a router of an IM domain", admin: true, needs: []string{"domain", "host"},
			flags: func(fs *flag.FlagSet) runFunc {
				domain := fs.String("domain", "", "IM `domain` of the router")
				host := fs.String("host", "", "host `name` of the router")
				mode := fs.String("mode", events.RouterAuto, "router `mode`: auto (redirect clients inside the firewall, proxy the others), redirect or proxy")
				return func(ctx context.Context, e *env, args []string) error {
					n := args[0]
					if err := e.admin.CreateRouter(ctx, directory.RouterSpec{Name: n, Domain: *domain, Host: *host, Mode: *mode}); err != nil {
						return err
					}
					return e.ok("router %s created for IM domain %s at %s (%s)", n, *domain, *host, *mode)
				}
			}},
		{name: "router list", help: "the routers", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, _ []string) error {
				routers, err := e.admin.Routers(ctx)
				if err != nil {
					return err
				}
				rows := [][]string{{"ROUTER", "DOMAIN", "HOST", "MODE"}}
				for _, r := range routers {
					rows = append(rows, []string{r.Name, r.Domain, r.Host, r.Mode})
				}
				return e.print(routers, rows)
			})},
		{name: "router delete", args: "NAME", help: "delete a router", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				if err := e.admin.DeleteRouter(ctx, args[0]); err != nil {
					return err
				}
				return e.ok("router %s deleted", args[0])
			})},

		{name: "user enable", args: "USER@DOMAIN", help: "enable a user for instant messaging on a home server", admin: true, needs: []string{"home"},
			flags: func(fs *flag.FlagSet) runFunc {
				home := fs.String("home", "", "home `server` of the user")
				name := fs.String("name", "", "display `name`")
				email := fs.String("email", "", "e-mail `address`")
				ntAccount := fs.String("nt-account", "", "Windows `account` name, when not the alias")
				return func(ctx context.Context, e *env, args []string) error {
					u, err := parseUser(args[0])
					if err != nil {
						return err
					}
					spec := directory.UserSpec{User: u, Home: *home, DisplayName: *name, Email: *email, NTAccount: *ntAccount}
					if err := e.admin.EnableUser(ctx, spec); err != nil {
						return err
					}
					return e.ok("%s enabled for instant messaging on home server %s; set its password with rvpctl password set %s", u, *home, u)
				}
			}},
		{name: "user disable", args: "USER@DOMAIN", help: "disable a user: its sign-ins are refused, and its watchers see it offline", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				u, err := parseUser(args[0])
				if err != nil {
					return err
				}
				if err := e.admin.DisableUser(ctx, u); err != nil {
					return err
				}
				return e.ok("%s disabled", u)
			})},
		{name: "user move", args: "USER@DOMAIN", help: "move a user to another home server (online: its state follows)", admin: true, needs: []string{"home"},
			flags: func(fs *flag.FlagSet) runFunc {
				home := fs.String("home", "", "home `server` to move the user to")
				return func(ctx context.Context, e *env, args []string) error {
					u, err := parseUser(args[0])
					if err != nil {
						return err
					}
					if err := e.admin.MoveUser(ctx, u, *home); err != nil {
						return err
					}
					e.warnUnserved(ctx, *home)
					return e.ok("%s moved to home server %s", u, *home)
				}
			}},
		{name: "user list", help: "the users you administer", admin: true,
			flags: func(fs *flag.FlagSet) runFunc {
				domain := fs.String("domain", "", "only users of this IM `domain`")
				return func(ctx context.Context, e *env, _ []string) error {
					users, err := e.admin.Users(ctx, *domain)
					if err != nil {
						return err
					}
					rows := [][]string{{"USER", "ENABLED", "HOME SERVER", "DISPLAY NAME", "E-MAIL"}}
					for _, u := range users {
						rows = append(rows, []string{u.User.String(), strconv.FormatBool(u.Enabled), u.Home, u.DisplayName, u.Email})
					}
					return e.print(users, rows)
				}
			}},
		{name: "user show", args: "USER@DOMAIN", help: "a user's IM address, logical and physical URLs, home server", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				u, err := parseUser(args[0])
				if err != nil {
					return err
				}
				s, err := e.admin.User(ctx, u)
				if err != nil {
					return err
				}
				rows := [][]string{
					{"IM address:", s.Address}, {"public (logical) URL:", s.LogicalURL}, {"home server (physical) URL:", s.PhysicalURL},
					{"home server:", s.Home}, {"display name:", s.DisplayName}, {"e-mail:", s.Email},
					{"enabled:", strconv.FormatBool(s.Enabled)}, {"password set:", strconv.FormatBool(s.Password)},
				}
				return e.print(s, rows)
			})},

		{name: "password set", args: "USER@DOMAIN", help: "set a password: prompted, or one line of standard input", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error { return e.setPassword(ctx, args[0], false) })},
		{name: "password reset", args: "USER@DOMAIN", help: "set a new generated password and print it", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error { return e.setPassword(ctx, args[0], true) })},

		{name: "firewall set", args: "CIDR,..", help: "the address ranges inside the firewall (clients routers redirect)", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				if err := e.admin.SetTopology(ctx, splitList(args[0])); err != nil {
					return err
				}
				return e.ok("firewall topology set: clients in %s are inside", args[0])
			})},
		{name: "firewall show", help: "the organisation's settings", admin: true, flags: noFlags(showSettings)},
		{name: "federation set", args: "on|off", help: "Internet-capable: presence and messages with other organisations", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				v := args[0]
				if v != "on" && v != "off" {
					return fmt.Errorf("federation set %q: want on or off", v)
				}
				if err := e.admin.SetInternetCapable(ctx, v == "on"); err != nil {
					return err
				}
				return e.ok("Internet-capable: %s", v)
			})},
		{name: "federation show", help: "the organisation's settings", admin: true, flags: noFlags(showSettings)},

		{name: "admin add", args: "NAME", help: "add or change an administrator; its password as for password set", admin: true, needs: []string{"role"},
			flags: func(fs *flag.FlagSet) runFunc {
				role := fs.String("role", "", "`role`: organization or domain")
				domains := fs.String("domains", "", "IM `domains` a domain administrator administers, comma-separated")
				return func(ctx context.Context, e *env, args []string) error {
					n := args[0]
					v, err := e.prompt().AdminVerifier(n)
					if err != nil {
						return err
					}
					if err := e.admin.SetAdmin(ctx, directory.AdminSpec{Name: n, Role: *role, Domains: splitList(*domains), Verifier: &v}); err != nil {
						return err
					}
					return e.ok("administrator %s set (%s)", n, *role)
				}
			}},
		{name: "admin remove", args: "NAME", help: "remove an administrator", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, args []string) error {
				if err := e.admin.RemoveAdmin(ctx, args[0]); err != nil {
					return err
				}
				return e.ok("administrator %s removed", args[0])
			})},
		{name: "admin list", help: "the administrators", admin: true,
			flags: noFlags(func(ctx context.Context, e *env, _ []string) error {
				admins, err := e.admin.Administrators(ctx)
				if err != nil {
					return err
				}
				rows := [][]string{{"ADMINISTRATOR", "ROLE", "DOMAINS"}}
				for _, x := range admins {
					rows = append(rows, []string{x.Name, x.Role, strings.Join(x.Domains, ",")})
				}
				return e.print(admins, rows)
			})},
	}
}

func (e *env) printDomains(doms []projections.Domain) error {
	rows := [][]string{{"DOMAIN", "IM HOST", "E-MAIL DOMAINS", "HOSTS", "WINDOWS DOMAIN"}}
	for _, d := range doms {
		rows = append(rows, []string{d.Domain, d.IMHost, strings.Join(d.EmailDomains, ","), strings.Join(d.Hosts, ","), d.NTDomain})
	}
	return e.print(doms, rows)
}

func (e *env) allowUsers(ctx context.Context, name string, allow bool) error {
	if err := e.admin.AllowUsers(ctx, name, allow); err != nil {
		return err
	}
	return e.ok("home server %s: hosting user accounts %s", name, map[bool]string{true: "allowed", false: "not allowed"}[allow])
}

func showSettings(ctx context.Context, e *env, _ []string) error {
	s, err := e.admin.Settings(ctx)
	if err != nil {
		return err
	}
	return e.print(s, [][]string{{"inside the firewall:", strings.Join(s.Inside, ", ")}, {"Internet-capable:", strconv.FormatBool(s.InternetCapable)}})
}

// setPassword sets a user's password, read (prompted, or a line of
// standard input) or generated (reset). The verifiers are computed here:
// the password never leaves rvpctl.
func (e *env) setPassword(ctx context.Context, user string, reset bool) error {
	u, err := parseUser(user)
	if err != nil {
		return err
	}
	dom, err := e.admin.Domain(ctx, u.Domain)
	if err != nil {
		return err
	}
	rec, err := e.admin.User(ctx, u)
	if err != nil {
		return err
	}
	var pw string
	if reset {
		pw = newPassword()
	} else if pw, err = e.readSecret("new password of "+u.String(), true); err != nil {
		return err
	}
	if len(pw) < 8 {
		return errors.New("a password needs at least 8 characters")
	}
	v := rvp.NewVerifiers(u, dom.NTDomain, rec.NTAccount, dom.Domain, pw)
	if err := e.admin.SetPassword(ctx, u, v); err != nil {
		return err
	}
	if reset {
		return e.ok("new password of %s: %s", u, pw)
	}
	return e.ok("password of %s set", u)
}

// hint makes the directory service's refusals say what to do.
func hint(err error) error {
	var ae *directory.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case directory.CodeUnauthenticated:
			return fmt.Errorf("%s (set RVPCTL_ADMIN and RVPCTL_ADMIN_PASSWORD, or -admin and -admin-password-file)", ae.Msg)
		case directory.CodeForbidden:
			return fmt.Errorf("not allowed: %s", ae.Msg)
		}
	}
	return err
}

// env is what a command runs with: the global flags, the standard
// streams and environment, and for an administration command its
// directory client.
type env struct {
	global
	stdin     io.Reader
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	prompter  *directory.Prompter
	admin     *directory.Client
}

// readSecret reads a secret: prompted on a terminal (twice, when confirm),
// else one line of stdin.
func (e *env) readSecret(prompt string, confirm bool) (string, error) {
	return e.prompt().Secret(prompt, confirm)
}

// prompt returns the prompter of the command's standard input.
func (e *env) prompt() *directory.Prompter {
	if e.prompter == nil {
		e.prompter = &directory.Prompter{In: e.stdin, Out: e.stderr}
	}
	return e.prompter
}

// adminClient connects to the directory service as the administrator the
// flags or the environment name.
func (e *env) adminClient(adminFlag, passwordFile string) (*directory.Client, func(), error) {
	name := adminFlag
	if name == "" {
		name = "admin"
		if v, ok := e.lookupEnv("RVPCTL_ADMIN"); ok {
			name = v
		}
	}
	var password string
	switch v, ok := e.lookupEnv("RVPCTL_ADMIN_PASSWORD"); {
	case passwordFile != "":
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("-admin-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case ok:
		password = v
	default:
		if !(&directory.Prompter{In: e.stdin}).Terminal() {
			return nil, nil, fmt.Errorf("no password for administrator %s: set RVPCTL_ADMIN_PASSWORD or -admin-password-file", name)
		}
		p, err := e.readSecret("password of administrator "+name, false)
		if err != nil {
			return nil, nil, err
		}
		password = p
	}
	nc, _, err := connect(e.global)
	if err != nil {
		return nil, nil, err
	}
	return &directory.Client{Conn: nc, Name: name, Password: password}, nc.Close, nil
}

// warnUnserved warns, on stderr, when no node serves home server home,
// users were just moved to: their clients get no answer until one does,
// and their state (their watchers' subscriptions, presence, ACL) waits
// for it in its requests stream (past the stream's max age only where
// the stream allows per-message TTLs: docs/operations.md). Best effort:
// an administrator whose connection may not read the leases is told
// nothing.
func (e *env) warnUnserved(ctx context.Context, home string) {
	js, err := jetstream.New(e.admin.Conn)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ls, err := homenode.Leases(ctx, js)
	if err != nil || ls == nil {
		return // not readable here, or a cluster from before leases
	}
	if l, ok := ls[home]; ok && l.Node != "" {
		return
	}
	fmt.Fprintf(e.stderr, "warning: no node serves home server %s now: the users moved to it get no answer until one does, and their state (their watchers' subscriptions, presence, ACL) waits for it in its requests stream; start its node (rvpctl status shows which home servers have one)\n", home)
}

// ok prints a command's confirmation.
func (e *env) ok(format string, args ...any) error {
	fmt.Fprintf(e.out, format+"\n", args...)
	return nil
}

// print writes v as JSON lines with -json, else rows as a table.
func (e *env) print(v any, rows [][]string) error {
	if e.json {
		return printJSON(e.out, v)
	}
	table(e.out, rows)
	return nil
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
