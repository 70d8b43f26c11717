package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The demo deployment `rvpd dev` creates on first start.
const (
	demoDomain   = "example.test"
	demoIMHost   = "im.example.test"
	demoNTDomain = "EXAMPLE"
	demoHome     = "home1"
	demoHost     = "home1.example.test"
	demoAdmin    = "admin"
)

var demoUsers = []struct{ alias, name string }{
	{"alice", "Alice Example"},
	{"bob", "Bob Example"},
	{"carol", "Carol Example"},
}

type devFlags struct {
	roleFlags
	data, http, nats, natsSync string
	demoPassword               string
	demoUsers                  int
	reset                      bool
}

func runDev(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpd dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, "rvpd dev [flags]")
	var f devFlags
	fs.StringVar(&f.data, "data", "./data", "directory of the NATS store and the Pebble projections")
	fs.StringVar(&f.http, "http", "127.0.0.1:8080", "address of the RVP (HTTP) listener")
	fs.StringVar(&f.nats, "nats", "127.0.0.1:4222", `address of the NATS client listener, so the nats CLI can look in ("" for none)`)
	fs.StringVar(&f.natsSync, "nats.sync", "", `JetStream fsync: "always", or an interval such as 1s (default: the server's 2m)`)
	fs.StringVar(&f.demoPassword, "demo-password", "", "set the password of the demo users and administrator (default: one derived from the cluster key, set on the first start)")
	fs.IntVar(&f.demoUsers, "demo-users", 0, "also create user1..userN in the demo domain with the demo password, for load tests")
	fs.BoolVar(&f.reset, "reset", false, "delete the data directory's state and start clean")
	fs.StringVar(&f.keyFile, "cluster-key-file", "", "file holding the cluster key (64 hex digits; default: the environment's "+envClusterKey+", else one generated and kept in the data directory)")
	f.roleFlags.register(fs)
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if err := f.roleFlags.validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.reset {
		if err := resetData(f.data); err != nil {
			return err
		}
		log.Info("data directory reset", "dir", f.data)
	}
	if err := os.MkdirAll(f.data, 0o750); err != nil {
		return fmt.Errorf("create data directory: %w (choose another with -data)", err)
	}
	keyring, err := clusterKey(f.data, f.keyFile, lookupEnv)
	if err != nil {
		return err
	}
	password := f.demoPassword
	if password == "" {
		password = demoPassword(keyring)
	}
	warnNoAuth(log, f.auth)

	//   RVP clients ──HTTP──▶ gateway ──request events──▶ JetStream (embedded)
	//                            │                            │
	//                            └──lookups──▶ router          ▼
	//   client callbacks ◀──NOTIFY── home node (home1) ◀── requests; facts ──▶ Pebble
	var ns *server.Server
	embedded := func() (*nats.Conn, <-chan error, func(), error) {
		s, fatal, err := startNATS(natsConfig{Name: "rvpd-dev", StoreDir: filepath.Join(f.data, "nats"), Listen: f.nats, Sync: f.natsSync}, log.With("component", "nats"))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w (is another rvpd using %s? choose another with -nats, or -nats \"\")", err, f.nats)
		}
		stop := func() { s.Shutdown(); s.WaitForShutdown() }
		nc, err := nats.Connect("", nats.InProcessServer(s), nats.Name("rvpd-dev"))
		if err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("connect to embedded nats: %w", err)
		}
		ns = s
		return nc, fatal, func() { nc.Close(); stop() }, nil
	}
	setup, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	p, err := openProcess(setup, log, embedded, f.streamOptions(), nil, f.data, f.storeOptions(), true)
	if err != nil {
		return err
	}
	defer p.close()
	admin := &directory.Admin{JetStream: p.js, Directory: p.dir, Keyring: keyring, Actor: "rvpd-dev"}
	if err := bootstrapDemo(setup, p.js, admin, password, f.demoPassword != "", log); err != nil {
		return fmt.Errorf("create the demo domain: %w", err)
	}
	if f.demoUsers > 0 {
		if err := addDemoUsers(ctx, p.js, admin, f.demoUsers, password, log); err != nil {
			return err
		}
	}
	if ok, err := hasPassword(admin, events.NewUser(demoDomain, demoUsers[0].alias), password); err != nil || !ok {
		password = "changed since the first start (rvpctl password reset alice@" + demoDomain + ", or -demo-password)"
	}
	ln, err := gateway.Listen(f.http)
	if err != nil {
		return fmt.Errorf("listen for RVP on %s: %w (choose another address with -http)", f.http, err)
	}
	rs := roleSet{nc: p.nc, js: p.js, db: p.db, dir: p.dir, keyring: keyring, log: log, flags: f.roleFlags,
		gatewayID: "gw1", listener: ln, devDomain: demoDomain, homes: []string{demoHome}, streams: f.streamOptions(), holder: "dev", router: "router1", admin: admin}
	if a := ns.Addr(); a != nil {
		rs.own = rvp.ListenerEndpoints(a.String())
	}
	if rs.ops, err = listenOps(f.ops); err != nil {
		ln.Close()
		return err
	}
	return p.run(ctx, rs, func() {
		printBanner(stdout, ln.Addr().String(), ns, f.data, password, f.auth)
		printOps(stdout, rs.ops)
	})
}

// bootstrapDemo creates the demo domain, home server, users and
// administrator that are missing, through the same directory operations
// rvpctl uses, and gives them password: those that have none, and with
// force all whose password differs. It follows the directory stream while
// it works, and returns with the projection caught up.
func bootstrapDemo(ctx context.Context, js jetstream.JetStream, admin *directory.Admin, password string, force bool, log *slog.Logger) error {
	return withDirectory(ctx, js, admin.Directory, log, func() error { return createDemo(ctx, admin, password, force, log) })
}

