package rvp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Limits bound what ReadRequest accepts. Zero fields take the defaults.
type Limits struct {
	// MaxLine bounds the request line and each header line. Default 8 KiB.
	MaxLine int
	// MaxHeaders bounds the number of header fields. Default 64.
	MaxHeaders int
	// MaxHeaderBytes bounds all header lines together. Default 32 KiB.
	MaxHeaderBytes int
	// MaxBody bounds the body. Default 256 KiB.
	MaxBody int
}

func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = 8 << 10
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = 64
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 32 << 10
	}
	if l.MaxBody <= 0 {
		l.MaxBody = 256 << 10
	}
	return l
}

// Header holds header fields keyed by lower-case name, values in the order
// received. RVP header names are case-insensitive.
type Header map[string][]string

// Get returns the first value of the named field, or "".
func (h Header) Get(name string) string {
	if v := h.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Has reports whether the named field is present.
func (h Header) Has(name string) bool { return h.values(name) != nil }

// values returns the values of the named field, lower-casing the name
// without allocating (the gateway looks up a dozen fields a request).
func (h Header) values(name string) []string {
	var buf [32]byte
	if len(name) > len(buf) {
		return h[strings.ToLower(name)]
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return h[string(buf[:len(name)])]
}

// Add appends a value to the named field.
func (h Header) Add(name, value string) {
	k := strings.ToLower(name)
	h[k] = append(h[k], value)
}

// Request is a parsed RVP request.
type Request struct {
	Method string
	Target string // request-target as sent: origin-form or absolute-form
	Proto  string // "HTTP/1.1" or "HTTP/1.0"
	Header Header
	Body   []byte
	// Close reports that the client asked to close the connection after
	// the response (Connection: close, or HTTP/1.0 without keep-alive).
	Close bool
}

// ProtocolError is a request the server cannot parse. Status is the HTTP
// status to answer with; the connection must be closed afterwards, since
// the stream position is no longer known.
type ProtocolError struct {
	Status int
	Msg    string
}

func (e *ProtocolError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

func protoErr(status int, format string, args ...any) error {
	return &ProtocolError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// ErrIdle is returned by ReadRequest when the connection closed cleanly
// between requests.
var ErrIdle = errors.New("connection closed between requests")

// singleValued lists the fields a request may carry once (lower case):
// with two, which one counts would depend on who reads them (RFC 9110
// §5.3), so a duplicate is refused rather than first-wins.
var singleValued = []string{"host", "content-type", "authorization", "rvp-from-principal", "subscription-id",
	"subscription-lifetime", "notification-type", "call-back", "rvp-ack-type", "rvp-hop-count", "depth"}

// ReadRequest reads one request from br. It accepts CRLF and bare LF line
// ends, header names in any case, folded header lines, and a missing
// Content-Length (an empty body). It refuses chunked bodies, which no RVP
// client sends; an HTTP/1.1 request without exactly one Host (RFC 9112
// §3.2); a single-valued field given twice; and control characters other
// than tab inside a field value (RFC 9110 §5.5), which would otherwise be
// carried into events and forwarded to callbacks.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	var line []byte
	var err error
	// RFC 9112 §2.2: ignore at least one empty line before the request line.
	for range 4 {
		line, err = readLine(br, lim.MaxLine)
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return nil, ErrIdle
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && len(line) > 0 {
				return nil, protoErr(StatusRequestTimeout, "the request line did not arrive in time")
			}
			return nil, err
		}
		if len(line) > 0 {
			break
		}
	}
	if len(line) == 0 {
		return nil, protoErr(StatusBadRequest, "empty request line")
	}
	// Room for 14 fields: the requests recorded from clients carry 5 to
	// 11 (one SUBSCRIBE 19), and a map made for 16 takes a table of 32
	// slots, twice the bytes, for every request.
	req := &Request{Header: make(Header, 14)}
	if err := parseRequestLine(req, string(line)); err != nil {
		return nil, err
	}
	// One backing array for the values of the fields seen once: most are.
	vals := make([]string, 0, 16)

	total := 0
	var last string // lower-case name of the previous field, for folded lines
	// fold is the value of field last while continuation lines are added
	// to it, set into the header once it is whole: joining the pieces one
	// line at a time copied the value so far for every line, hundreds of
	// megabytes for a header within every limit.
	var fold []byte
	folded := func() {
		if fold != nil {
			vs := req.Header[last]
			vs[len(vs)-1] = string(fold)
			fold = nil
		}
	}
	for {
		line, err = readLine(br, lim.MaxLine)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, protoErr(StatusBadRequest, "connection closed inside the header")
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, protoErr(StatusRequestTimeout, "the header did not arrive in time")
			}
			return nil, err
		}
		if len(line) == 0 {
			folded()
			break
		}
		total += len(line)
		if total > lim.MaxHeaderBytes {
			return nil, protoErr(StatusHeaderTooLarge, "header larger than %d bytes", lim.MaxHeaderBytes)
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return nil, protoErr(StatusBadRequest, "continuation line before any header field")
			}
			if i := bytes.IndexFunc(line, isCTL); i >= 0 {
				return nil, protoErr(StatusBadRequest, "control character %#x in the value of %s", line[i], last)
			}
			if fold == nil {
				vs := req.Header[last]
				fold = append(make([]byte, 0, len(vs[len(vs)-1])+len(line)+1), vs[len(vs)-1]...)
			}
			if piece := bytes.TrimSpace(line); len(piece) > 0 {
				if len(fold) > 0 {
					fold = append(fold, ' ')
				}
				fold = append(fold, piece...)
			}
			continue
		}
		folded()
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return nil, protoErr(StatusBadRequest, "header line without ':'")
		}
		if !isToken(name) {
			return nil, protoErr(StatusBadRequest, "bad header field name %q", name)
		}
		last = lowerName(name)
		have := req.Header[last]
		if len(req.Header) >= lim.MaxHeaders && have == nil {
			return nil, protoErr(StatusHeaderTooLarge, "more than %d header fields", lim.MaxHeaders)
		}
		value = bytes.TrimSpace(value)
		if i := bytes.IndexFunc(value, isCTL); i >= 0 {
			return nil, protoErr(StatusBadRequest, "control character %#x in the value of %s", value[i], name)
		}
		v := string(value)
		if have == nil {
			vals = append(vals, v)
			req.Header[last] = vals[len(vals)-1 : len(vals) : len(vals)]
		} else {
			req.Header[last] = append(have, v)
		}
	}

	for _, name := range singleValued {
		if n := len(req.Header[name]); n > 1 {
			return nil, protoErr(StatusBadRequest, "%s given %d times; send it once", req.Header.canonical(name), n)
		}
	}
	if req.Proto == "HTTP/1.1" && !req.Header.Has("Host") {
		return nil, protoErr(StatusBadRequest, "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)")
	}
	if req.Header.Has("Transfer-Encoding") {
		return nil, protoErr(StatusNotImplemented, "Transfer-Encoding is not supported; send the body with Content-Length")
	}
	n := 0
	if cl := req.Header["content-length"]; len(cl) > 0 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return nil, protoErr(StatusBadRequest, "conflicting Content-Length fields")
			}
		}
		n, err = strconv.Atoi(cl[0])
		if err != nil || n < 0 || cl[0][0] == '+' {
			return nil, protoErr(StatusBadRequest, "bad Content-Length %q", cl[0])
		}
	}
	if n > lim.MaxBody {
		return nil, protoErr(StatusTooLarge, "body of %d bytes exceeds the limit of %d", n, lim.MaxBody)
	}
	if n > 0 {
		req.Body = make([]byte, n)
		if _, err := io.ReadFull(br, req.Body); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, protoErr(StatusRequestTimeout, "the body did not arrive in time (%d bytes said, fewer came)", n)
			}
			return nil, protoErr(StatusBadRequest, "body shorter than Content-Length: %v", err)
		}
	}

	conn := strings.ToLower(req.Header.Get("Connection"))
	switch {
	case req.Proto == "HTTP/1.0":
		req.Close = !strings.Contains(conn, "keep-alive")
	default:
		req.Close = strings.Contains(conn, "close")
	}
	return req, nil
}

