package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

// helpFlag is a flag as `rvpd dev -h` shows it.
type helpFlag struct {
	typ string // "" for a bool
	def string // "" when -h shows no default (the zero value)
}

// devHelp parses the flags and defaults `rvpd dev -h` prints.
func devHelp(t *testing.T) map[string]helpFlag { return modeHelp(t, "dev") }

// modeHelp parses the flags and defaults `rvpd <mode> -h` prints.
func modeHelp(t *testing.T, mode string) map[string]helpFlag {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := exec(context.Background(), []string{mode, "-h"}, noEnv, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("rvpd %s -h: %v", mode, err)
	}
	flags := map[string]helpFlag{}
	name := ""
	head := regexp.MustCompile(`^  -(\S+)(?: (\S+))?$`)
	def := regexp.MustCompile(`\(default (.*)\)$`)
	for _, line := range strings.Split(stderr.String(), "\n") {
		if m := head.FindStringSubmatch(line); m != nil {
			name = m[1]
			flags[name] = helpFlag{typ: m[2]}
			continue
		}
		if m := def.FindStringSubmatch(line); m != nil && name != "" {
			f := flags[name]
			f.def = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				f.def = s
			}
			flags[name] = f
		}
	}
	if len(flags) < 10 {
		t.Fatalf("rvpd %s -h shows %d flags:\n%s", mode, len(flags), stderr.String())
	}
	return flags
}

// readmeDefaults parses the README's table "Configuration of rvpd dev":
// each flag and the default written for it.
func readmeDefaults(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "## Configuration of `rvpd dev`")
	if !ok {
		t.Fatal("README.md has no section \"Configuration of `rvpd dev`\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	flagName := regexp.MustCompile("`(-[a-z][a-z0-9.-]*)`")
	out := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") || strings.TrimSpace(cells[0]) == "flag" {
			continue
		}
		var names []string
		for _, m := range flagName.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, strings.TrimPrefix(m[1], "-"))
		}
		defaults := []string{strings.TrimSpace(cells[1])}
		if len(names) > 1 {
			defaults = strings.Split(defaults[0], ", ")
		}
		if len(names) == 0 || len(defaults) != len(names) {
			t.Errorf("README row %q: %d flags, %d defaults", line, len(names), len(defaults))
			continue
		}
		for i, n := range names {
			out[n] = strings.TrimSpace(defaults[i])
		}
	}
	return out
}

// TestReadmeDefaults fails when the README's configuration table and
// `rvpd dev -h` disagree: a flag missing from either, or a default
// written differently.
func TestReadmeDefaults(t *testing.T) {
	help, readme := devHelp(t), readmeDefaults(t)
	for name := range help {
		if _, ok := readme[name]; !ok {
			t.Errorf("-%s is in rvpd dev -h but not in the README's configuration table", name)
		}
	}
	for name, written := range readme {
		f, ok := help[name]
		if !ok {
			t.Errorf("README's configuration table has -%s, which rvpd dev does not", name)
			continue
		}
		if msg := compareDefault(f, written); msg != "" {
			t.Errorf("-%s: README says %q, rvpd dev -h %q: %s", name, written, f.def, msg)
		}
	}
}

// compareDefault compares a default as the README writes it with the
// flag's; it returns what is wrong, or "".
func compareDefault(f helpFlag, written string) string {
	v := strings.ReplaceAll(written, "`", "")
	if i := strings.Index(v, " ("); i > 0 && strings.HasSuffix(v, ")") {
		v = v[:i] // "0 (for ever)"
	}
	switch f.typ {
	case "":
		want := f.def
		if want == "" {
			want = "false"
		}
		if v != want {
			return "the bool differs"
		}
	case "duration":
		want, have := time.Duration(0), time.Duration(0)
		var err error
		if f.def != "" {
			if want, err = time.ParseDuration(f.def); err != nil {
				return err.Error()
			}
		}
		if v != "0" {
			if have, err = time.ParseDuration(v); err != nil {
				return "not a duration"
			}
		}
		if have != want {
			return "the durations differ"
		}
	case "int":
		want := f.def
		if want == "" {
			want = "0"
		}
		if v != want {
			return "the numbers differ"
		}
	default:
		if f.def == "" {
			// No default value: the README says what happens instead.
			if v != "none" && v != "off" && !strings.Contains(written, " ") {
				return "the flag has no default; the README should say what happens without it (none, off, or a description)"
			}
			return ""
		}
		if v != f.def {
			return "the strings differ"
		}
	}
	return ""
}

