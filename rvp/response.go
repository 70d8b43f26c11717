package rvp

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Version is the RVP-Notifications-Version the server sends; real clients
// send 0.2 and the server accepts any value.
const Version = "0.2"

// ClientPatience is how long librvp waits for the answer to a request
// before it gives up on it: every wait of the server on a client's behalf
// (a home node's reply, a message's delivery) must end before it.
const ClientPatience = 30 * time.Second

// Header names in Exchange's spelling.
const (
	HdrVersion          = "RVP-Notifications-Version"
	HdrFromPrincipal    = "RVP-From-Principal"
	HdrSubscriptionID   = "Subscription-Id"
	HdrLifetime         = "Subscription-Lifetime"
	HdrNotificationType = "Notification-Type"
	HdrCallBack         = "Call-Back"
	HdrAckType          = "RVP-Ack-Type"
	HdrHopCount         = "RVP-Hop-Count"
	HdrDepth            = "Depth"
	HdrContentType      = "Content-Type"
	HdrContentLength    = "Content-Length"
	HdrLocation         = "Location"
	HdrRetryAfter       = "Retry-After"
	HdrWWWAuthenticate  = "WWW-Authenticate"
	HdrAuthorization    = "Authorization"
)

// ContentTypeXML is the Content-Type of every XML body.
const ContentTypeXML = "text/xml"

// Field is a header field with its name spelled exactly as it is sent.
type Field struct{ Name, Value string }

// Response is an RVP response. WriteTo always adds
// RVP-Notifications-Version (unless set) and Content-Length, and never uses
// chunked encoding: Miranda and librvp read bodies only by Content-Length.
type Response struct {
	Status int
	Reason string // "" = ReasonPhrase(Status)
	Header []Field
	Body   []byte
	// Close asks for the connection to be closed after the response.
	Close bool
	// Head marks the answer to a HEAD request: the header is sent, the
	// body never (RFC 9110 §9.3.2), so the next response on the
	// connection is where the client looks for it. Content-Length still
	// gives the body's length.
	Head bool
}

// Set adds a header field, replacing one of the same name.
func (r *Response) Set(name, value string) {
	for i, f := range r.Header {
		if strings.EqualFold(f.Name, name) {
			r.Header[i].Value = value
			return
		}
	}
	r.Header = append(r.Header, Field{name, value})
}

// Get returns the value of the named header field.
func (r *Response) Get(name string) string {
	for _, f := range r.Header {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// WriteTo writes the response to w and flushes it.
func (r *Response) WriteTo(w *bufio.Writer) error {
	reason := r.Reason
	if reason == "" {
		reason = ReasonPhrase(r.Status)
	}
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(r.Status))
	w.WriteByte(' ')
	w.WriteString(reason)
	w.WriteString("\r\n")
	hasVersion := false
	for _, f := range r.Header {
		if strings.EqualFold(f.Name, HdrContentLength) || strings.EqualFold(f.Name, "Transfer-Encoding") {
			continue
		}
		hasVersion = hasVersion || strings.EqualFold(f.Name, HdrVersion)
		writeField(w, f.Name, f.Value)
	}
	if !hasVersion {
		writeField(w, HdrVersion, Version)
	}
	if r.Close {
		writeField(w, "Connection", "close")
	}
	writeField(w, HdrContentLength, strconv.Itoa(len(r.Body)))
	w.WriteString("\r\n")
	if !r.Head {
		w.Write(r.Body)
	}
	return w.Flush()
}

func writeField(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	// A value must never break the header: line breaks become spaces,
	// and so does every other control character but tab (RFC 9110 §5.5),
	// which readAnswer leaves in what another organisation's server
	// answers and the gateway relays (NUL ends a C string: librvp and
	// Miranda read one).
	if i := strings.IndexFunc(value, isCTL); i >= 0 {
		b := []byte(value)
		for ; i < len(b); i++ {
			if isCTL(rune(b[i])) {
				b[i] = ' '
			}
		}
		value = string(b)
	}
	w.WriteString(value)
	w.WriteString("\r\n")
}

// ReasonPhrase returns Exchange's reason phrase for a status code, where
// Exchange had its own; clients read only the number.
func ReasonPhrase(code int) string {
	switch code {
	case StatusOK:
		return "Successful"
	case StatusMoved:
		return "Object moved"
	case StatusUnauthorized:
		return "Access Denied"
	}
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}
