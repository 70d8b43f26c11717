package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// run3 runs rvpctl in-process and returns its output, its error output
// and its error.
func (c ctl) run3(args ...string) (string, string, error) {
	env := map[string]string{"RVPCTL_NATS": c.natsURL, "RVPCTL_ADMIN": c.admin, "RVPCTL_ADMIN_PASSWORD": c.password}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// dirLast is the directory stream's last sequence: what an import
// changed, if anything.
func dirLast(t *testing.T, natsURL string) uint64 {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	return testcluster.LastSeqs(t, js)[events.StreamDirectory]
}

// TestImportTenThousand imports a CSV of 10,000 users with generated
// passwords, reports the rate beside one-by-one enabling of the same
// service in the same run, checks that a generated password signs in,
// that the passwords file is the caller's alone, and that importing the
// file again (and the export of the directory) changes nothing.
func TestImportTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd")
	}
	const orgPassword = "org-admin-pw-1"
	httpAddr, natsURL := rvpdProcess(t, orgPassword)
	org := ctl{t: t, natsURL: natsURL, admin: "admin", password: orgPassword}
	dir := t.TempDir()

	// The baseline, in the same run: users enabled one by one with their
	// passwords, as rvpctl user enable and password set do (without
	// starting a process for each).
	const oneByOne = 200
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	adm := &directory.Client{Conn: nc, Name: "admin", Password: orgPassword}
	ctx := context.Background()
	start := time.Now()
	for i := range oneByOne {
		u := events.NewUser("example.test", fmt.Sprintf("single%d", i))
		if err := adm.EnableUser(ctx, directory.UserSpec{User: u, Home: "home1"}); err != nil {
			t.Fatal(err)
		}
		if err := adm.SetPassword(ctx, u, rvp.NewVerifiers(u, "EXAMPLE", "", "example.test", "single-password")); err != nil {
			t.Fatal(err)
		}
	}
	single := float64(oneByOne) / time.Since(start).Seconds()

	const n = 10000
	var b strings.Builder
	b.WriteString("Address,Display Name,E-mail,Home Server,Password\n")
	for i := range n {
		fmt.Fprintf(&b, "user%05d@example.test,User %d,user%05d@example.test,home1,generate\n", i, i, i)
	}
	file := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	dry, _, err := org.run3("user", "import", "-dry-run", file)
	if err != nil || !strings.Contains(dry, fmt.Sprintf("%d users would be created (dry run", n)) {
		t.Fatalf("dry run: %v\n%s", err, dry)
	}
	if _, err := os.Stat(file + ".passwords.csv"); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote a passwords file: %v", err)
	}
	before := dirLast(t, natsURL)
	if dirLast(t, natsURL) != before {
		t.Fatal("the directory changed by itself")
	}
	start = time.Now()
	out, progress, err := org.run3("user", "import", file)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("import: %v\n%s\n%s", err, out, progress)
	}
	rate := float64(n) / took.Seconds()
	t.Logf("imported %d users in %s: %.0f users/s; one by one in the same run: %.0f users/s (%.0fx)", n, took.Round(time.Millisecond), rate, single, rate/single)
	if !strings.Contains(out, fmt.Sprintf("%d users created, 0 existed", n)) {
		t.Errorf("import says:\n%s", out)
	}
	if !strings.Contains(progress, "import: ") || !strings.Contains(progress, fmt.Sprintf("%s of %s", thousands(n), thousands(n))) || strings.Contains(progress, "\r") {
		t.Errorf("import's progress (no terminal: plain lines):\n%s", progress)
	}
	if got := dirLast(t, natsURL) - before; got != 2*n {
		t.Errorf("the import appended %d directory events, want %d (user.enabled and user.password each)", got, 2*n)
	}

	// The generated passwords: a file only the caller can read, one line
	// a user, and they sign in.
	pwFile := file + ".passwords.csv"
	fi, err := os.Stat(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("passwords file mode %v, want 0600", fi.Mode().Perm())
	}
	f, _ := os.Open(pwFile)
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(recs) != n+1 || recs[0][0] != "address" {
		t.Fatalf("passwords file: %d records, %v", len(recs), err)
	}
	who := recs[4242]
	alias, _, _ := strings.Cut(who[0], "@")
	c := testcluster.NewClient(t, httpAddr, alias)
	c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: alias, Domain: "EXAMPLE", Password: who[1]}
	if r := c.Login(3600); r.Status != 200 {
		t.Errorf("%s signs in with its generated password: %d %s", who[0], r.Status, r.Body)
	}

	// Again: nothing changes, and no new passwords file is needed.
	before = dirLast(t, natsURL)
	out, _, err = org.run3("user", "import", "-passwords", filepath.Join(dir, "again.csv"), file)
	if err != nil || !strings.Contains(out, fmt.Sprintf("0 users created, %d existed already", n)) {
		t.Errorf("second import: %v\n%s", err, out)
	}
	if got := dirLast(t, natsURL); got != before {
		t.Errorf("the second import appended %d directory events", got-before)
	}
	if _, err := os.Stat(filepath.Join(dir, "again.csv")); !os.IsNotExist(err) {
		t.Errorf("a passwords file was written though no user was created: %v", err)
	}

	// An audit over the whole directory (more than 20,000 events) shows
	// how far it is; with -json it does not.
	if _, progress, err := org.run3("audit", "-type", "user.password"); err != nil ||
		!strings.Contains(progress, "audit: events read: ") || !strings.Contains(progress, " of ") {
		t.Errorf("audit of a large range: %v; progress %q", err, progress)
	}
	if _, progress, err := org.run3("-json", "audit", "-type", "user.password"); err != nil || progress != "" {
		t.Errorf("audit -json: %v; progress %q", err, progress)
	}

	// The export reads back: every user exists, nothing changes.
	export := filepath.Join(dir, "export.csv")
	if _, errOut, err := org.run3("user", "export", "-domain", "example.test", export); err != nil {
		t.Fatalf("export: %v %s", err, errOut)
	}
	out, _, err = org.run3("-json", "user", "import", export)
	if err != nil {
		t.Fatalf("import of the export: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var sum importSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Created != 0 || sum.Refused != 0 || sum.Exists != n+oneByOne+3 {
		t.Errorf("import of the export: %+v %v", sum, err)
	}
	if got := dirLast(t, natsURL); got != before {
		t.Errorf("importing the export appended %d directory events", got-before)
	}
}

