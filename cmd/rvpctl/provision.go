package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// A user file is what `rvpctl user import` reads and `rvpctl user export`
// writes: CSV with a header row, or LDIF as Active Directory's ldifde
// exports it. Both give the same rows.

// userRow is one user of a user file, as written there.
type userRow struct {
	// line is where the row starts in the file (1 is the first line).
	line int
	// address is the IM address (alias@domain), or an alias whose
	// domain comes from elsewhere (the e-mail's, or -domain).
	address string
	// account is the Windows account (sAMAccountName), when given.
	account string
	name    string
	email   string
	home    string
	// password is the password, "generate", or "" for none.
	password string
}

// rowError is a row that cannot be read, by line.
type rowError struct {
	line int
	err  error
}

func (e rowError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }

// maxRowBytes bounds a row (a line of CSV, an entry of LDIF): a user has
// a few short attributes.
const maxRowBytes = 64 << 10

// csvColumns maps the header names a CSV file may use (lower case,
// without spaces, dashes or underscores) to the column they are.
var csvColumns = map[string]string{
	"address": "address", "imaddress": "address", "user": "address", "msexchimaddress": "address",
	"account": "account", "samaccountname": "account", "ntaccount": "account", "alias": "account",
	"name": "name", "displayname": "name",
	"email": "email", "mail": "email", "emailaddress": "email",
	"home": "home", "homeserver": "home", "msexchimvirtualserver": "home",
	"password": "password",
}

func columnName(h string) string {
	h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
	return strings.NewReplacer(" ", "", "-", "", "_", "").Replace(h)
}

// unicodeText reads a user file as UTF-8: one that starts with a UTF-16
// byte order mark (ldifde -u, Windows' "Unicode" text) is decoded from
// UTF-16, one with UTF-8's loses it, and the others are read as they are.
func unicodeText(r io.Reader) io.Reader {
	return transform.NewReader(r, unicode.BOMOverride(transform.Nop))
}

// parseCSV reads a CSV user file. A row that cannot be read is reported
// by its line, and the others are read all the same; a file without a
// usable header row is an error.
func parseCSV(r io.Reader) ([]userRow, []rowError, error) {
	cr := csv.NewReader(bufio.NewReaderSize(unicodeText(r), 64<<10))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("header row: %w (a CSV user file starts with a row naming its columns: address,name,email,home,password)", err)
	}
	cols := make([]string, len(header))
	seen := map[string]bool{}
	for i, h := range header {
		c, ok := csvColumns[columnName(h)]
		if !ok {
			continue // a column of the export tool's that is not ours
		}
		if seen[c] {
			return nil, nil, fmt.Errorf("header row: two columns give the %s (%q)", c, h)
		}
		seen[c], cols[i] = true, c
	}
	if !seen["address"] && !seen["account"] {
		return nil, nil, fmt.Errorf("header row %q: no column gives the user (address, or account/sAMAccountName)", strings.Join(header, ","))
	}
	var rows []userRow
	var bad []rowError
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				bad = append(bad, rowError{pe.StartLine, pe.Err})
				continue // the reader goes on after the record
			}
			return rows, bad, err
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a blank line
		}
		row := userRow{line: line}
		size := 0
		var spaced error // a password with white space around it
		for i, v := range rec {
			size += len(v)
			if i >= len(cols) {
				break
			}
			if cols[i] == "password" && v != strings.TrimSpace(v) {
				// Trimmed, it would be a password nobody was given;
				// kept, one written "alice, secret" would be " secret".
				spaced = errors.New("the password has white space at its start or end: write it without (a password is taken as it is, never trimmed)")
			}
			v = strings.TrimSpace(v)
			if cols[i] != "password" {
				v = fromCell(v)
			}
			switch cols[i] {
			case "address":
				row.address = v
			case "account":
				row.account = v
			case "name":
				row.name = v
			case "email":
				row.email = v
			case "home":
				row.home = homeName(v)
			case "password":
				row.password = v
			}
		}
		switch {
		case size > maxRowBytes:
			bad = append(bad, rowError{line, fmt.Errorf("row of %d bytes: more than %d", size, maxRowBytes)})
		case !utf8.ValidString(strings.Join(rec, "")):
			bad = append(bad, rowError{line, errors.New("not UTF-8 text (save the file as UTF-8)")})
		case len(rec) > len(cols):
			bad = append(bad, rowError{line, fmt.Errorf("%d fields, the header names %d", len(rec), len(cols))})
		case spaced != nil:
			bad = append(bad, rowError{line, spaced})
		default:
			rows = append(rows, row)
		}
	}
	return rows, bad, nil
}

