package main

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// sample are rows with what makes writing hard: commas, quotes, leading
// spaces and colons, non-ASCII text.
var sample = []userRow{
	{address: "alice@example.test", account: "alice", name: "Alice Example", email: "alice@example.test", home: "home1"},
	{address: "bob@example.test", account: "EXAMPLE-bob", name: `Bob "the builder", Jr.`, email: "bob@example.test", home: "home2"},
	{address: "zoe@example.test", account: "zoe", name: " Zoë: Ünïcode ", email: "", home: "home1"},
	{address: "long@example.test", account: "long", name: strings.Repeat("a very long display name ", 8), home: "home1"},
}

// TestUserFilesRoundTrip: what export writes, import reads back the same,
// in both formats.
func TestUserFilesRoundTrip(t *testing.T) {
	norm := func(rows []userRow) []userRow {
		out := make([]userRow, len(rows))
		for i, r := range rows {
			r.line = 0
			r.name = strings.TrimSpace(r.name) // CSV fields are trimmed
			out[i] = r
		}
		return out
	}
	var b bytes.Buffer
	if err := writeCSV(&b, sample); err != nil {
		t.Fatal(err)
	}
	rows, bad, err := parseCSV(&b)
	if err != nil || len(bad) > 0 {
		t.Fatalf("CSV read back: %v %v", err, bad)
	}
	if !reflect.DeepEqual(norm(rows), norm(sample)) {
		t.Errorf("CSV round trip:\n got %+v\nwant %+v", rows, sample)
	}
	b.Reset()
	if err := writeLDIF(&b, sample, ""); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if len(line) > 77 {
			t.Errorf("LDIF line of %d characters is not folded: %q", len(line), line)
		}
	}
	if !strings.Contains(b.String(), "dn: CN=Bob \"the builder\"\\, Jr.,CN=Users,DC=example,DC=test") &&
		!strings.Contains(b.String(), "dn: CN=Bob \\\"the builder\\\"\\, Jr.,CN=Users,DC=example,DC=test") {
		t.Errorf("LDIF DN of bob:\n%s", b.String())
	}
	rows, bad, err = parseLDIF(&b)
	if err != nil || len(bad) > 0 {
		t.Fatalf("LDIF read back: %v %v", err, bad)
	}
	want := norm(sample)
	want[2].name = sample[2].name // base64 in LDIF keeps its spaces
	if !reflect.DeepEqual(norm(rows)[:2], want[:2]) || rows[2].name != sample[2].name || rows[3].name != sample[3].name {
		t.Errorf("LDIF round trip:\n got %+v\nwant %+v", rows, sample)
	}
}

// TestParseCSVLines: rows are numbered by their line in the file, quoted
// fields spanning lines included, and a bad row does not stop the others.
func TestParseCSVLines(t *testing.T) {
	in := "User,Display Name,Mail,Home Server,Extra\n" +
		"alice@example.test,Alice,,home1,x\n" +
		"\n" +
		"bob@example.test,\"Bob\nsecond line\",,home1,y\n" +
		"carol@example.test,Carol,,home1,z,too many\n" +
		"dave@example.test,Dave,,home1,w\n"
	rows, bad, err := parseCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	for _, r := range rows {
		lines[r.address] = r.line
	}
	if !reflect.DeepEqual(lines, map[string]int{"alice@example.test": 2, "bob@example.test": 4, "dave@example.test": 7}) {
		t.Errorf("rows by line: %v", lines)
	}
	if len(bad) != 1 || bad[0].line != 6 {
		t.Errorf("bad rows: %v, want line 6", bad)
	}
	for _, hdr := range []string{"", "name,email\n", "address,Address\n"} {
		if _, _, err := parseCSV(strings.NewReader(hdr)); err == nil {
			t.Errorf("header %q: no error", hdr)
		}
	}
}

func FuzzParseCSV(f *testing.F) {
	var b bytes.Buffer
	writeCSV(&b, sample)
	f.Add(b.String())
	f.Add("address,password\n\"a@b,c\nd\"\"e,\x00\n")
	f.Add("samaccountname;mail\n")
	f.Fuzz(func(t *testing.T, in string) {
		rows, bad, err := parseCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		last := 0
		for _, r := range rows {
			if r.line < 2 || r.line <= last {
				t.Fatalf("row at line %d after line %d", r.line, last)
			}
			last = r.line
			if !utf8.ValidString(r.address + r.name + r.email + r.home + r.password + r.account) {
				t.Fatalf("row of invalid UTF-8 accepted: %+v", r)
			}
		}
		for _, e := range bad {
			if e.line < 1 {
				t.Fatalf("bad row without a line: %v", e)
			}
		}
	})
}

