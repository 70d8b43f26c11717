package rvp

import (
	"bufio"
	"bytes"
	"io"
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

// BenchmarkWriteResponse writes a PROPPATCH's 207 answer as the gateway
// does, and looks up the header fields a gateway reads in a request.
func BenchmarkWriteResponse(b *testing.B) {
	body := []byte(`<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:response><d:href>http://127.0.0.1:18180/instmsg/aliases/alice</d:href><d:propstat><d:prop><r:state><r:leased-value><r:value><r:online/></r:value><d:timeout>1200</d:timeout></r:leased-value><r:view-id>1001</r:view-id></r:state></d:prop><d:status>HTTP/1.1 200 Successful</d:status></d:propstat></d:response></d:multistatus>`)
	bw := bufio.NewWriter(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		r := &Response{Status: 207, Body: body}
		r.Set(HdrContentType, ContentTypeXML)
		r.Set(HdrSubscriptionID, "12")
		if err := r.WriteTo(bw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeaderGet(b *testing.B) {
	req, err := ReadRequest(bufio.NewReader(bytes.NewReader(benchRequest)), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, name := range []string{HdrAuthorization, HdrFromPrincipal, HdrNotificationType, HdrCallBack, HdrLifetime, HdrSubscriptionID, "Host"} {
			_ = req.Header.Get(name)
		}
	}
}