// lowerName returns the lower-cased field name, without allocating for
// the fields RVP clients send.
func lowerName(name []byte) string {
	var buf [32]byte
	if len(name) > len(buf) {
		return strings.ToLower(string(name))
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch l := buf[:len(name)]; string(l) {
	case "host":
		return "host"
	case "content-length":
		return "content-length"
	case "content-type":
		return "content-type"
	case "connection":
		return "connection"
	case "authorization":
		return "authorization"
	case "rvp-notifications-version":
		return "rvp-notifications-version"
	case "rvp-from-principal":
		return "rvp-from-principal"
	case "subscription-id":
		return "subscription-id"
	case "subscription-lifetime":
		return "subscription-lifetime"
	case "notification-type":
		return "notification-type"
	case "call-back":
		return "call-back"
	case "rvp-ack-type":
		return "rvp-ack-type"
	case "rvp-hop-count":
		return "rvp-hop-count"
	case "depth":
		return "depth"
	case "user-agent":
		return "user-agent"
	default:
		return string(l)
	}
}

func parseRequestLine(req *Request, line string) error {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(strings.TrimLeft(rest, " "), " ")
	proto = strings.TrimSpace(proto)
	if !ok1 || !ok2 || target == "" {
		return protoErr(StatusBadRequest, "malformed request line %q", truncate(line, 80))
	}
	if !isToken(method) {
		return protoErr(StatusBadRequest, "bad method %q", truncate(method, 40))
	}
	switch proto {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if strings.HasPrefix(proto, "HTTP/") {
			return protoErr(StatusHTTPVersion, "HTTP version %q not supported", truncate(proto, 20))
		}
		return protoErr(StatusBadRequest, "malformed request line %q", truncate(line, 80))
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return protoErr(StatusBadRequest, "bad request target")
		}
	}
	req.Method, req.Target, req.Proto = method, target, proto
	return nil
}

