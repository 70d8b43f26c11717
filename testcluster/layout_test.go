package testcluster

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed is the import table of DESIGN.md §3: which of our top-level
// packages each may import. "*" is every one but testcluster.
var allowed = map[string][]string{
	"events":      {},
	"rvp":         {"events"},
	"projections": {"events"},
	"gateway":     {"events", "rvp", "projections"},
	"homenode":    {"events", "rvp", "projections"},
	"routernode":  {"events", "rvp", "projections"},
	"directory":   {"events", "rvp", "projections"},
	"cmd/rvpd":    {"*"},
	"cmd/rvpctl":  {"*"},
	"testcluster": {"*", "testcluster"},
}

// pure packages may not do I/O.
var forbiddenInPure = []string{"os", "net", "net/http", "io/fs", "github.com/nats-io/", "github.com/cockroachdb/"}

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Imports    []string
	GoFiles    []string
}

func listPackages(t *testing.T) (module string, pkgs []pkg) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	module = strings.TrimSpace(string(out))
	cmd := exec.Command("go", "list", "-json", module+"/...")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(stdout)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return module, pkgs
}

// area returns the top-level package a package belongs to.
func area(module, path string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	parts := strings.Split(rel, "/")
	if parts[0] == "cmd" && len(parts) > 1 {
		return "cmd/" + parts[1]
	}
	return parts[0]
}

// TestImportTable enforces DESIGN.md §3: imports point inward only.
func TestImportTable(t *testing.T) {
	module, pkgs := listPackages(t)
	for _, p := range pkgs {
		from := area(module, p.ImportPath)
		rule, ok := allowed[from]
		if !ok {
			t.Errorf("package %s is outside the prescribed layout (top level %q)", p.ImportPath, from)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				if len(rule) == 0 || from == "events" {
					for _, f := range forbiddenInPure {
						if imp == f || strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f) {
							t.Errorf("%s imports %s: it must stay pure (no I/O)", p.ImportPath, imp)
						}
					}
				}
				continue
			}
			to := area(module, imp)
			if to == from {
				continue
			}
			ok := slices.Contains(rule, to) || (slices.Contains(rule, "*") && to != "testcluster")
			if !ok {
				t.Errorf("%s imports %s: %s may import only %v", p.ImportPath, imp, from, rule)
			}
		}
	}
}

// TestPackageDocs requires a package comment on every package.
func TestPackageDocs(t *testing.T) {
	_, pkgs := listPackages(t)
	for _, p := range pkgs {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no package comment (doc.go)", p.ImportPath)
		}
	}
}
