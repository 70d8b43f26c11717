package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/projections"
)

type initFlags struct {
	streamFlags
	siteFlags
	natsClient          natsclient.Flags
	nats                string
	replicas            int
	keyFile             string
	admin               string
	domain, imHost, nt  string
	domainHosts         string
	home, homeHost      string
	homeSite            string
	logLevel, logFormat string
}

func (f initFlags) validate() error {
	errs := []error{f.streamFlags.validate(), f.siteFlags.validate(), f.natsClient.Validate()}
	if f.site != "" && f.site != f.hub {
		errs = append(errs, fmt.Errorf("-site %s: rvpd init sets up the hub, where the directory is written (-site %s); a site's streams are made by its first node (rvpd node -site %s), which copies the hub's directory", f.site, f.hub, f.site))
	}
	if f.homeSite != "" && f.home == "" {
		errs = append(errs, errors.New("-home.site needs -home.name"))
	}
	if f.site != "" && f.home != "" && f.homeSite == "" {
		errs = append(errs, errors.New("-home.name at a deployment of sites needs -home.site: the site whose nodes own it"))
	}
	if f.site == "" && f.homeSite != "" {
		errs = append(errs, errors.New("-home.site needs -site: a deployment of one domain has no sites"))
	}
	if f.replicas < 1 || f.replicas > 5 {
		errs = append(errs, fmt.Errorf("-streams.replicas %d: want 1 to 5 (3 for a site's three NATS servers)", f.replicas))
	}
	if f.admin == "" {
		errs = append(errs, errors.New("-admin.name is empty: the first administrator needs a name"))
	}
	if (f.home == "") != (f.homeHost == "") {
		errs = append(errs, errors.New("-home.name and -home.host come together: a home server needs its host name (its physical URLs name it)"))
	}
	if f.domain == "" && (f.imHost != "" || f.nt != "" || f.domainHosts != "") {
		errs = append(errs, errors.New("-domain.im-host, -domain.nt-domain and -domain.hosts need -domain"))
	}
	if _, err := newLogger(io.Discard, f.logLevel, f.logFormat); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runInit initialises an empty cluster (directory.Init): its streams,
// the cluster key, the first organisation administrator, and optionally
// the first IM domain and home server. Everything after is rvpctl's.
//
// It is rvpd's, not rvpctl's, because it is the server's setup: it holds
// the cluster key (rvpctl never does: it talks to the directory service
// and proves its administrator's password) and the settings that live in
// the streams (-streams.replicas, -home.lease-ttl, -audit.retention),
// which rvpd dev and rvpd node share.
func runInit(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpd init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, "rvpd init -nats URLS [-site hub] [-streams.replicas 3] [-cluster-key-file FILE] [-admin.name NAME] [-domain DOMAIN] [-home.name NAME -home.host HOST [-home.site SITE]]\n\n"+
		"Initialises an empty cluster: creates its streams and buckets, generates the cluster key\n"+
		"(or takes it), creates the first organisation administrator (its password prompted, or\n"+
		"one line of standard input), and optionally the first IM domain and home server.\n"+
		"It refuses a cluster that has been set up. In a deployment of several sites it runs\n"+
		"at the hub (-site hub, -nats the hub's servers): the directory's origin; each site's\n"+
		"first node makes the site's streams and copies the directory.")
	var f initFlags
	fs.StringVar(&f.nats, "nats", nats.DefaultURL, "NATS servers of the cluster, comma-separated URLs")
	f.natsClient.Register(fs, envName, nil)
	fs.IntVar(&f.replicas, "streams.replicas", 3, "replicas of every stream and bucket: 3 for a site's three NATS servers, 1 for a single server")
	fs.StringVar(&f.keyFile, "cluster-key-file", "cluster.key", "the cluster key: read from this file if it exists, else generated and written there, readable by you only; "+envClusterKey+", when set, is taken instead")
	fs.StringVar(&f.admin, "admin.name", "admin", "name of the first organisation administrator")
	fs.StringVar(&f.domain, "domain", "", "create this first IM domain, e.g. example.com")
	fs.StringVar(&f.imHost, "domain.im-host", "", "its IM host (default im.DOMAIN), the target of its _rvp._tcp SRV record")
	fs.StringVar(&f.nt, "domain.nt-domain", "", "its Windows domain for NTLM and Digest (default: its first label, upper-cased)")
	fs.StringVar(&f.domainHosts, "domain.hosts", "", "more host names clients may reach it by, comma-separated (the name of a gateway its SRV record gives, for instance)")
	fs.StringVar(&f.home, "home.name", "", "create this first home server, e.g. home1")
	fs.StringVar(&f.homeHost, "home.host", "", "its host name, e.g. imhome1.example.com")
	fs.StringVar(&f.homeSite, "home.site", "", "with -site: the site whose nodes own it")
	fs.StringVar(&f.logLevel, "log.level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	f.streamFlags.register(fs)
	f.siteFlags.register(fs)
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.replicas > 1 && f.leaseTTL < 10*time.Second {
		log.Warn("a home-server lease shorter than 10 s lapses when the NATS server leading the lease bucket dies (raft elects a new leader after 4 to 9 s): the home server has no owner meanwhile", "home.lease-ttl", f.leaseTTL)
	}

	// Reach the cluster and look before asking for anything.
	setup, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	nc, _, release, err := clusterLink("rvpd-init", f.nats, f.natsClient, log)()
	if err != nil {
		return err
	}
	defer release()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := projections.WaitJetStream(setup, js); err != nil {
		return err
	}
	if c, err := directory.ReadCluster(setup, js); err != nil {
		return err
	} else if c.Initialized() {
		return fmt.Errorf("%w (administrators: %s); change it with rvpctl", directory.ErrInitialized, strings.Join(c.Admins, ", "))
	}

	keyring, keyNote, err := initKey(f.keyFile, lookupEnv)
	if err != nil {
		return err
	}
	prompt := &directory.Prompter{In: stdin, Out: stderr}
	v, err := prompt.AdminVerifier(f.admin)
	if err != nil {
		return err
	}
	spec := directory.InitSpec{Streams: f.streamOptions(), Admin: f.admin, Verifier: v, Logger: log}
	spec.Streams.Replicas = f.replicas
	f.siteFlags.apply(&spec.Streams)
	if f.domain != "" {
		d := directory.DomainSpec{Domain: f.domain, IMHost: f.imHost, NTDomain: f.nt, Hosts: splitList(f.domainHosts)}
		if d.IMHost == "" {
			d.IMHost = "im." + f.domain
		}
		spec.Domain = &d
	}
	if f.home != "" {
		spec.Home = &directory.HomeServerSpec{Name: f.home, Host: f.homeHost, Site: f.homeSite, HostsUsers: true}
	}
	if err := directory.Init(setup, js, keyring, spec); err != nil {
		return err
	}
	printInitDone(stdout, f, spec, keyNote, natsclient.RedactURLs(nc.ConnectedUrl()))
	return nil
}

// initKey returns the cluster key init works with: RVPD_CLUSTER_KEY when
// set, else the key file's when it exists, else a new key written to the
// key file, readable only by its owner. The note says which.
func initKey(file string, lookupEnv func(string) (string, bool)) (*directory.Keyring, string, error) {
	if env, ok := lookupEnv(envClusterKey); ok {
		key, err := directory.ParseKey(env)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", envClusterKey, err)
		}
		k, err := directory.NewKeyring(key)
		return k, "taken from " + envClusterKey + "; give every node the same", err
	}
	note := "read from " + file
	if st, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		note = "generated and written to " + file + " (readable by you only)"
	} else if err != nil {
		return nil, "", fmt.Errorf("-cluster-key-file: %w", err)
	} else if st.Mode().Perm()&0o077 != 0 {
		return nil, "", fmt.Errorf("-cluster-key-file %s can be read by others (mode %v): chmod 600 it first, or give another file", file, st.Mode().Perm())
	}
	key, err := directory.LoadOrCreateKey(file)
	if err != nil {
		return nil, "", fmt.Errorf("-cluster-key-file: %w", err)
	}
	k, err := directory.NewKeyring(key)
	return k, note, err
}