// TestValidateReportsAll: inconsistent settings are all reported at
// once, before anything starts.
func TestValidateReportsAll(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := exec(context.Background(), []string{"dev", "-lease.min", "5h", "-lease.max", "1h", "-sub.min-lifetime", "2h", "-sub.max-lifetime", "1h",
		"-request.timeout", "45s", "-auth", "kerberos", "-log.level", "loud", "-federation.peers", "nonsense", "-federation.internal", "corp.example,10.0.0.0/8", "-pebble.memtable-bytes", "1000", "-gateway.max-conns", "0"}, noEnv, &stdout, &stderr)
	if err == nil {
		t.Fatal("inconsistent settings accepted")
	}
	for _, want := range []string{
		"presence leases: the minimum 5h0m0s is above the maximum 1h0m0s",
		"presence leases: the maximum 1h0m0s is below 4h0m0s",
		"subscription lifetimes: the minimum 2h0m0s is above the maximum 1h0m0s",
		"-request.timeout 45s",
		`-auth "kerberos"`,
		`-log.level "loud"`,
		"-federation.peers",
		`-federation.internal: "10.0.0.0/8": want a DNS suffix`,
		"-pebble.memtable-bytes 1000",
		"-gateway.max-conns 0",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	err = exec(context.Background(), []string{"dev", "-notify.timeout", "25s", "-request.timeout", "20s"}, noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-notify.timeout 25s is not below -request.timeout 20s") {
		t.Errorf("a delivery longer than the gateway waits: %v", err)
	}
}

// TestNodeValidateReportsAll: a node's own problems come with the roles'.
func TestNodeValidateReportsAll(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := exec(context.Background(), []string{"node", "-name", "", "-streams.replicas", "9", "-lease.max", "1h"}, noEnv, &stdout, &stderr)
	if err == nil {
		t.Fatal("a node without roles, name or key started")
	}
	for _, want := range []string{"no role given", "-name is empty", "needs the cluster key", "-streams.replicas 9", "the maximum 1h0m0s is below"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
}

// TestEnvironmentNames: rvpd reads its settings from RVPD_<FLAG> only,
// so that rvpctl's variables (RVPCTL_ADMIN, and the RVP_ADMIN of older
// READMEs) never reach it: RVP_ADMIN=admin once made `rvpd node` fail
// to parse its -admin flag.
func TestEnvironmentNames(t *testing.T) {
	env := map[string]string{
		"RVP_ADMIN": "admin", "RVP_ADMIN_PASSWORD": "x", "RVP_NATS": "nats://nowhere:1",
		"RVPCTL_ADMIN": "admin", "RVPCTL_ADMIN_PASSWORD": "x", "RVPCTL_NATS": "nats://nowhere:1",
		"RVPD_STREAMS_REPLICAS": "9", "RVPD_LEASE_MAX": "1h",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var stdout, stderr bytes.Buffer
	err := exec(context.Background(), []string{"node", "-name", "n1"}, lookup, &stdout, &stderr)
	if err == nil {
		t.Fatal("a node with 9 replicas started")
	}
	if strings.Contains(err.Error(), "parse error") || strings.Contains(err.Error(), "RVP_") {
		t.Errorf("rvpd read another program's variable: %v", err)
	}
	for _, want := range []string{"-streams.replicas 9", "the maximum 1h0m0s is below"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RVPD_ variables not read: the error lacks %q:\n%v", want, err)
		}
	}
	// -h says where the variables come from.
	stderr.Reset()
	if err := exec(context.Background(), []string{"node", "-h"}, noEnv, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "RVPD_<FLAG>") || !strings.Contains(stderr.String(), "RVPD_CLUSTER_KEY") {
		t.Errorf("rvpd node -h does not name its environment variables:\n%s", stderr.String())
	}
}

// TestFlagsAlikeInEveryMode: a flag name has one type in every mode of
// rvpd, so that one RVPD_<FLAG> variable suits them all (a node's -admin
// is a switch; init's administrator is -admin.name).
func TestFlagsAlikeInEveryMode(t *testing.T) {
	seen := map[string]string{}
	for _, mode := range []string{"dev", "node", "init"} {
		for name, f := range modeHelp(t, mode) {
			if prev, ok := seen[name]; ok && prev != f.typ {
				t.Errorf("-%s is %q in one mode and %q in rvpd %s", name, prev, f.typ, mode)
			}
			seen[name] = f.typ
		}
	}
}

// TestNodeHomeGivenTwice: a home server named twice in -home is refused
// before anything starts. Taken as given, the node held the home server's
// lease twice under its one name (each hold finds the lease its own), so
// that two home nodes of one home server decided its requests side by
// side over the same projection.
func TestNodeHomeGivenTwice(t *testing.T) {
	var stdout, stderr bytes.Buffer
	key := func(k string) (string, bool) { return strings.Repeat("ab", 32), k == envClusterKey }
	err := exec(context.Background(), []string{"node", "-name", "n1", "-nats", "nats://127.0.0.1:1", "-data", t.TempDir(), "-home", "home1,home2, home1"}, key, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-home") || !strings.Contains(err.Error(), "home1 is given twice") {
		t.Errorf("-home home1,home2,home1: %v; want it refused, naming home1", err)
	}
}

// TestStreamDurationsBelowNATSFloor: -audit.retention and -home.lease-ttl
// are the max age of streams and of the lease bucket, which NATS refuses
// below 100ms. Accepted, -audit.retention 50ms had rvpd dev start and
// its home node fail at Error every few seconds for ever ("ensure stream
// RVP_FACTS_home1: ... max age needs to be >= 100ms"), and -home.lease-ttl
// 50ms failed naming the bucket rather than the flag. Both are refused
// before anything starts, naming the flag.
func TestStreamDurationsBelowNATSFloor(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{
		{"-audit.retention", "-audit.retention 50ms"},
		{"-home.lease-ttl", "-home.lease-ttl 50ms"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stdout, stderr bytes.Buffer
		err := exec(ctx, []string{"dev", "-data", t.TempDir(), "-nats", "", "-http", "127.0.0.1:0", tc.flag, "50ms"}, noEnv, &stdout, &stderr)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rvpd dev %s 50ms: %v; want it refused at start, naming %q\n%s", tc.flag, err, tc.want, stderr.String())
		}
	}
}
