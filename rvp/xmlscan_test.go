package rvp

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// scanSeeds are documents scanXML should leave to encoding/xml, or read
// exactly as it does: the edges of what it takes.
var scanSeeds = []string{
	"<a>x&amp;y&lt;&gt;&quot;&apos;</a>",
	"<a>\r\nline\rnext\r\r\n</a>",
	"<a><![CDATA[x]]y\r\n<b>&amp;]]></a>",
	"<a>]]></a>",
	"<a>&#65;</a>",
	"<a>&nbsp;</a>",
	"<!-- c --><a/>",
	"<a><!-- c --></a>",
	"<?xml version=\"1.1\"?><a/>",
	"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\r\n<a/>",
	"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><a>\xe9</a>",
	"<?xml-stylesheet href=\"x\"?><a/>",
	"<?pi x?><a/>",
	" \n<a/> \n",
	"\u00a0<a/>",
	"<a/><b/>",
	"<a></b>",
	"<a></a >",
	"<a/ >",
	"<a x='1'y='2'/>",
	"<a x = \"1\"/>",
	"<a x=\"1\" x=\"2\"/>",
	"<a xmlns:p=\"u\" xmlns:q=\"u\" p:x=\"1\" q:x=\"2\"/>",
	"<a xmlns:p=\"\" p:x=\"1\" x=\"2\"/>",
	"<p:a xmlns:p=\"u\"><p:b xmlns:p=\"v\"/><p:c/></p:a>",
	"<a xmlns=\"u\"><b xmlns=\"\"><c/></b><d/></a>",
	"<a xmlns:p=\"http://www.w3.org/XML/1998/namespace\"/>",
	"<a xmlns:xml=\"http://www.w3.org/XML/1998/namespace\"/>",
	"<a xmlns=\"http://www.w3.org/2000/xmlns/\"/>",
	// checkReserved reads attributes by their translated names: q:p with
	// q bound to "xmlns" is taken for a declaration of p, and p:xmlns
	// with p bound to "" for one of the default namespace.
	"<a xmlns:q=\"xmlns\" q:p=\"http://www.w3.org/2000/xmlns/\"/>",
	"<a xmlns:q=\"xmlns\" q:p=\"http://www.w3.org/XML/1998/namespace\"/>",
	"<a xmlns:p=\"\" p:xmlns=\"http://www.w3.org/XML/1998/namespace\"/>",
	"<a xmlns:p=\"\" p:xmlns=\"http://www.w3.org/2000/xmlns/\"/>",
	"<a xmlns:q=\"xmlns\" q:p=\"u\"><q:b/></a>",
	"<xml:a/>",
	"<xmlns/>",
	"<a xml:lang=\"en\" lang=\"en\"/>",
	"<p:a/>",
	"<d:a><R:b/><x:c/></d:a>",
	"<p:q:a/>",
	"<p:9/>",
	"<9a/>",
	"<_a._-b/>",
	"<a\u00e9/>",
	"<a>\u00e9\U0001F600\ufffe</a>",
	"<a>\xff</a>",
	"<a>\x01</a>",
	"<a>\x7f\t</a>",
	"<a><![CDATA[\x01]]></a>",
	"<![CDATA[x]]><a/>",
	"<a>",
	"<a x=\"1",
	"<a x=\"1\">",
	"<a x=\"&amp;\"/>",
	"<a x=\"\t\"/>",
	"<a x=\"<\"/>",
	"<a x=\"]]>\"/>",
	"<!DOCTYPE a><a/>",
	"",
	"x",
	"<",
	"</a>",
	strings.Repeat("<a>", maxXMLDepth) + strings.Repeat("</a>", maxXMLDepth),
	strings.Repeat("<a>", maxXMLDepth+1) + strings.Repeat("</a>", maxXMLDepth+1),
	"<a>" + strings.Repeat("<b/>", maxXMLNodes-1) + "</a>",
	"<a>" + strings.Repeat("<b/>", maxXMLNodes) + "</a>",
	"<a>" + strings.Repeat("x", maxXMLText) + "</a>",
	"<a>" + strings.Repeat("x", maxXMLText) + "<![CDATA[y]]></a>",
}