// plural is noun as counted n times: "replica" for 1, "replicas"
// otherwise (every noun counted here takes an s).
func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

func printInitDone(w io.Writer, f initFlags, spec directory.InitSpec, keyNote, server string) {
	fmt.Fprintf(w, "rvpd init: cluster at %s initialised\n", server)
	fmt.Fprintf(w, "  streams:        %d %s; home-server lease %s\n", f.replicas, plural(f.replicas, "replica"), f.leaseTTL)
	fmt.Fprintf(w, "  cluster key:    %s\n", keyNote)
	fmt.Fprintf(w, "  administrator:  %s (organisation)\n", f.admin)
	if d := spec.Domain; d != nil {
		fmt.Fprintf(w, "  IM domain:      %s (IM host %s; SRV record _rvp._tcp.%s)\n", d.Domain, d.IMHost, d.Domain)
	}
	if h := spec.Home; h != nil {
		fmt.Fprintf(w, "  home server:    %s at %s\n", h.Name, h.Host)
	}
	if f.site != "" {
		fmt.Fprintf(w, "  hub:            JetStream domain %s (the directory's origin; each site copies it)\n", f.hub)
	}
	// A cluster reached with TLS or credentials is reached so by the
	// nodes and rvpctl too, each with a certificate and credentials of
	// its own (CERT, KEY, CREDS); the CA is the same.
	var nodeNATS, ctlNATS string
	c := f.natsClient
	if c.TLSCA != "" {
		nodeNATS += " -nats.tls-ca " + c.TLSCA
		ctlNATS += " RVPCTL_NATS_TLS_CA=" + c.TLSCA
	}
	if c.TLSCert != "" {
		nodeNATS += " -nats.tls-cert CERT -nats.tls-key KEY"
		ctlNATS += " RVPCTL_NATS_TLS_CERT=CERT RVPCTL_NATS_TLS_KEY=KEY"
	}
	if c.Creds != "" {
		nodeNATS += " -nats.creds CREDS"
		ctlNATS += " RVPCTL_NATS_CREDS=CREDS"
	}
	fmt.Fprintf(w, "next:\n")
	fmt.Fprintf(w, "  1. copy the cluster key to every node's machine, readable by rvpd only\n")
	if f.site != "" {
		fmt.Fprintf(w, "  2. start the directory service at the hub: rvpd node -name NAME -site %s -nats %s%s -cluster-key-file FILE -admin\n", f.hub, natsclient.RedactURLs(f.nats), nodeNATS)
		fmt.Fprintf(w, "     and each site's nodes on its own servers: rvpd node -name NAME -site SITE -hub %s -nats SITE-URLS%s -cluster-key-file FILE -gateway :80 -home HOME ...\n", f.hub, nodeNATS)
	} else {
		fmt.Fprintf(w, "  2. start the nodes: rvpd node -name NAME -nats %s%s -cluster-key-file FILE -admin -gateway :80 -home HOME ...\n", natsclient.RedactURLs(f.nats), nodeNATS)
	}
	fmt.Fprintf(w, "  3. as the administrator: export RVPCTL_NATS=%s%s RVPCTL_ADMIN=%s\n", natsclient.RedactURLs(f.nats), ctlNATS, f.admin)
	if spec.Domain == nil {
		fmt.Fprintf(w, "     rvpctl domain create DOMAIN\n")
	}
	if spec.Home == nil && f.site != "" {
		fmt.Fprintf(w, "     rvpctl home create HOME -host HOST -site SITE\n")
	} else if spec.Home == nil {
		fmt.Fprintf(w, "     rvpctl home create HOME -host HOST\n")
	}
	fmt.Fprintf(w, "     rvpctl user enable USER@%s -home %s; rvpctl password set USER@%s\n",
		orPlaceholder(f.domain, "DOMAIN"), orPlaceholder(f.home, "HOME"), orPlaceholder(f.domain, "DOMAIN"))
}

func orPlaceholder(v, placeholder string) string {
	if v == "" {
		return placeholder
	}
	return v
}