// homeName takes a home server's name from a value that may be a
// distinguished name (CN=home1,CN=InstantMessaging,...), as Active
// Directory writes msExchIMVirtualServer.
func homeName(v string) string {
	if len(v) > 3 && strings.EqualFold(v[:3], "cn=") {
		v = v[3:]
		if i := strings.IndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
	}
	return strings.TrimSpace(v)
}

// parseLDIF reads LDIF as Active Directory's ldifde exports it: entries
// separated by blank lines, attributes "name: value" or "name:: base64",
// long lines folded (a continuation starts with one space), comments
// starting with '#'. Of each entry it takes sAMAccountName, mail,
// displayName, and msExchIMAddress and msExchIMVirtualServer when they
// are there. Entries without an account or address (containers) are
// skipped, and so are those whose objectClass is neither user nor
// inetOrgPerson, or is computer (groups and computers have a
// sAMAccountName too), and accounts userAccountControl says are disabled
// (krbtgt, Guest, people who left). An entry that cannot be read is reported by its
// first line.
func parseLDIF(r io.Reader) ([]userRow, []rowError, error) {
	sc := bufio.NewScanner(unicodeText(r))
	sc.Buffer(make([]byte, 0, 64<<10), maxRowBytes)
	var rows []userRow
	var bad []rowError
	var attrs [][2]string
	start, lineNo := 0, 0
	var cur strings.Builder
	curLine := 0
	var entryErr *rowError // the entry's first error, at its line
	fail := func(line int, format string, args ...any) {
		if entryErr == nil {
			entryErr = &rowError{line, fmt.Errorf(format, args...)}
		}
	}
	flushAttr := func() {
		if cur.Len() == 0 {
			return
		}
		line := cur.String()
		cur.Reset()
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			fail(curLine, "%q is no attribute (want name: value)", line)
			return
		}
		switch {
		case strings.HasPrefix(value, ":"):
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value[1:]))
			if err != nil {
				fail(curLine, "attribute %s: bad base64", name)
				return
			}
			value = string(b)
		case strings.HasPrefix(value, "<"):
			fail(curLine, "attribute %s: values from URLs are not read", name)
			return
		default:
			value = strings.TrimPrefix(value, " ")
		}
		attrs = append(attrs, [2]string{strings.ToLower(strings.TrimSpace(name)), value})
	}
	flushEntry := func() {
		flushAttr()
		defer func() { attrs, entryErr = attrs[:0], nil }()
		if len(attrs) == 0 && entryErr == nil {
			return
		}
		if entryErr != nil {
			bad = append(bad, *entryErr)
			return
		}
		row := userRow{line: start}
		var classes []string
		disabled := false
		for _, a := range attrs {
			switch a[0] {
			case "objectclass":
				classes = append(classes, strings.ToLower(strings.TrimSpace(a[1])))
			case "samaccountname":
				row.account = a[1]
			case "mail":
				row.email = a[1]
			case "displayname":
				row.name = a[1]
			case "msexchimaddress":
				row.address = a[1]
			case "msexchimvirtualserver":
				row.home = homeName(a[1])
			case "useraccountcontrol":
				// ACCOUNTDISABLE (0x2): krbtgt, Guest, people who left.
				flags, err := strconv.ParseUint(strings.TrimSpace(a[1]), 10, 32)
				disabled = err == nil && flags&0x2 != 0
			case "changetype":
				if !strings.EqualFold(a[1], "add") {
					bad = append(bad, rowError{start, fmt.Errorf("changetype %q: only entries to add are read", a[1])})
					return
				}
			}
		}
		switch {
		case row.account == "" && row.address == "":
			return // not a user: a container, the domain
		case len(classes) > 0 && (!slices.Contains(classes, "user") && !slices.Contains(classes, "inetorgperson") || slices.Contains(classes, "computer")):
			return // a group or a computer: they have a sAMAccountName too
		case disabled:
			return // an account Active Directory disables signs in nowhere
		case len(row.account)+len(row.address)+len(row.email)+len(row.name)+len(row.home) > maxRowBytes:
			// Only what is taken counts: an export of every attribute
			// (a photo, group memberships) is read all the same.
			bad = append(bad, rowError{start, fmt.Errorf("a user of more than %d bytes (account, address, e-mail, name and home together)", maxRowBytes)})
		case !utf8.ValidString(row.account + row.address + row.email + row.name + row.home):
			bad = append(bad, rowError{start, errors.New("not UTF-8 text")})
		default:
			rows = append(rows, row)
		}
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case line == "":
			flushEntry()
			start = 0
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, " "):
			if start == 0 {
				start = lineNo
			}
			switch {
			case cur.Len() == 0:
				fail(lineNo, "a continuation line with no attribute before it")
			case cur.Len()+len(line) > maxRowBytes:
				fail(lineNo, "an attribute longer than %d bytes", maxRowBytes)
			default:
				cur.WriteString(line[1:])
			}
		default:
			if start == 0 {
				start = lineNo
				if lineNo == 1 && strings.HasPrefix(strings.ToLower(line), "version:") {
					start = 0
					continue
				}
			}
			flushAttr()
			cur.WriteString(line)
			curLine = lineNo
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return rows, bad, fmt.Errorf("line %d: longer than %d bytes", lineNo+1, maxRowBytes)
		}
		return rows, bad, err
	}
	flushEntry()
	return rows, bad, nil
}