// librvpMessage is a message as librvp 1.x sends it (librvp-wire.md).
const librvpMessage = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<r:notification xmlns:d=\"DAV:\" xmlns:r=\"http://schemas.microsoft.com/rvp/\" xmlns:a=\"http://schemas.microsoft.com/rvp/acl/\"><r:message><r:notification-from><r:contact><d:href>http://127.0.0.1:18180/instmsg/aliases/alice</d:href><r:description>alice</r:description></r:contact></r:notification-from><r:notification-to><r:contact><d:href>http://127.0.0.1:18180/instmsg/aliases/bob</d:href><r:description/></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nX-MMS-IM-Format: FN=MS%%20Shell%%20Dlg; EF=; CO=0; CS=0; PF=0\nSession-Id: {40C9FE8E-6E81-76FC-1FB8-49F2BE865729}\n\nhello bob]]></r:mime-data></r:msgbody></r:message></r:notification>"

func xmlSeeds() []string {
	var all []string
	for _, set := range [][]string{proppatchSeeds, propfindSeeds, notificationSeeds, aclSeeds, scanSeeds, {librvpMessage}} {
		all = append(all, set...)
	}
	return all
}

// FuzzScanXML holds scanXML to encoding/xml: what it accepts, encoding/xml
// accepts, with the same tree.
func FuzzScanXML(f *testing.F) {
	for _, s := range xmlSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { compareScan(t, body) })
}

