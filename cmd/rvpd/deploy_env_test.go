package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDeployEnvironments: the example environment files of
// deploy/systemd (with the unit's own Environment= lines) set only
// variables that name a flag of rvpd node, and each starts the
// operations listener (RVPD_OPS), with which docs/operations.md says every
// process is started: without it a node installed from them has no
// /metrics, /healthz or /readyz, nothing for Prometheus, the dashboard
// or a load balancer to read; and no two of them share its address (one
// machine may run several).
func TestDeployEnvironments(t *testing.T) {
	flags := modeHelp(t, "node")
	known := map[string]bool{envClusterKey: true}
	for name := range flags {
		known[envName(name)] = true
	}
	files, err := filepath.Glob("../../deploy/systemd/*.env")
	if err != nil || len(files) == 0 {
		t.Fatalf("deploy/systemd/*.env: %v %v", files, err)
	}
	unit, err := os.ReadFile("../../deploy/systemd/rvpd@.service")
	if err != nil {
		t.Fatal(err)
	}
	var unitVars []string
	for _, m := range regexp.MustCompile(`(?m)^Environment=(RVPD_[A-Z0-9_]+)=`).FindAllSubmatch(unit, -1) {
		unitVars = append(unitVars, string(m[1]))
	}
	opsAt := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, _ := strings.Cut(line, "=")
			vars[k] = v
		}
		for _, k := range unitVars {
			vars[k] = "x"
		}
		for k := range vars {
			if strings.HasPrefix(k, envPrefix) && !known[k] {
				t.Errorf("%s sets %s, which is no flag of rvpd node (rvpd ignores it)", filepath.Base(f), k)
			}
		}
		ops := vars[envName("ops")]
		if ops == "" {
			t.Errorf("%s does not set %s: a node started from it serves no /metrics, /healthz or /readyz", filepath.Base(f), envName("ops"))
			continue
		}
		if other, ok := opsAt[ops]; ok {
			t.Errorf("%s and %s both put the operations listener at %s: on one machine the second would not start", other, filepath.Base(f), ops)
		}
		opsAt[ops] = filepath.Base(f)
	}
}
