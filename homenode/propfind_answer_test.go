package homenode

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// wellFormedXML parses b to its end, and checks it is well-formed with
// namespaces too (as libxml2 and expat read it): every element name has a
// local part after its prefix. encoding/xml takes <r:/> for a name.
func wellFormedXML(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// encoding/xml keeps a name it cannot split ("r:") whole.
		if s, ok := tok.(xml.StartElement); ok && (s.Name.Local == "" || strings.Contains(s.Name.Local, ":")) {
			return fmt.Errorf("element %q is not a qualified name", s.Name.Local)
		}
	}
}

// TestPropNameAnswerIsWellFormed: a PROPFIND with d:propname (RFC 4918
// §9.1, digest §3.4) is answered with the names of the node's
// properties, each an empty element. r:state was rendered from an empty
// state name as <r:state><r:/></r:state>, which is not XML: every client
// fails to parse the 207.
func TestPropNameAnswerIsWellFormed(t *testing.T) {
	w := newWorld(t)
	w.setState("ann", "10.0.0.1", "busy", 1200)
	for _, who := range []string{"ann", "ben"} {
		d := w.decide(&events.PropFind{Req: w.req("pn-"+who, who, "ann", "10.0.0.1"), Names: true})
		wantStatus(t, d, 207)
		body := rvp.Multistatus(d.reply.Href, d.reply.Found, d.reply.Missing, d.reply.Forbidden)
		if err := wellFormedXML(body); err != nil {
			t.Errorf("propname by %s: answer not well-formed: %v\n%s", who, err, body)
		}
		if !bytes.Contains(body, []byte("<r:state/>")) {
			t.Errorf("propname by %s: want r:state named as <r:state/>:\n%s", who, body)
		}
	}
}
