package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// userFileCommands are user import and user export.
func userFileCommands() []command {
	return []command{
		{name: "user import", args: "FILE", help: "enable the users of a CSV or LDIF file (dry run, idempotent; errors by line)", admin: true, flags: importFlags},
		{name: "user export", args: "[FILE]", help: "write the users as CSV or LDIF, which import reads back (default standard output)", admin: true, flags: exportFlags},
	}
}

// fileFormat is a user file's format: given, or by its extension.
func fileFormat(given, path string) (string, error) {
	switch given {
	case "csv", "ldif":
		return given, nil
	case "":
		switch strings.ToLower(filepath.Ext(path)) {
		case ".ldf", ".ldif":
			return "ldif", nil
		}
		return "csv", nil
	}
	return "", fmt.Errorf("-format %q: want csv or ldif", given)
}

type importOptions struct {
	format, domain, home, passwords string
	generate, dryRun                bool
}

func importFlags(fs *flag.FlagSet) runFunc {
	var o importOptions
	fs.StringVar(&o.format, "format", "", "`format` of the file: csv or ldif (default: ldif for .ldf and .ldif, else csv)")
	fs.StringVar(&o.domain, "domain", "", "IM `domain` of rows that give an account without a domain (default: the one whose e-mail domain the row's e-mail has)")
	fs.StringVar(&o.home, "home", "", "home `server` of rows that name none")
	fs.BoolVar(&o.generate, "generate", false, `generate a password for rows that give none (LDIF gives none); a row's password "generate" asks for one too`)
	fs.StringVar(&o.passwords, "passwords", "", "`file` the generated passwords are written to, readable by you only (default: FILE.passwords.csv); one an earlier import wrote is added to, and the users it lists keep its passwords")
	fs.BoolVar(&o.dryRun, "dry-run", false, "check every row and say what would be done, changing nothing")
	return func(ctx context.Context, e *env, args []string) error { return e.importUsers(ctx, args[0], o) }
}

// plannedUser is a row ready to send: the user, its verifiers, and the
// password when it was generated here.
type plannedUser struct {
	line      int
	user      directory.ImportUser
	generated string
	recorded  bool // generated is the one an earlier run's file gives
}