func createDemo(ctx context.Context, admin *directory.Admin, password string, force bool, log *slog.Logger) error {
	dir := admin.Directory
	err := admin.CreateDomain(ctx, directory.DomainSpec{Domain: demoDomain, IMHost: demoIMHost, EmailDomains: []string{demoDomain}, NTDomain: demoNTDomain})
	if err != nil && !errors.Is(err, directory.ErrExists) {
		return err
	}
	if err := admin.CreateHomeServer(ctx, demoHome, demoHost, "", true); err != nil && !errors.Is(err, directory.ErrExists) {
		return err
	}
	for _, u := range demoUsers {
		user := events.NewUser(demoDomain, u.alias)
		err := admin.EnableUser(ctx, directory.UserSpec{User: user, Home: demoHome, DisplayName: u.name, Email: u.alias + "@" + demoDomain})
		switch {
		case err == nil:
			log.Info("demo user created", "user", user.String())
		case !errors.Is(err, directory.ErrExists):
			return err
		}
		sealed, err := dir.Password(user)
		if err != nil {
			return err
		}
		if ok, err := hasPassword(admin, user, password); err != nil {
			return err
		} else if sealed == nil || (force && !ok) {
			v := rvp.NewVerifiers(user, demoNTDomain, "", demoDomain, password)
			if err := admin.SetPassword(ctx, user, v); err != nil {
				return err
			}
		}
	}
	if adm, err := dir.Administrator(demoAdmin); err != nil {
		return err
	} else if adm == nil || (force && !adminHasPassword(admin, adm, password)) {
		v, err := directory.NewAdminVerifier(password)
		if err != nil {
			return err
		}
		return admin.SetAdmin(ctx, demoAdmin, events.RoleOrganization, nil, v)
	}
	return nil
}

// hasPassword reports whether u's verifiers are those of password.
func hasPassword(admin *directory.Admin, u events.User, password string) (bool, error) {
	sealed, err := admin.Directory.Password(u)
	if err != nil || sealed == nil {
		return false, err
	}
	v, err := admin.Keyring.OpenVerifiers(sealed, events.UserSubject(u))
	if err != nil {
		return false, nil // sealed with another key: set it again
	}
	return bytes.Equal(v.NT, rvp.NTHash(password)), nil
}

func adminHasPassword(admin *directory.Admin, adm *projections.Administrator, password string) bool {
	v, err := admin.Keyring.OpenAdminVerifier(adm.Verifiers, adm.Name)
	return err == nil && v.Check(password)
}

// clusterKey returns the keyring of the cluster key: from the file given,
// else from RVPD_CLUSTER_KEY, else the one generated on the first start and
// kept in the data directory.
func clusterKey(data, file string, lookupEnv func(string) (string, bool)) (*directory.Keyring, error) {
	var key []byte
	var err error
	switch env, ok := lookupEnv(envClusterKey); {
	case file != "":
		b, rerr := os.ReadFile(file)
		if rerr != nil {
			return nil, fmt.Errorf("-cluster-key-file: %w", rerr)
		}
		key, err = directory.ParseKey(string(b))
	case ok:
		key, err = directory.ParseKey(env)
	default:
		key, err = directory.LoadOrCreateKey(filepath.Join(data, "cluster.key"))
	}
	if err != nil {
		return nil, err
	}
	return directory.NewKeyring(key)
}

func printBanner(w io.Writer, addr string, ns *server.Server, data, password, auth string) {
	host, port, _ := net.SplitHostPort(addr)
	natsLine := "none (-nats \"\": no NATS listener, nothing outside this process reaches it)"
	if a := ns.Addr(); a != nil {
		natsURL := "nats://" + a.String()
		natsLine = natsURL + "   (nats --server " + natsURL + " stream ls)"
	}
	users := make([]string, len(demoUsers))
	for i, u := range demoUsers {
		users[i] = u.alias
	}
	fmt.Fprintf(w, `rvpd dev: RVP server listening on http://%s
  IM domain:  %s (IM host %s; in dev mode any Host reaches it)
  users:      %s  (e.g. alice@%s)
  server:     %s   port: %s
  password:   %s
  auth:       %s   (Windows domain %s, e.g. %s\alice)
  admin:      %s / the same password   (rvpctl whoami -admin %s)
  NATS:       %s
  data:       %s   (restart keeps state; -reset starts clean)
`, addr, demoDomain, demoIMHost, strings.Join(users, ", "), demoDomain, host, port, password, authLine(auth), demoNTDomain, demoNTDomain,
		demoAdmin, demoAdmin, natsLine, data)
}

func authLine(auth string) string {
	if auth == "none" {
		return "NONE: anyone can act as anyone (development only)"
	}
	return auth
}

// demoPassword derives the demo users' default password from the cluster
// key, so that every start prints the same one and it is kept nowhere in
// clear.
func demoPassword(k *directory.Keyring) string {
	const letters = "abcdefghijkmnpqrstuvwxyz23456789"
	sum := k.MAC("demo-password", []byte("rvpd dev"))
	b := make([]byte, 12)
	for i := range b {
		b[i] = letters[int(sum[i])%len(letters)]
	}
	return string(b)
}

// resetData removes what rvpd dev keeps in the data directory.
func resetData(data string) error {
	for _, name := range []string{"nats", "pebble", "demo-password", "cluster.key"} {
		if err := os.RemoveAll(filepath.Join(data, name)); err != nil {
			return fmt.Errorf("reset %s: %w", data, err)
		}
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log.level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log.format %q: want text or json", format)
}