func dumpNode(n *node) string {
	var b strings.Builder
	var walk func(n *node, depth int)
	walk = func(n *node, depth int) {
		fmt.Fprintf(&b, "%s{%s}%s %q\n", strings.Repeat(" ", depth), n.name.Space, n.name.Local, n.text.String())
		for _, c := range n.children {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return b.String()
}

// TestScanXMLTakesClientBodies: what librvp, Net::RVP and Messenger send
// is read without encoding/xml, and as it reads it.
func TestScanXMLTakesClientBodies(t *testing.T) {
	clients := append(append(append([]string{}, proppatchSeeds...), notificationSeeds[:2]...), propfindSeeds[0], propfindSeeds[1], aclSeeds[0], aclSeeds[1], librvpMessage)
	// And a few edges it reads itself.
	clients = append(clients,
		"<a>x&amp;y&lt;&gt;&quot;&apos;</a>",
		"<a>\r\nline\rnext\r\r\n</a>",
		"<a><![CDATA[x]]y\r\n<b>&amp;]]></a>",
		"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\r\n<a/>",
		"<p:a xmlns:p=\"u\"><p:b xmlns:p=\"v\"/><p:c/></p:a>",
		"<a xmlns=\"u\"><b xmlns=\"\"><c/></b><d/></a>",
		"<d:a><R:b/><x:c/></d:a>",
		"<a>\u00e9\U0001F600</a>",
	)
	for i, s := range clients {
		if !compareScan(t, []byte(s)) {
			t.Errorf("body %d left to encoding/xml: %q", i, s)
		}
	}
}

// TestScanXMLLeavesErrors: a document encoding/xml refuses, scanXML does
// not take, so its error is encoding/xml's.
func TestScanXMLLeavesErrors(t *testing.T) {
	for _, s := range xmlSeeds() {
		_, ok := scanXML([]byte(s))
		if _, err := decodeXML([]byte(s)); err != nil && ok {
			t.Errorf("%.60q: scanXML accepted, encoding/xml: %v", s, err)
		}
	}
}

func BenchmarkParseNotification(b *testing.B) {
	body := []byte(notificationSeeds[0])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseNotification(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseXML compares the two readers on a message as librvp sends
// it.
func BenchmarkParseXML(b *testing.B) {
	body := []byte(librvpMessage)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := scanXML(body); !ok {
				b.Fatal("not taken")
			}
		}
	})
	b.Run("encoding-xml", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeXML(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestScanXMLRandomDocuments compares the two readers on documents built
// by genDoc. Random bytes (FuzzScanXML) seldom make a document scanXML
// takes; these often do.
func TestScanXMLRandomDocuments(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	taken := 0
	const docs = 200000
	for range docs {
		if compareScan(t, []byte(genDoc(rng.IntN))) {
			taken++
		}
	}
	if taken < docs/10 {
		t.Fatalf("scanXML took %d of %d documents: the generator no longer makes what it reads", taken, docs)
	}
	t.Logf("scanXML took %d of %d documents", taken, docs)
}

// genDoc builds a document from the pieces where scanXML and encoding/xml
// could differ, choices drawn from next.
func genDoc(next func(n int) int) string {
	pick := func(s ...string) string { return s[next(len(s))] }
	vals := []string{`"u"`, `''`, `"xmlns"`, `"xml"`, `"d"`, `"D"`, `"p"`, `"q"`, `"DAV:"`,
		`"http://www.w3.org/XML/1998/namespace"`, `"http://www.w3.org/2000/xmlns/"`, `"]]>"`, `"a>b"`, `"x'y"`}
	prefixes := []string{"", "", "p:", "q:", "d:", "R:", "xml:", "xmlns:", "XML:", "Xmlns:"}
	locals := []string{"a", "b", "p", "q", "xml", "xmlns", "lang", "x", "_y.z-1"}
	var b []byte
	w := func(s string) { b = append(b, s...) }
	var gen func(depth int)
	gen = func(depth int) {
		name := pick(prefixes...) + pick(locals...)
		w("<" + name)
		for range next(5) {
			w(pick(" ", "\n", "\t", "\r\n  "))
			w(pick(prefixes...) + pick(locals...))
			w(pick("=", " =", "= ", "\t=\r"))
			w(pick(vals...))
		}
		if depth > 3 || next(4) == 0 {
			w(pick("/>", " />", "\n/>"))
			return
		}
		w(">")
		for range next(5) {
			if next(3) == 0 {
				gen(depth + 1)
				continue
			}
			w(pick("x", " ", "\r", "\n", "\r\n", "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&amp", "]", "]]", ">",
				"]]>", "<![CDATA[", "]]>", "<![CDATA[]]]>", "<![CDATA[\r]]>", "<![CDATA[<&]]>", "é", "\xef\xbf\xbd", "\xef\xbf\xbe",
				"\xed\xa0\x80", "\xc2\x85", "\x7f", "\x01", "\t", "\xc3"))
		}
		if next(30) == 0 {
			name = pick(prefixes...) + pick(locals...)
		}
		w("</" + name + pick(">", " >", "\r\n>", "\t>"))
	}
	w(pick("", "", "<?xml version='1.0'?>", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n", "<?xml ?>", "<?xml encoding='utf-8' standalone='no'?>", "<?xml version=\"1.1\"?>", "<?xml version='1.0' encoding='latin1'?>", " \n"))
	gen(0)
	w(pick("", "", "\n", "\r\n ", "x", "<a/>", "\xc2\xa0"))
	return string(b)
}

func compareScan(t *testing.T, body []byte) bool {
	fast, ok := scanXML(body)
	if !ok {
		return false
	}
	slow, err := decodeXML(body)
	if err != nil {
		t.Fatalf("%q: scanXML accepted what encoding/xml refuses: %v", body, err)
	}
	if a, b := dumpNode(fast), dumpNode(slow); a != b {
		t.Fatalf("%q: scanXML read\n%s\nencoding/xml read\n%s", body, a, b)
	}
	return true
}

// FuzzScanXMLStructured is genDoc driven by the fuzzer's bytes, each a
// choice: coverage guides the documents' shapes, not their bytes.
func FuzzScanXMLStructured(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Add([]byte{3, 3, 1, 4, 1, 5, 9, 2, 6})
	f.Fuzz(func(t *testing.T, choices []byte) {
		i := 0
		next := func(n int) int {
			if i >= len(choices) {
				return 0
			}
			c := int(choices[i])
			i++
			return c % n
		}
		compareScan(t, []byte(genDoc(next)))
	})
}

// TestScanXMLManyBindings: a document declaring more namespaces than any
// client is left to encoding/xml, whose lookups do not grow with them.
func TestScanXMLManyBindings(t *testing.T) {
	var b strings.Builder
	for i := range 3 {
		b.WriteString("<a")
		for j := range 30 {
			fmt.Fprintf(&b, ` xmlns:p%d_%d="u"`, i, j)
		}
		b.WriteString(">")
	}
	b.WriteString("</a></a></a>")
	if _, ok := scanXML([]byte(b.String())); ok {
		t.Error("took a document with 90 namespace bindings in scope")
	}
	if _, err := parseXML([]byte(b.String())); err != nil {
		t.Errorf("encoding/xml: %v", err)
	}
}