// TestImportBadRows: each bad row is reported by its line and the
// others are imported; the LDIF of an Active Directory export is read.
func TestImportBadRows(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd")
	}
	const orgPassword = "org-admin-pw-1"
	httpAddr, natsURL := rvpdProcess(t, orgPassword)
	org := ctl{t: t, natsURL: natsURL, admin: "admin", password: orgPassword}
	org.ok("", "home", "create", "store1", "-host", "store1.example.test", "-no-users")
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.csv")
	content := strings.Join([]string{
		"address,name,email,home,password",                   // 1
		"good1@example.test,Good One,,home1,good-password-1", // 2
		"bad user@example.test,Bad,,home1,",                  // 3: a space in the alias
		"nobody@elsewhere.test,Nobody,,home1,",               // 4: not our IM domain
		"nohome,No Home,nohome@mail.example.test,,",          // 5: no home server
		"short@example.test,Short,,home1,short",              // 6: password too short
		"good1@example.test,Good Again,,home1,",              // 7: twice
		"store@example.test,Store,,store1,",                  // 8: home server without user accounts
		"ghost@example.test,Ghost,,home9,",                   // 9: no such home server
		`"broken@example.test,Broken,,home1,`,                // 10: an unterminated quote...
		"",                                                   // 11
	}, "\n")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := org.run3("user", "import", file)
	if err == nil || !strings.Contains(err.Error(), "rows refused") {
		t.Errorf("an import with bad rows: %v, want an error counting them", err)
	}
	for _, want := range []string{
		"line 3: alias \"bad user\": an alias has no",
		"line 4: nobody@elsewhere.test: elsewhere.test is none of your IM domains",
		"line 5: nohome: no IM domain",
		"line 6: short@example.test: a password needs at least 8 characters",
		"line 7: good1@example.test is also on line 2",
		"line 8: home server store1 does not host user accounts",
		"line 9: home server home9 does not exist",
		"line 10: ",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("import's errors lack %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(out, "1 user created") {
		t.Errorf("import of good and bad rows says:\n%s", out)
	}
	good := testcluster.NewClient(t, httpAddr, "good1")
	good.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "good1", Domain: "EXAMPLE", Password: "good-password-1"}
	if r := good.Login(3600); r.Status != 200 {
		t.Errorf("good1 signs in: %d %s", r.Status, r.Body)
	}

	// LDIF as ldifde writes it: a container entry, a folded line, a
	// base64 value; the IM domain from -domain, passwords generated.
	ldif := filepath.Join(dir, "export.ldf")
	if err := os.WriteFile(ldif, []byte(`version: 1

dn: CN=Users,DC=example,DC=test
changetype: add
objectClass: container

dn: CN=Erin Example,CN=Users,DC=example,DC=test
changetype: add
objectClass: user
sAMAccountName: erin
displayName: Erin Example
mail: erin@example.test

# a comment between entries
dn: CN=Frank,CN=Users,DC=example,DC=test
changetype: add
objectClass: user
sAMAccountName: frank
displayName:: RnLDpG5rIMOWc3RlcnJlaWNo
mail: frank@exa
 mple.test
`), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "ldif-passwords.csv")
	out, errOut, err = org.run3("user", "import", "-home", "home1", "-generate", "-passwords", pw, ldif)
	if err != nil || !strings.Contains(out, "2 users created") {
		t.Fatalf("LDIF import: %v\n%s\n%s", err, out, errOut)
	}
	show := org.ok("", "user", "show", "frank@example.test")
	if !strings.Contains(show, "Fränk Österreich") || !strings.Contains(show, "frank@example.test") {
		t.Errorf("frank from LDIF:\n%s", show)
	}
	if data, err := os.ReadFile(pw); err != nil || !strings.Contains(string(data), "erin@example.test,") {
		t.Errorf("LDIF passwords file: %v\n%s", err, data)
	}

	// Taking home1 out of service shows its progress: six users.
	org.ok("", "home", "create", "home2", "-host", "home2.example.test")
	out, progress, err := org.run3("home", "move-users", "home1", "-home", "home2")
	if err != nil || !strings.Contains(out, "6 users of home server home1 moved to home2") || !strings.Contains(progress, "move-users: 6 of 6") {
		t.Errorf("move-users: %v\n%s\n%s", err, out, progress)
	}
}