// importSummary counts what an import did.
type importSummary struct {
	Created int `json:"created"`
	Exists  int `json:"exists"`
	Refused int `json:"refused"`
	// NoPassword counts the users created whose password the directory
	// did not take (each said by its line).
	NoPassword int  `json:"no_password,omitempty"`
	DryRun     bool `json:"dry_run,omitempty"`
	// Passwords is the file generated passwords were written to.
	Passwords string  `json:"passwords,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// importLine is one row's outcome in -json output.
type importLine struct {
	Line    int      `json:"line"`
	User    string   `json:"user,omitempty"`
	Outcome string   `json:"outcome"`
	Error   string   `json:"error,omitempty"`
	Differs []string `json:"differs,omitempty"`
}

// importUsers reads a user file, turns its rows into users with their
// passwords' verifiers (the passwords never leave rvpctl), and enables
// them through the directory service, ImportBatch at a time. A row in
// error is reported by its line and the others go on; users that exist
// are left as they are, so a second run changes nothing.
func (e *env) importUsers(ctx context.Context, path string, o importOptions) error {
	start := time.Now()
	format, err := fileFormat(o.format, path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []userRow
	var bad []rowError
	if format == "ldif" {
		rows, bad, err = parseLDIF(f)
	} else {
		rows, bad, err = parseCSV(f)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	doms, err := e.admin.Domains(ctx)
	if err != nil {
		return err
	}
	pwName := o.passwords
	if pwName == "" {
		pwName = path + ".passwords.csv"
	}
	// An earlier run's passwords file: the users it lists were, or may
	// have been (its batch failed), created with those passwords.
	known, err := readPasswordFile(pwName)
	if err != nil {
		return err
	}
	pl := planner{domains: doms, domain: o.domain, home: o.home, generate: o.generate, seen: map[events.User]int{}, known: known}
	var plan []plannedUser
	for _, r := range rows {
		p, err := pl.plan(r)
		if err != nil {
			bad = append(bad, rowError{r.line, err})
			continue
		}
		plan = append(plan, p)
	}
	sum := importSummary{Refused: len(bad), DryRun: o.dryRun}
	// What became of each row, said in the order of the file at the end.
	var lines []importLine
	summarise := false // with -json, the summary follows the rows
	for _, b := range bad {
		lines = append(lines, importLine{Line: b.line, Outcome: directory.ImportRefused, Error: b.err.Error()})
	}
	defer func() {
		slices.SortStableFunc(lines, func(a, b importLine) int { return a.Line - b.Line })
		for _, l := range lines {
			switch {
			case e.json:
				printJSON(e.out, l)
			case l.Error != "":
				fmt.Fprintf(e.stderr, "%s: line %d: %s\n", path, l.Line, l.Error)
			case len(l.Differs) > 0:
				fmt.Fprintf(e.stderr, "%s: line %d: %s exists, left as it is (the directory has %s)\n", path, l.Line, l.User, strings.Join(l.Differs, ", "))
			}
		}
		if summarise {
			printJSON(e.out, sum)
		}
	}()
	var pwFile *passwordFile
	if !o.dryRun && slices.ContainsFunc(plan, func(p plannedUser) bool { return p.generated != "" }) {
		if pwFile, err = openPasswordFile(pwName, known != nil); err != nil {
			return err
		}
		defer pwFile.close()
	}
	// stale are the users whose passwords this run wrote before their
	// batch, but whose batch did not create them after all (another
	// administrator did meanwhile), or did without taking their password:
	// they leave the file at the end.
	stale := map[string]bool{}
	prog := newCounter(e.stderr, "import", len(plan), e.json)
	for len(plan) > 0 {
		batch := plan[:min(len(plan), directory.ImportBatch)]
		plan = plan[len(batch):]
		spec := directory.ImportSpec{DryRun: o.dryRun, Users: make([]directory.ImportUser, len(batch))}
		for i, p := range batch {
			spec.Users[i] = p.user
		}
		// The passwords of the users a batch creates are on disk before
		// it is sent: a batch whose answer is lost may have created some.
		wrote, err := e.prewritePasswords(ctx, pwFile, batch, spec)
		if err != nil {
			prog.end()
			return err
		}
		results, err := e.admin.ImportUsers(ctx, spec)
		if err != nil {
			prog.end()
			again := "run the import again: what exists is left as it is"
			if wrote > 0 {
				again = fmt.Sprintf("the passwords the batch gives its new users are in %s: run the import again (with -passwords %s): "+
					"what exists is left as it is, and the users that file lists get its passwords", pwFile.name, pwFile.name)
			}
			return fmt.Errorf("%d %s created, %d existed; the next batch (from line %d) failed: %w (%s)",
				sum.Created, plural(sum.Created, "user"), sum.Exists, batch[0].line, hint(err), again)
		}
		for i, res := range results {
			p := batch[i]
			user := p.user.Spec.User.String()
			switch res.Outcome {
			case directory.ImportCreated:
				sum.Created++
				if res.Error != "" {
					sum.NoPassword++
				}
				// A password the directory did not take is no password
				// of the user's: res.Error says so, and how to set one.
				if p.generated != "" && pwFile != nil && res.Error == "" {
					sum.Passwords = pwFile.name
				}
			case directory.ImportExists:
				sum.Exists++
			default:
				sum.Refused++
			}
			if (res.Outcome != directory.ImportCreated || res.Error != "") && pwFile != nil && pwFile.written[user] {
				stale[user] = true
			}
			if e.json || res.Error != "" || len(res.Differs) > 0 {
				lines = append(lines, importLine{Line: p.line, User: user, Outcome: res.Outcome, Error: res.Error, Differs: res.Differs})
			}
		}
		prog.add(len(batch))
	}
	prog.end()
	if pwFile != nil {
		if err := pwFile.finish(stale); err != nil {
			return err
		}
		if sum.Passwords == "" && len(known) > 0 {
			sum.Passwords = pwFile.name // the users it lists keep their passwords
		}
	}
	sum.Seconds = time.Since(start).Seconds()
	if e.json {
		summarise = true
	} else {
		verb := "created"
		if o.dryRun {
			verb = "would be created (dry run: nothing changed)"
		}
		left := "were left as they are"
		if sum.Exists == 1 {
			left = "was left as it is"
		}
		fmt.Fprintf(e.out, "%d %s %s, %d existed already and %s, %d refused (%.1fs)\n", sum.Created, plural(sum.Created, "user"), verb, sum.Exists, left, sum.Refused, sum.Seconds)
		if sum.Passwords != "" {
			fmt.Fprintf(e.out, "generated passwords are in %s (readable by you only)\n", sum.Passwords)
		}
	}
	if sum.Refused > 0 {
		return fmt.Errorf("%d %s refused (each said by its line)", sum.Refused, plural(sum.Refused, "row"))
	}
	if sum.NoPassword > 0 {
		return fmt.Errorf("%d %s created without their password (each said by its line); set them with rvpctl password set", sum.NoPassword, plural(sum.NoPassword, "user"))
	}
	return nil
}

// planner turns rows into users to import.
type planner struct {
	domains  []projections.Domain
	domain   string // -domain
	home     string // -home
	generate bool
	seen     map[events.User]int // line of each user planned
	// known are the passwords an earlier run's file gives (address:
	// password): a user it lists is given its password again.
	known map[string]string
}

// domainOf finds the IM domain a name (an IM domain, or an e-mail domain
// of one) stands for.
func (p *planner) domainOf(name string) *projections.Domain {
	for i, d := range p.domains {
		if strings.EqualFold(d.Domain, name) {
			return &p.domains[i]
		}
	}
	for i, d := range p.domains {
		for _, e := range d.EmailDomains {
			if strings.EqualFold(e, name) {
				return &p.domains[i]
			}
		}
	}
	return nil
}

func (p *planner) plan(r userRow) (plannedUser, error) {
	alias, domain, hasDomain := strings.Cut(r.address, "@")
	if r.address == "" {
		alias = r.account
	}
	var dom *projections.Domain
	switch {
	case hasDomain:
		if dom = p.domainOf(domain); dom == nil {
			return plannedUser{}, fmt.Errorf("%s: %s is none of your IM domains (nor an e-mail domain of one)", r.address, domain)
		}
	case p.domain != "":
		if dom = p.domainOf(p.domain); dom == nil {
			return plannedUser{}, fmt.Errorf("-domain %s is none of your IM domains", p.domain)
		}
	default:
		_, mailDomain, ok := strings.Cut(r.email, "@")
		if ok {
			dom = p.domainOf(mailDomain)
		}
		if dom == nil {
			return plannedUser{}, fmt.Errorf("%s: no IM domain: give an address alias@domain, an e-mail of an IM domain's e-mail domain, or -domain", alias)
		}
	}
	if alias == "" {
		return plannedUser{}, errors.New("no user: the address and the account are empty")
	}
	if strings.ContainsAny(alias, "/@ \t\\") {
		return plannedUser{}, fmt.Errorf("alias %q: an alias has no '/', '@', '\\' or spaces", alias)
	}
	u := events.NewUser(dom.Domain, alias)
	if line, dup := p.seen[u]; dup {
		return plannedUser{}, fmt.Errorf("%s is also on line %d", u, line)
	}
	home := r.home
	if home == "" {
		home = p.home
	}
	if home == "" {
		return plannedUser{}, fmt.Errorf("%s: no home server (a column home, or -home)", u)
	}
	nt := ""
	if r.account != "" && !strings.EqualFold(r.account, u.Alias) {
		nt = r.account
	}
	pu := plannedUser{line: r.line, user: directory.ImportUser{Spec: directory.UserSpec{User: u, Home: home, DisplayName: r.name, Email: r.email, NTAccount: nt}}}
	pw := r.password
	if strings.EqualFold(pw, "generate") || (pw == "" && p.generate) {
		pw, pu.recorded = p.known[u.String()]
		if !pu.recorded {
			pw = newPassword()
		}
		pu.generated = pw
	}
	if pw != "" {
		if len(pw) < 8 {
			return plannedUser{}, fmt.Errorf("%s: a password needs at least 8 characters", u)
		}
		v := rvp.NewVerifiers(u, dom.NTDomain, nt, dom.Domain, pw)
		pu.user.Verifiers = &v
	}
	p.seen[u] = r.line
	return pu, nil
}

// passwordFile holds generated passwords, readable and writable by its
// owner only: a line an address and its password, under a header. An
// import creates it, or adds to one an earlier run of it wrote (never
// to another file); a line is written, and on disk, before the batch
// that creates its user is sent.
type passwordFile struct {
	name    string
	f       *os.File
	w       *csv.Writer
	created bool            // by this run
	written map[string]bool // the addresses this run wrote
}

// passwordHeader is the first line of a passwords file.
func passwordHeader() []string { return []string{"address", "password"} }

// passwordLine is the line of a passwords file that gives user's
// password: the address neutralised as a user file's cells are (cell;
// an alias may start with '-'), the password as it is (a generated one
// is letters and digits; a quote added to one read back as it is would
// be a password nobody was given).
func passwordLine(user, password string) []string { return []string{cell(user), password} }

// readPasswordFile reads an earlier import's passwords file: nil when
// there is none.
func readPasswordFile(name string) (map[string]string, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("passwords file: %w", err)
	}
	defer f.Close()
	notOurs := fmt.Errorf("%s exists and is not a passwords file an import wrote: move it away or give -passwords FILE", name)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return nil, notOurs
	}
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) == 0 || !slices.Equal(recs[0], passwordHeader()) {
		return nil, notOurs
	}
	known := make(map[string]string, len(recs)-1)
	for _, r := range recs[1:] {
		if len(r) != 2 || r[0] == "" || r[1] == "" {
			return nil, notOurs
		}
		known[fromCell(r[0])] = r[1]
	}
	return known, nil
}

// openPasswordFile creates the passwords file, or opens an earlier
// run's (exists) to add to it.
func openPasswordFile(name string, exists bool) (*passwordFile, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if exists {
		flags = os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(name, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("passwords file: %w", err)
	}
	pf := &passwordFile{name: name, f: f, w: csv.NewWriter(f), created: !exists, written: map[string]bool{}}
	if !exists {
		// On disk at once: a run that stops before its first batch
		// leaves a file the import run again reads, not an empty one
		// it refuses as another program's.
		pf.w.Write(passwordHeader())
		pf.w.Flush()
		err := pf.w.Error()
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			os.Remove(name)
			return nil, fmt.Errorf("passwords file: %w", err)
		}
	}
	return pf, nil
}

// prewritePasswords writes, and makes durable, the generated passwords
// of the users batch will create (a dry run of it says which) but for
// those the file lists already. It returns how many the file holds for
// the batch.
func (e *env) prewritePasswords(ctx context.Context, pf *passwordFile, batch []plannedUser, spec directory.ImportSpec) (int, error) {
	if pf == nil || spec.DryRun || !slices.ContainsFunc(batch, func(p plannedUser) bool { return p.generated != "" }) {
		return 0, nil
	}
	dry := spec
	dry.DryRun = true
	results, err := e.admin.ImportUsers(ctx, dry)
	if err != nil {
		return 0, fmt.Errorf("checking the batch from line %d: %w (nothing of it was done; run the import again)", batch[0].line, hint(err))
	}
	n := 0
	for i, res := range results {
		p := batch[i]
		user := p.user.Spec.User.String()
		if p.generated == "" || res.Outcome != directory.ImportCreated {
			continue
		}
		n++
		if p.recorded || pf.written[user] {
			continue
		}
		if err := pf.w.Write(passwordLine(user, p.generated)); err != nil {
			return 0, fmt.Errorf("passwords file: %w", err)
		}
		pf.written[user] = true
	}
	pf.w.Flush()
	if err := pf.w.Error(); err != nil {
		return 0, fmt.Errorf("passwords file: %w", err)
	}
	return n, pf.f.Sync()
}

// finish closes the file, without the lines of the users in stale (this
// run wrote them, and did not create them); a file this run created and
// left with no password is removed.
func (p *passwordFile) finish(stale map[string]bool) error {
	p.w.Flush()
	if err := p.w.Error(); err != nil {
		return fmt.Errorf("passwords file: %w", err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("passwords file: %w", err)
	}
	if len(stale) == 0 && (!p.created || len(p.written) > 0) {
		return nil
	}
	known, err := readPasswordFile(p.name)
	if err != nil {
		return err
	}
	for u := range stale {
		delete(known, u)
	}
	if p.created && len(known) == 0 {
		return os.Remove(p.name)
	}
	// Written afresh beside it, then renamed over it: never half a file.
	tmp, err := os.CreateTemp(filepath.Dir(p.name), filepath.Base(p.name)+".*")
	if err != nil {
		return fmt.Errorf("passwords file: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := csv.NewWriter(tmp)
	w.Write(passwordHeader())
	for _, u := range slices.Sorted(maps.Keys(known)) {
		w.Write(passwordLine(u, known[u]))
	}
	w.Flush()
	err = w.Error()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("passwords file: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.name); err != nil {
		return fmt.Errorf("passwords file: %w", err)
	}
	return nil
}

func (p *passwordFile) close() { p.f.Close() }

type exportOptions struct {
	format, domain, baseDN string
}

func exportFlags(fs *flag.FlagSet) runFunc {
	var o exportOptions
	fs.StringVar(&o.format, "format", "", "`format`: csv or ldif (default: by FILE's extension, else csv)")
	fs.StringVar(&o.domain, "domain", "", "only users of this IM `domain`")
	fs.StringVar(&o.baseDN, "base-dn", "", "LDIF: the `DN` users are placed under (default DC=… of each user's IM domain)")
	return func(ctx context.Context, e *env, args []string) error {
		path := ""
		if len(args) > 0 {
			path = args[0]
		}
		return e.exportUsers(ctx, path, o)
	}
}

// exportUsers writes the enabled users the administrator may see as a
// user file, without passwords (the directory keeps only sealed
// verifiers).
func (e *env) exportUsers(ctx context.Context, path string, o exportOptions) error {
	format, err := fileFormat(o.format, path)
	if err != nil {
		return err
	}
	users, err := e.admin.Users(ctx, o.domain)
	if err != nil {
		return err
	}
	var rows []userRow
	for _, u := range users {
		if !u.Enabled {
			continue
		}
		account := u.NTAccount
		if account == "" {
			account = u.User.Alias
		}
		rows = append(rows, userRow{address: u.User.String(), account: account, name: u.DisplayName, email: u.Email, home: u.Home})
	}
	var w io.Writer = e.out
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if format == "ldif" {
		err = writeLDIF(w, rows, o.baseDN)
	} else {
		err = writeCSV(w, rows)
	}
	if err != nil {
		return err
	}
	if path != "" {
		fmt.Fprintf(e.stderr, "%d %s written to %s\n", len(rows), plural(len(rows), "user"), path)
	}
	return nil
}
