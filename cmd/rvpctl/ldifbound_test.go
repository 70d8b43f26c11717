package main

import (
	"encoding/base64"
	"strings"
	"testing"
)

// A user read from LDIF is bounded as a CSV row is (maxRowBytes), and a row of
// either format is UTF-8 through and through, its home server's name
// included: the same user file, exported as CSV or LDIF, reads the same.
func TestParseLDIFEntryBounds(t *testing.T) {
	long := strings.Repeat("x", maxRowBytes/2+1)
	in := "dn: CN=a\nsAMAccountName: alice\ndisplayName: " + long + "\nmail: " + long + "@example.test\n"
	rows, bad, err := parseLDIF(strings.NewReader(in))
	if err != nil || len(rows) != 0 || len(bad) != 1 || bad[0].line != 1 {
		t.Errorf("entry of %d bytes: rows %d, bad %v, %v; want it refused at line 1", len(in), len(rows), bad, err)
	}
	// Attributes not taken do not count: an export of every attribute
	// (a photo, certificates) is read.
	in = "dn: CN=a\nsAMAccountName: alice\nthumbnailPhoto: " + long + "\nuserCertificate: " + long + "\n"
	if rows, bad, err := parseLDIF(strings.NewReader(in)); err != nil || len(rows) != 1 || len(bad) != 0 {
		t.Errorf("entry with large attributes not taken: rows %d, bad %v, %v; want it read", len(rows), bad, err)
	}
	csvIn := "account,name,email\nalice," + long + "," + long + "@example.test\n"
	if rows, bad, err := parseCSV(strings.NewReader(csvIn)); err != nil || len(rows) != 0 || len(bad) != 1 {
		t.Errorf("the same as CSV: rows %d, bad %v, %v", len(rows), bad, err)
	}

	in = "dn: CN=b\nsAMAccountName: bob\nmsExchIMVirtualServer:: " + base64.StdEncoding.EncodeToString([]byte("CN=home\xff1,CN=x")) + "\n"
	rows, bad, err = parseLDIF(strings.NewReader(in))
	if err != nil || len(rows) != 0 || len(bad) != 1 {
		t.Errorf("home server name of invalid UTF-8: rows %+v, bad %v, %v; want it refused", rows, bad, err)
	}
}
