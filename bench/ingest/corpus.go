package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/rules"
)

// corpus makes any number of distinct, realistic reports out of the
// project's NDR samples: report n is sample n mod len(samples) with every
// recipient the sample names rewritten to a unique address (local part
// plus ".b<tag>") and a unique top-level Message-ID, so each report has
// its own SHA-256 (its JetStream message id and store id) and its own
// recipients, as a real stream of bounces has.
//
// A sample is used only when the rewritten copies classify to the same
// events as the original, with exactly the rewritten recipients: an
// address the rewrite cannot reach (base64, folded across lines) would
// otherwise leave every copy with the same recipient.
type corpus struct {
	samples []sample
	skipped []string // file names of samples left out, and why
	prefix  string   // makes tags unique across runs
}

type sample struct {
	name  string
	raw   []byte   // CRLF line ends
	rcpts []string // lower-cased recipients of its events, in event order
	// classes are the events' classes, in event order.
	classes []string
}

// report is one generated report.
type report struct {
	raw    []byte
	rcpts  []string // lower-cased, in event order; nil when it has no events
	sample string
}

// loadCorpus reads dir/*.eml and checks every sample's rewrite.
func loadCorpus(dir, prefix string) (*corpus, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.eml in %s (run from the repository root, or set -ndr)", dir)
	}
	rs, err := rules.Default()
	if err != nil {
		return nil, err
	}
	cl := classify.New(rs)
	c := &corpus{prefix: prefix}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		s := sample{name: filepath.Base(f), raw: crlf(b)}
		evs, err := cl.Bytes(s.raw)
		if err != nil {
			c.skipped = append(c.skipped, s.name+": does not parse")
			continue
		}
		for _, e := range evs {
			s.rcpts = append(s.rcpts, strings.ToLower(e.Recipient))
			s.classes = append(s.classes, string(e.Class))
		}
		if why := c.check(cl, s); why != "" {
			c.skipped = append(c.skipped, s.name+": "+why)
			continue
		}
		c.samples = append(c.samples, s)
	}
	if len(c.samples) == 0 {
		return nil, fmt.Errorf("no usable sample in %s: %s", dir, strings.Join(c.skipped, "; "))
	}
	return c, nil
}

// check classifies two rewritten copies of s and returns why they do not
// match it, "" when they do.
func (c *corpus) check(cl *classify.Classifier, s sample) string {
	for _, n := range []int{1, 2} {
		r := c.rewrite(s, fmt.Sprintf("check%d", n))
		evs, err := cl.Bytes(r.raw)
		if err != nil {
			return "a rewritten copy does not parse"
		}
		var got, classes []string
		for _, e := range evs {
			got = append(got, strings.ToLower(e.Recipient))
			classes = append(classes, string(e.Class))
		}
		if !slices.Equal(got, r.rcpts) {
			return fmt.Sprintf("rewritten recipients %q, classified %q", r.rcpts, got)
		}
		if !slices.Equal(classes, s.classes) {
			return fmt.Sprintf("classes %q after the rewrite, %q before", classes, s.classes)
		}
		if len(s.rcpts) > 0 && slices.Equal(got, s.rcpts) {
			return "the rewrite did not change the recipients"
		}
	}
	return ""
}

// report returns report n.
func (c *corpus) report(n int) report {
	return c.rewrite(c.samples[n%len(c.samples)], fmt.Sprintf("%s%07d", c.prefix, n))
}

// withEvents returns the samples that yield at least one event, for loads
// that look each report up by recipient.
func (c *corpus) withEvents() *corpus {
	out := &corpus{prefix: c.prefix, skipped: c.skipped}
	for _, s := range c.samples {
		if len(s.rcpts) > 0 {
			out.samples = append(out.samples, s)
		}
	}
	return out
}

// rewrite returns s with its recipients and top-level Message-ID made
// unique by tag.
func (c *corpus) rewrite(s sample, tag string) report {
	raw := s.raw
	r := report{sample: s.name}
	done := map[string]string{}
	for _, rc := range s.rcpts {
		if nr, ok := done[rc]; ok {
			r.rcpts = append(r.rcpts, nr)
			continue
		}
		at := strings.LastIndexByte(rc, '@')
		if at <= 0 {
			r.rcpts = append(r.rcpts, rc)
			continue
		}
		nr := rc[:at] + ".b" + tag + rc[at:]
		done[rc] = nr
		r.rcpts = append(r.rcpts, nr)
		raw = replaceAddress(raw, rc, ".b"+tag)
	}
	r.raw = setMessageID(raw, "<bench."+tag+"@bench.example.net>")
	return r
}

// replaceAddress inserts suffix before the '@' of every occurrence of
// addr in raw (ASCII case-insensitive) that is a whole address, not part
// of a longer one.
func replaceAddress(raw []byte, addr, suffix string) []byte {
	lower := bytes.ToLower(raw)
	needle := []byte(addr)
	at := strings.LastIndexByte(addr, '@')
	var out bytes.Buffer
	last := 0
	for i := 0; ; {
		j := bytes.Index(lower[i:], needle)
		if j < 0 {
			break
		}
		start, end := i+j, i+j+len(needle)
		i = end
		if start > 0 && addrByte(lower[start-1]) || end < len(lower) && addrByte(lower[end]) && lower[end] != '.' {
			continue
		}
		if end < len(lower)-1 && lower[end] == '.' && addrByte(lower[end+1]) {
			continue // a longer domain: addr@example.org.uk
		}
		out.Write(raw[last : start+at])
		out.WriteString(suffix)
		last = start + at
	}
	out.Write(raw[last:])
	return out.Bytes()
}

func addrByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || strings.IndexByte("._%+-=", b) >= 0
}

// setMessageID replaces the top-level Message-ID header (with its folded
// lines), or adds one at the top.
func setMessageID(raw []byte, id string) []byte {
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(raw)
	}
	header := bytes.ToLower(raw[:end])
	start := -1
	if bytes.HasPrefix(header, []byte("message-id:")) {
		start = 0
	} else if i := bytes.Index(header, []byte("\r\nmessage-id:")); i >= 0 {
		start = i + 2
	}
	if start < 0 {
		return append([]byte("Message-ID: "+id+"\r\n"), raw...)
	}
	stop := start
	for {
		nl := bytes.Index(raw[stop:end], []byte("\r\n"))
		if nl < 0 {
			stop = end
			break
		}
		stop += nl + 2
		if stop >= end || raw[stop] != ' ' && raw[stop] != '\t' {
			break
		}
	}
	var out bytes.Buffer
	out.Write(raw[:start])
	out.WriteString("Message-ID: " + id + "\r\n")
	if stop >= end && end < len(raw) {
		// The header was the last: keep the blank line's CRLF pair.
		out.Write(raw[end+2:])
	} else {
		out.Write(raw[stop:])
	}
	return out.Bytes()
}

// crlf makes every line end in CRLF, as a message received over SMTP.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}