// writeCSV writes users as a CSV user file, which import reads back.
// Its cells are neutralised (cell): a spreadsheet opening it evaluates
// none as a formula.
func writeCSV(w io.Writer, rows []userRow) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"address", "account", "name", "email", "home", "password"})
	for _, r := range rows {
		cw.Write([]string{cell(r.address), cell(r.account), cell(r.name), cell(r.email), cell(r.home), ""})
	}
	cw.Flush()
	return cw.Error()
}

// formulaLike reports whether a spreadsheet (Excel, LibreOffice) would
// take a CSV cell holding v for a formula, or v is such a cell
// neutralised already: v starts with '=', '+', '-', '@', a tab or a
// carriage return (OWASP's CSV injection), after any single quotes.
func formulaLike(v string) bool {
	v = strings.TrimLeft(v, "'")
	return v != "" && strings.IndexByte("=+-@\t\r", v[0]) >= 0
}

// cell returns v as a CSV file rvpctl writes holds it: with a single
// quote before it when it is formulaLike, which spreadsheets show as
// text and do not evaluate (a display name "=HYPERLINK(...)" set in
// Active Directory, an alias "-1+2"). The directory's text is written
// so, and read back by fromCell: a value that starts with quotes and
// then one of those characters gets one quote more, so that every
// value reads back as it was.
func cell(v string) string {
	if formulaLike(v) {
		return "'" + v
	}
	return v
}

// fromCell is the value of a cell that cell wrote: without the quote it
// added. A cell with no such quote (a file another tool wrote) is taken
// as it is.
func fromCell(c string) string {
	if strings.HasPrefix(c, "'") && formulaLike(c[1:]) {
		return c[1:]
	}
	return c
}

// writeLDIF writes users as LDIF entries an Active Directory could take
// (ldifde -i), and that import reads back: the IM address as Exchange
// 2000 kept it (msExchIMAddress) and the home server's name as
// msExchIMVirtualServer.
func writeLDIF(w io.Writer, rows []userRow, baseDN string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "version: 1")
	for _, r := range rows {
		cn := r.name
		if cn == "" {
			cn = r.account
		}
		base := baseDN
		if base == "" {
			_, domain, _ := strings.Cut(r.address, "@")
			base = "DC=" + strings.Join(strings.Split(domain, "."), ",DC=")
		}
		fmt.Fprintln(bw)
		ldifAttr(bw, "dn", "CN="+escapeDN(cn)+",CN=Users,"+base)
		ldifAttr(bw, "changetype", "add")
		ldifAttr(bw, "objectClass", "user")
		ldifAttr(bw, "sAMAccountName", r.account)
		if r.name != "" {
			ldifAttr(bw, "displayName", r.name)
		}
		if r.email != "" {
			ldifAttr(bw, "mail", r.email)
		}
		ldifAttr(bw, "msExchIMAddress", r.address)
		if r.home != "" {
			ldifAttr(bw, "msExchIMVirtualServer", r.home)
		}
	}
	return bw.Flush()
}

// ldifAttr writes one attribute: base64 when the value is not safe as
// it stands (RFC 2849), folded at 76 columns.
func ldifAttr(w *bufio.Writer, name, value string) {
	line := name + ": " + value
	if !ldifSafe(value) {
		line = name + ":: " + base64.StdEncoding.EncodeToString([]byte(value))
	}
	for len(line) > 76 {
		w.WriteString(line[:76] + "\n ")
		line = line[76:]
	}
	w.WriteString(line + "\n")
}

func ldifSafe(v string) bool {
	if v == "" {
		return true
	}
	if v[0] == ' ' || v[0] == ':' || v[0] == '<' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// escapeDN escapes the characters a relative distinguished name's value
// may not hold as they are (RFC 4514).
func escapeDN(v string) string {
	var b bytes.Buffer
	for i, r := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;=`, r), r == '#' && i == 0, r == ' ' && (i == 0 || i == len(v)-1):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