func FuzzParseLDIF(f *testing.F) {
	var b bytes.Buffer
	writeLDIF(&b, sample, "")
	f.Add(b.String())
	f.Add("version: 1\n\ndn: x\nsAMAccountName:: AAAA\nmail: <file:///etc/passwd\n")
	f.Add("dn: x\nchangetype: modify\nsamaccountname: a\n \n#c\n")
	f.Fuzz(func(t *testing.T, in string) {
		rows, bad, err := parseLDIF(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.account == "" && r.address == "" {
				t.Fatalf("a row without a user: %+v", r)
			}
			if r.line < 1 {
				t.Fatalf("row without a line: %+v", r)
			}
			// As a CSV row is (FuzzParseCSV).
			if all := r.address + r.name + r.email + r.home + r.password + r.account; !utf8.ValidString(all) || len(all) > maxRowBytes {
				t.Fatalf("row of invalid UTF-8 or over %d bytes accepted: %+v", maxRowBytes, r)
			}
		}
		for _, e := range bad {
			if e.line < 1 {
				t.Fatalf("bad entry without a line: %v", e)
			}
		}
		// What is read is written back and read the same.
		var out bytes.Buffer
		if err := writeLDIF(&out, rows, "DC=x"); err != nil {
			t.Fatal(err)
		}
		again, bad2, err := parseLDIF(&out)
		if err != nil || len(bad2) > 0 || len(again) != len(rows) {
			t.Fatalf("written back: %d rows of %d, %v %v\n%s", len(again), len(rows), err, bad2, out.String())
		}
		for i := range rows {
			a, b := again[i], rows[i]
			a.line, b.line = 0, 0
			b.password = ""
			if a.account == "" {
				a.account = b.account
			}
			if a != b {
				t.Fatalf("entry %d written back as %+v, read as %+v", i, b, a)
			}
		}
	})
}

// TestParseLDIFOnlyUsers: of an Active Directory export, user entries
// are read, not the groups and computers beside them, which have a
// sAMAccountName too ("Administrators", "DC01$") and would become IM
// users.
func TestParseLDIFOnlyUsers(t *testing.T) {
	in := `version: 1

dn: CN=Administrators,CN=Builtin,DC=example,DC=test
changetype: add
objectClass: top
objectClass: group
sAMAccountName: Administrators

dn: CN=DC01,OU=Domain Controllers,DC=example,DC=test
changetype: add
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
objectClass: computer
sAMAccountName: DC01$

dn: CN=Erin,CN=Users,DC=example,DC=test
changetype: add
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: User
sAMAccountName: erin
mail: erin@example.test

dn: CN=Hand Written,CN=Users,DC=example,DC=test
sAMAccountName: hand

dn: CN=krbtgt,CN=Users,DC=example,DC=test
changetype: add
objectClass: user
sAMAccountName: krbtgt
userAccountControl: 514

dn: CN=Left,CN=Users,DC=example,DC=test
changetype: add
objectClass: user
sAMAccountName: left
userAccountControl: 66050

dn: CN=Frank,CN=Users,DC=example,DC=test
changetype: add
objectClass: user
sAMAccountName: frank
userAccountControl: 66048
`
	rows, bad, err := parseLDIF(strings.NewReader(in))
	if err != nil || len(bad) > 0 {
		t.Fatalf("parseLDIF: %v %v", err, bad)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.account)
	}
	if !reflect.DeepEqual(got, []string{"erin", "hand", "frank"}) {
		t.Errorf("accounts read %q, want the users erin, hand (no objectClass: taken) and frank only, not the accounts Active Directory disables (userAccountControl 0x2)", got)
	}
}