// TestImportAgainAfterAFailedBatch: a batch whose answer is lost may have
// created some of its users; their generated passwords are in the
// passwords file before the batch is sent. Run again with that file, the
// import adds to it, and the users it lists get its passwords: the ones
// the lost batch created have them, the others are created with them.
// A file no import wrote is not touched.
func TestImportAgainAfterAFailedBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs rvpd")
	}
	const orgPassword = "org-admin-pw-1"
	httpAddr, natsURL := rvpdProcess(t, orgPassword)
	org := ctl{t: t, natsURL: natsURL, admin: "admin", password: orgPassword}
	dir := t.TempDir()
	file := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(file, []byte("address,home,password\nann@example.test,home1,generate\nben@example.test,home1,generate\ncy@example.test,home1,generate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the failed run left: ann created (the batch's answer lost),
	// ben not; both their passwords on record.
	org.ok("", "user", "enable", "ann@example.test", "-home", "home1")
	org.ok("ann-password-1\n", "password", "set", "ann@example.test")
	pwFile := file + ".passwords.csv"
	if err := os.WriteFile(pwFile, []byte("address,password\nann@example.test,ann-password-1\nben@example.test,ben-password-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "notes.csv")
	if err := os.WriteFile(foreign, []byte("what,when\nlunch,noon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := org.run3("user", "import", "-passwords", foreign, file); err == nil || !strings.Contains(err.Error(), "not a passwords file") {
		t.Errorf("an import into a file no import wrote: %v", err)
	}
	if data, _ := os.ReadFile(foreign); string(data) != "what,when\nlunch,noon\n" {
		t.Errorf("the other file was changed: %q", data)
	}

	out, errOut, err := org.run3("user", "import", file)
	if err != nil || !strings.Contains(out, "2 users created, 1 existed already and was left as it is") {
		t.Fatalf("the import again: %v\n%s\n%s", err, out, errOut)
	}
	f, err := os.Open(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs[1:] {
		got[r[0]] = r[1]
	}
	if len(recs) != 4 || got["ann@example.test"] != "ann-password-1" || got["ben@example.test"] != "ben-password-1" || len(got["cy@example.test"]) < 8 {
		t.Fatalf("passwords file after the import again:\n%v", recs)
	}
	for alias, pw := range map[string]string{"ann": got["ann@example.test"], "ben": got["ben@example.test"], "cy": got["cy@example.test"]} {
		c := testcluster.NewClient(t, httpAddr, alias)
		c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: alias, Domain: "EXAMPLE", Password: pw}
		if r := c.Login(3600); r.Status != 200 {
			t.Errorf("%s signs in with the password the file gives: %d %s", alias, r.Status, r.Body)
		}
	}
}

// TestPasswordsFileOfARunThatFailedAtOnce: an import that created its
// passwords file and then stopped before writing any password to it (the
// dry run of its first batch failed: the directory service unreachable,
// or Ctrl-C) says 'run the import again'. The file it leaves must be one
// the import again reads and adds to, not an empty file it refuses as
// another program's.
func TestPasswordsFileOfARunThatFailedAtOnce(t *testing.T) {
	name := filepath.Join(t.TempDir(), "users.csv.passwords.csv")
	pf, err := openPasswordFile(name, false)
	if err != nil {
		t.Fatal(err)
	}
	pf.close() // the run returns: its first batch's dry run failed
	known, err := readPasswordFile(name)
	if err != nil {
		t.Fatalf("the import again refuses the file the failed run left: %v", err)
	}
	if known == nil || len(known) != 0 {
		t.Errorf("the file the failed run left lists %v, want an empty list", known)
	}
}