// readLine reads a line ending in LF (CR before it is dropped), at most max
// bytes long.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if err == nil && buf == nil {
			// The whole line is in the reader's buffer: use it there (it is
			// valid until the next read, and callers copy what they keep).
			if len(frag) > max+2 {
				return nil, protoErr(StatusHeaderTooLarge, "line longer than %d bytes", max)
			}
			buf = frag
			break
		}
		if len(buf)+len(frag) > max+2 {
			return nil, protoErr(StatusHeaderTooLarge, "line longer than %d bytes", max)
		}
		buf = append(buf, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(buf) > 0 {
			return nil, protoErr(StatusBadRequest, "connection closed inside a line")
		}
		return buf, err
	}
	buf = buf[:len(buf)-1]
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	return buf, nil
}

func isToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// isCTL reports a control character other than horizontal tab.
func isCTL(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }

// canonical returns the usual spelling of a lower-case field name, for
// messages.
func (h Header) canonical(name string) string {
	for _, n := range []string{HdrFromPrincipal, HdrSubscriptionID, HdrLifetime, HdrNotificationType, HdrCallBack,
		HdrAckType, HdrHopCount, HdrDepth, HdrContentType, HdrAuthorization, "Host"} {
		if strings.EqualFold(n, name) {
			return n
		}
	}
	return name
}

// MaxSeconds is the largest lifetime, timeout or count a request is read
// with: larger numbers are taken as this one, so that no later
// conversion (to a time.Duration, say) can overflow. Every limit the
// server grants is far below it.
const MaxSeconds = 1<<31 - 1

// ParseCount parses a non-negative decimal number (a lifetime, a timeout,
// a hop count), taking any number above MaxSeconds as MaxSeconds.
func ParseCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty number")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a non-negative integer", truncate(s, 20))
		}
		n = min(n*10+int(c-'0'), MaxSeconds)
	}
	return n, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