// TestUserFileCellsNoFormulas: an exported user file opened in a
// spreadsheet evaluates none of its cells as a formula (OWASP's CSV
// injection): before, a display name set in Active Directory as
// =HYPERLINK(...), or an alias starting with '-', was written as it is,
// and Excel or LibreOffice took it for a formula. A cell that would be
// one starts with a single quote, and import reads every value back as
// it was, a name that starts with a quote of its own included; a file
// another tool wrote, without those quotes, is read as it is.
func TestUserFileCellsNoFormulas(t *testing.T) {
	rows := []userRow{
		{address: "-1+2@example.test", account: "=cmd", name: `=HYPERLINK("http://evil.test/","click")`, email: "+ann@example.test", home: "@home1"},
		{address: "bob@example.test", account: "bob", name: "'=already quoted", email: "bob@example.test", home: "home1"},
		{address: "cat@example.test", account: "cat", name: "'s-Gravenhage", email: "cat@example.test", home: "home1"},
		{address: "dan@example.test", account: "dan", name: "Dan - the man", email: "dan@example.test", home: "home1"},
	}
	var b bytes.Buffer
	if err := writeCSV(&b, rows); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(b.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs[1:] {
		for _, c := range rec {
			if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				t.Errorf("cell %q: a spreadsheet evaluates it as a formula", c)
			}
		}
	}
	got, bad, err := parseCSV(bytes.NewReader(b.Bytes()))
	if err != nil || len(bad) > 0 {
		t.Fatalf("read back: %v %v", err, bad)
	}
	for i := range got {
		got[i].line = 0
	}
	if !reflect.DeepEqual(got, rows) {
		t.Errorf("read back:\n got %+v\nwant %+v", got, rows)
	}
	// A user file Active Directory's csvde or an HR system wrote.
	got, bad, err = parseCSV(strings.NewReader("address,name,password\n-1+2@example.test,'s-Gravenhage,'=secret-1\n"))
	if err != nil || len(bad) > 0 || len(got) != 1 {
		t.Fatalf("another tool's file: %v %v %v", got, err, bad)
	}
	if r := got[0]; r.address != "-1+2@example.test" || r.name != "'s-Gravenhage" || r.password != "'=secret-1" {
		t.Errorf("another tool's file read as %+v, want its values as they are", r)
	}

	// The passwords file an import writes, and reads again.
	name := filepath.Join(t.TempDir(), "users.csv.passwords.csv")
	pf, err := openPasswordFile(name, false)
	if err != nil {
		t.Fatal(err)
	}
	pf.w.Write(passwordLine("-1+2@example.test", "Abcdefgh234567"))
	pf.w.Flush()
	pf.close()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "\n-1+2@") {
		t.Errorf("passwords file:\n%s\na spreadsheet evaluates its address as a formula", data)
	}
	known, err := readPasswordFile(name)
	if err != nil || known["-1+2@example.test"] != "Abcdefgh234567" {
		t.Errorf("passwords file read back: %v, %v", known, err)
	}
}

// TestParseUTF16: ldifde -u writes its export in UTF-16 (little-endian,
// with a byte order mark), as Windows' "Unicode" text is, and Excel's
// "Unicode Text" too; such a file was refused line by line ("\x00\r\x00
// is no attribute"). It is read as the same file in UTF-8, non-ASCII
// names included, whatever the byte order its mark says.
func TestParseUTF16(t *testing.T) {
	ldif := "version: 1\r\n\r\ndn: CN=Hans Müller,CN=Users,DC=example,DC=test\r\nchangetype: add\r\nobjectClass: user\r\n" +
		"sAMAccountName: hans\r\ndisplayName: Hans Müller\r\nmail: hans@example.test\r\n\r\n"
	csv := "address,name\r\nzoe@example.test,Zoë Ördög\r\n"
	for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		rows, bad, err := parseLDIF(bytes.NewReader(utf16Text(order, ldif)))
		if err != nil || len(bad) > 0 || len(rows) != 1 || rows[0].account != "hans" || rows[0].name != "Hans Müller" {
			t.Errorf("LDIF in UTF-16 (%v): %+v %v %v", order, rows, bad, err)
		}
		rows, bad, err = parseCSV(bytes.NewReader(utf16Text(order, csv)))
		if err != nil || len(bad) > 0 || len(rows) != 1 || rows[0].name != "Zoë Ördög" {
			t.Errorf("CSV in UTF-16 (%v): %+v %v %v", order, rows, bad, err)
		}
	}
}

// utf16Text is s in UTF-16 of the byte order given, after its byte order
// mark.
func utf16Text(order binary.AppendByteOrder, s string) []byte {
	var b []byte
	for _, u := range append([]uint16{0xfeff}, utf16.Encode([]rune(s))...) {
		b = order.AppendUint16(b, u)
	}
	return b
}
