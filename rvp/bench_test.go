package rvp

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// A login SUBSCRIBE as librvp sends it, with its NTLM authorization.
var benchRequest = []byte("SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\n" +
	"Host: im.example.test\r\n" +
	"RVP-Notifications-Version: 0.2\r\n" +
	"Notification-Type: pragma/notify\r\n" +
	"RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n" +
	"Subscription-Lifetime: 14400\r\n" +
	"Call-Back: http://10.0.0.7:5757\r\n" +
	"Authorization: NTLM TlRMTVNTUAADAAAAGAAYAEAAAAAYABgAWAAAAAAAAAAAAAAACgAKAHAAAAAKAAoAegAAAAAAAAAAAAAABYIIAA==\r\n" +
	"Content-Length: 0\r\n\r\n")

// BenchmarkReadRequest parses a typical RVP request with our parser and,
// as the baseline of the same run, with net/http's.
func BenchmarkReadRequest(b *testing.B) {
	b.Run("rvp", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(benchRequest)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(benchRequest)
			br.Reset(r)
			if _, err := ReadRequest(br, Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(benchRequest)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(benchRequest)
			br.Reset(r)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}
