package reliability

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/verp"
)

// hostileMsg is one transaction of the hostile-content scenario's second
// sender: the envelope, the bytes and what bouncer must answer.
type hostileMsg struct {
	Kind  string
	Group string // the docs/reliability.md row it belongs to
	From  string // MAIL FROM, "" for the null sender
	Rcpts []string
	// RcptWant is each RCPT's expected reply code: 250, or 550 for a
	// forged, tampered, expired or foreign bounce address.
	RcptWant []int
	// Raw is the message, CRLF at its end; nil when every RCPT must be
	// refused and DATA with it (nothing is sent then).
	Raw []byte
	// Want is the expected reply code to the end of DATA (or to DATA
	// when Raw is nil); WantText a part of a refusal's text.
	Want     int
	WantText string
	Sum      string // hex SHA-256 of Raw: the report id bouncer stores
	// Explicit are events the stored report must have, asserted
	// independently of the classifier (ARF, auto-replies, a DSN that
	// survived the hostile wrapping); nil asserts none this way.
	Explicit []wantEvent
	// Accepted is the RCPT TO addresses bouncer must keep in the stored
	// report's envelope.
	Accepted []string
}

// wantEvent is an expected stored event.
type wantEvent struct{ Recipient, Class, Reason string }

func (w wantEvent) String() string { return w.Recipient + " " + w.Class + "/" + w.Reason }

// Limits of the listener and the parser the messages are built against
// (smtpd.Default*, cmd/bouncer's flags, dsn's limits). Spelled out here
// because a message must land just under or over them.
const (
	listenerMaxLine    = 2048      // smtpd.DefaultMaxLineLength: go-smtp applies it to DATA lines too
	listenerMaxMessage = 10 << 20  // --max-message-bytes default: 552 5.3.4 beyond
	dsnMaxHeaderBytes  = 256 << 10 // dsn.MaxHeaderBytes; its MIME caps are 16 levels and 500 parts
)

// hostileBomb is the size the decoding bombs decode to: the base64
// delivery-status, three times the quoted-printable text, 32 times the
// innermost of the base64 layers. 7 MiB keeps the largest, base64, under
// the 10 MiB message limit. TestHostileContent, CI's form, makes it 1 MiB:
// under -race the harness's own building and classifying of the bombs
// took most of the scenario's time.
var hostileBomb = 7 << 20

// contentVERPKey is the VERP key of the hostile-content bouncer; the VERP
// kinds sign and forge against it.
const contentVERPKey = "reliability-content-key-0123456789"

// groupARF is the row of complaints and auto-replies: their events must
// be exactly the expected complaint or auto-reply, never a hard bounce.
const groupARF = "ARF and auto-replies mixed in"

// hostileKind builds message n of one kind of run.
type hostileKind struct {
	name, group string
	build       func(k hostileKind, run string, n int) *hostileMsg
}

// What bouncer must answer a message with a line over the listener's
// line limit: a permanent refusal that says why (smtpd's errLineTooLong).
const (
	lineTooLongCode = 554
	lineTooLongText = "5.6.0"
)

// hostileKinds are every kind, in the order a round sends them.
var hostileKinds = []hostileKind{
	// 1. Oversize headers and messages.
	{"header-line-2k", "oversize headers", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "Subject: " + strings.Repeat("s", listenerMaxLine-len("Subject: ")-3) + "\r\n" // 2,046 bytes with CRLF
		return ndr(k, run, n, rcpt, h, dsnBody(rcpt, "\r\n"), true)
	}},
	{"header-line-over", "oversize headers", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "X-Long: " + strings.Repeat("l", 4*listenerMaxLine) + "\r\n"
		m := ndr(k, run, n, rcpt, h, dsnBody(rcpt, "\r\n"), false)
		m.Want, m.WantText = lineTooLongCode, lineTooLongText
		return m
	}},
	{"header-block-300k", "oversize headers", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		var h strings.Builder
		for i := 0; h.Len() < dsnMaxHeaderBytes+dsnMaxHeaderBytes/4; i++ {
			fmt.Fprintf(&h, "X-Pad-%d: %s\r\n", i, strings.Repeat("p", 60))
		}
		return ndr(k, run, n, rcpt, h.String(), dsnBody(rcpt, "\r\n"), false)
	}},
	{"folded-header-1m", "oversize headers", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "Subject: folded" + strings.Repeat("\r\n "+strings.Repeat("f", 70), 1<<20/74) + "\r\n"
		return ndr(k, run, n, rcpt, h, dsnBody(rcpt, "\r\n"), false)
	}},
	{"over-size", "oversize headers", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		pad := strings.Repeat(strings.Repeat("o", 76)+"\r\n", (listenerMaxMessage+64<<10)/78)
		m := ndr(k, run, n, rcpt, "", dsnBody(rcpt, "\r\n")+pad, false)
		m.Want, m.WantText = 552, "5.3.4"
		return m
	}},
	// 2. Deeply nested MIME and huge part counts.
	{"nested-multipart-3000", "deeply nested MIME", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		const depth = 3000
		var b strings.Builder
		b.WriteString(mimeHead(k, run, n, fmt.Sprintf("multipart/mixed; boundary=\"n%d\"", 0)))
		for i := 0; i < depth; i++ {
			fmt.Fprintf(&b, "--n%d\r\nContent-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n", i, i+1)
		}
		fmt.Fprintf(&b, "--n%d\r\nContent-Type: message/delivery-status\r\n\r\n%s", depth, dsnFields(rcpt, "\r\n"))
		for i := depth; i >= 0; i-- {
			fmt.Fprintf(&b, "--n%d--\r\n", i)
		}
		return finish(k, b.String(), nil)
	}},
	{"many-parts-40000", "deeply nested MIME", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		var b strings.Builder
		b.WriteString(mimeHead(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"p\""))
		for i := 0; i < 40000; i++ {
			fmt.Fprintf(&b, "--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
		}
		fmt.Fprintf(&b, "--p\r\nContent-Type: message/delivery-status\r\n\r\n%s--p--\r\n", dsnFields(rcpt, "\r\n"))
		return finish(k, b.String(), nil)
	}},
	{"nested-rfc822-3000", "deeply nested MIME", func(k hostileKind, run string, n int) *hostileMsg {
		const depth = 3000
		var b strings.Builder
		b.WriteString(mimeHead(k, run, n, "message/rfc822"))
		for i := 0; i < depth; i++ {
			fmt.Fprintf(&b, "Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n", i)
		}
		b.WriteString("Subject: bottom\r\n\r\nthe end\r\n")
		return finish(k, b.String(), nil)
	}},
	// 3. Small-looking parts that decode to a lot.
	{"b64-status-bomb", "zip-bomb base64", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		status := dsnFields(rcpt, "\r\n") + "X-Bomb: " + strings.Repeat("A", hostileBomb) + "\r\n"
		body := "--z\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n" +
			"--z\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			b64Lines([]byte(status)) + "--z--\r\n"
		return finish(k, mimeHead(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"z\"")+body, []wantEvent{{rcpt, "hard", "userunknown"}})
	}},
	{"qp-text-bomb", "zip-bomb base64", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		// "=3D" 25 times and a soft line break, over and over: one
		// decoded line of a third of hostileBomb.
		qp := strings.Repeat(strings.Repeat("=3D", 25)+"=\r\n", hostileBomb/78)
		body := "--q\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
			qp + "\r\n" +
			"--q\r\nContent-Type: message/delivery-status\r\n\r\n" + dsnFields(rcpt, "\r\n") + "--q--\r\n"
		return finish(k, mimeHead(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"q\"")+body, []wantEvent{{rcpt, "hard", "userunknown"}})
	}},
	{"b64-rfc822-layers", "zip-bomb base64", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		inner := "From: <MAILER-DAEMON@mta.sender.example>\r\nSubject: inner\r\n" +
			"Content-Type: text/plain\r\n\r\n" + strings.Repeat("B", hostileBomb/32) + "\r\n"
		for i := 0; i < 8; i++ {
			inner = fmt.Sprintf("Subject: layer %d\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n%s", i, b64Lines([]byte(inner)))
		}
		body := "--r\r\nContent-Type: message/delivery-status\r\n\r\n" + dsnFields(rcpt, "\r\n") +
			"--r\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64Lines([]byte(inner)) + "--r--\r\n"
		return finish(k, mimeHead(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"r\"")+body, []wantEvent{{rcpt, "hard", "userunknown"}})
	}},
	// 4. Bytes that are not what they claim.
	{"bad-utf8-charsets", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "Subject: =?x-bogus-42?B?/+7/7g==?= \xff\xfe raw =?utf-8?Q?=FF=C3=28?=\r\n" +
			"X-Latin: caf\xe9 \xc3\x28 \xed\xa0\x80\r\n"
		body := "--u\r\nContent-Type: text/plain; charset=\"x-unknown-charset\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Zustellung fehlgeschlagen \xff\xfe\xfd \xc0\xaf \xe2\x82\r\n" +
			"--u\r\nContent-Type: message/delivery-status; charset=\"=?utf-7?Q?x?=\"\r\n\r\n" +
			"Reporting-MTA: dns; mta.sender.example\xff\r\n\r\n" +
			"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
			"Diagnostic-Code: smtp; 550 5.1.1 \xff\xfe user \xc3\x28 unknown \xf0\x28\x8c\xbc\r\n\r\n--u--\r\n"
		return finish(k, headBlock(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"u\"", h)+body,
			[]wantEvent{{rcpt, "hard", "userunknown"}})
	}},
	{"nul-bytes", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "X-Nul: a\x00b\x00\x00c\r\n"
		text := "Delivery \x00failed\x00.\r\n"
		return ndr(k, run, n, rcpt, h, dsnBodyText(rcpt, text), true)
	}},
	{"bare-lf", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		raw := strings.ReplaceAll(headBlock(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"b\"", "")+dsnBody(rcpt, "\r\n"), "\r\n", "\n")
		return finish(k, raw, []wantEvent{{rcpt, "hard", "userunknown"}})
	}},
	{"bare-cr-lines", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		h := "X-Cr: one\rtwo\rthree\r\n"
		return ndr(k, run, n, rcpt, h, dsnBodyText(rcpt, "line one\rline two\r\rline three\r\n"), true)
	}},
	{"cr-only-4k", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		// A classic-Mac file: no LF at all, so to go-smtp the whole
		// message is one line, over the limit.
		rcpt := hrcpt(run, k.name, n)
		raw := headBlock(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"b\"", "X-Pad: "+strings.Repeat("c", listenerMaxLine)+"\r\n") + dsnBody(rcpt, "\r\n")
		m := finish(k, strings.ReplaceAll(raw, "\r\n", "\r"), nil)
		m.Want, m.WantText = lineTooLongCode, lineTooLongText
		return m
	}},
	{"binary-garbage", "invalid UTF-8", func(k hostileKind, run string, n int) *hostileMsg {
		// No header at all: dsn.ErrNoHeader; stored raw with its parse
		// error and no event.
		r := rand.New(rand.NewPCG(uint64(n), uint64(len(run))))
		var b strings.Builder
		fmt.Fprintf(&b, "\x00\x01 %s %d\r\n", run, n)
		for i := 0; i < 64<<10; i++ {
			c := byte(r.UintN(256))
			if c == '\r' || c == '\n' {
				c = '.'
			}
			b.WriteByte(c)
			if i%70 == 69 {
				b.WriteString("\r\n")
			}
		}
		return finish(k, b.String(), nil)
	}},
	// 5. Forged VERP floods.
	{"verp-flood", "forged VERP floods", func(k hostileKind, run string, n int) *hostileMsg {
		m := &hostileMsg{Kind: k.name, Group: k.group}
		for i := 0; i < 50; i++ {
			m.Rcpts = append(m.Rcpts, badVERP(run, n, i))
			m.RcptWant = append(m.RcptWant, 550)
		}
		// Every RCPT refused: go-smtp refuses DATA itself.
		m.Want, m.WantText = 502, "5.5.1"
		return m
	}},
	{"verp-mixed", "forged VERP floods", func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := hrcpt(run, k.name, n)
		m := ndr(k, run, n, rcpt, "", dsnBody(rcpt, "\r\n"), true)
		good := signVERP(rcpt, fmt.Sprintf("<orig.%s.%d@sender.example>", run, n), time.Now())
		m.Rcpts, m.RcptWant = nil, nil
		for i := 0; i < 20; i++ {
			if i == 10 {
				m.Rcpts = append(m.Rcpts, good)
				m.RcptWant = append(m.RcptWant, 250)
			}
			m.Rcpts = append(m.Rcpts, badVERP(run, n, i))
			m.RcptWant = append(m.RcptWant, 550)
		}
		m.Accepted = []string{good}
		return m
	}},
	// 6. ARF complaints and auto-replies among the NDRs.
	{"arf-complaint", groupARF, func(k hostileKind, run string, n int) *hostileMsg {
		rcpt := fmt.Sprintf("c-%s-%d@%s", run, n, RecipientDomain)
		raw := "From: <fbl@isp.example>\r\nTo: <bounce@" + BounceDomain + ">\r\nSubject: FW: newsletter\r\n" +
			fmt.Sprintf("Message-ID: <arf.%s.%d@isp.example>\r\n", run, n) +
			"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\r\n\r\n" +
			"--f\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n" +
			"--f\r\nContent-Type: message/feedback-report\r\n\r\n" +
			"Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n" +
			"Original-Mail-From: <bounce@" + BounceDomain + ">\r\nOriginal-Rcpt-To: <" + rcpt + ">\r\n" +
			"Reported-Domain: sender.example\r\n\r\n" +
			"--f\r\nContent-Type: message/rfc822\r\n\r\n" +
			"From: <news@sender.example>\r\nTo: <" + rcpt + ">\r\nSubject: newsletter\r\n" +
			fmt.Sprintf("Message-ID: <orig.%s.c%d@sender.example>\r\n\r\nbuy now\r\n--f--\r\n", run, n)
		m := finish(k, raw, []wantEvent{{rcpt, "complaint", "feedback"}})
		m.From = "fbl@isp.example"
		return m
	}},
	{"auto-reply", groupARF, func(k hostileKind, run string, n int) *hostileMsg {
		from := fmt.Sprintf("a-%s-%d@%s", run, n, RecipientDomain)
		raw := "From: Jane Doe <" + from + ">\r\nTo: <bounce@" + BounceDomain + ">\r\n" +
			"Subject: Out of Office: newsletter\r\nAuto-Submitted: auto-replied\r\n" +
			fmt.Sprintf("Message-ID: <ooo.%s.%d@dest.example>\r\nIn-Reply-To: <orig.%s.a%d@sender.example>\r\n", run, n, run, n) +
			"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
			"I am on vacation until Monday and will read your message when I am back.\r\n"
		m := finish(k, raw, []wantEvent{{from, "autoreply", "vacation"}})
		m.From = from
		return m
	}},
}

// hrcpt is the failed recipient of a hostile NDR: outside the load's
// prefix, so the load's checks never see it.
func hrcpt(run, kind string, n int) string {
	return fmt.Sprintf("h-%s-%s-%d@%s", run, kind, n, RecipientDomain)
}

// headBlock is a report's top header, extra fields inserted before
// Content-Type (which comes last, so a header block cut at dsn's bound
// loses it: the parser must still keep the message).
func headBlock(k hostileKind, run string, n int, contentType, extra string) string {
	return "From: Mail Delivery System <MAILER-DAEMON@mta.sender.example>\r\n" +
		"To: <bounce@" + BounceDomain + ">\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		fmt.Sprintf("Message-ID: <%s.%s.%d@mta.sender.example>\r\n", k.name, run, n) +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMIME-Version: 1.0\r\n" +
		extra + "Content-Type: " + contentType + "\r\n\r\n"
}

// mimeHead is headBlock without extra fields.
func mimeHead(k hostileKind, run string, n int, contentType string) string {
	return headBlock(k, run, n, contentType, "")
}

// dsnFields is a delivery-status body: a 550 5.1.1 for rcpt.
func dsnFields(rcpt, eol string) string {
	return "Reporting-MTA: dns; mta.sender.example" + eol + eol +
		"Final-Recipient: rfc822; " + rcpt + eol + "Action: failed" + eol + "Status: 5.1.1" + eol +
		"Diagnostic-Code: smtp; 550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown" + eol + eol
}

// dsnBody is the body of a multipart/report with boundary "b": text, the
// delivery-status of rcpt, closing boundary.
func dsnBody(rcpt, eol string) string {
	return "--b" + eol + "Content-Type: text/plain" + eol + eol + "<" + rcpt + ">: User unknown" + eol +
		"--b" + eol + "Content-Type: message/delivery-status" + eol + eol + dsnFields(rcpt, eol) + "--b--" + eol
}

// dsnBodyText is dsnBody with the given text part (CRLF).
func dsnBodyText(rcpt, text string) string {
	return "--b\r\nContent-Type: text/plain\r\n\r\n" + text +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + dsnFields(rcpt, "\r\n") + "--b--\r\n"
}

// ndr is a multipart/report NDR for rcpt with extra header fields and the
// given body; intact: its hard event must survive (asserted explicitly).
func ndr(k hostileKind, run string, n int, rcpt, extra, body string, intact bool) *hostileMsg {
	raw := headBlock(k, run, n, "multipart/report; report-type=delivery-status; boundary=\"b\"", extra) + body
	var want []wantEvent
	if intact {
		want = []wantEvent{{rcpt, "hard", "userunknown"}}
	}
	m := finish(k, raw, want)
	m.Rcpts, m.RcptWant = []string{"bounce@" + BounceDomain}, []int{250}
	return m
}

// finish makes a message of raw: ends it so that the end of DATA adds
// nothing to it, hashes it, and addresses it to the unsigned bounce
// address.
func finish(k hostileKind, raw string, explicit []wantEvent) *hostileMsg {
	switch dataState([]byte(raw)) {
	case stateBeginLine:
	case stateCR:
		raw += "\n"
	default:
		raw += "\r\n"
	}
	sum := sha256.Sum256([]byte(raw))
	return &hostileMsg{Kind: k.name, Group: k.group, Rcpts: []string{"bounce@" + BounceDomain}, RcptWant: []int{250},
		Raw: []byte(raw), Want: 250, Sum: hex.EncodeToString(sum[:]), Explicit: explicit,
		Accepted: []string{"bounce@" + BounceDomain}}
}

func b64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	out.Grow(len(s) + len(s)/76*2 + 2)
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}

// contentSigner signs with the scenario's key, as of now.
func contentSigner(now time.Time, key string) *verp.Signer {
	keys, err := verp.ParseKeys(key)
	if err != nil {
		panic(err) // a constant key
	}
	return &verp.Signer{Keys: keys, Now: func() time.Time { return now }}
}

func signVERP(rcpt, msgID string, now time.Time) string {
	a, err := contentSigner(now, contentVERPKey).Sign(BounceDomain, rcpt, msgID)
	if err != nil {
		panic(err)
	}
	return a
}

// badVERP is the i-th of the kinds of bounce address bouncer must refuse
// with 550 5.7.1: expired, stamped in the future, MAC tampered, recipient
// tampered, signed by an unknown key, signed for another domain, a token
// of garbage, a domain not ours.
func badVERP(run string, n, i int) string {
	rcpt := fmt.Sprintf("f-%s-%d-%d@%s", run, n, i, RecipientDomain)
	mid := fmt.Sprintf("<forged.%s.%d.%d@sender.example>", run, n, i)
	now := time.Now()
	switch i % 8 {
	case 0:
		return signVERP(rcpt, mid, now.Add(-60*24*time.Hour))
	case 1:
		return signVERP(rcpt, mid, now.Add(5*24*time.Hour))
	case 2:
		a := []byte(signVERP(rcpt, mid, now))
		p := bytes.IndexByte(a, '+') + 1 + 13 // the MAC's first character
		a[p] = flip(a[p])
		return string(a)
	case 3:
		a := signVERP(rcpt, mid, now)
		return strings.Replace(a, "f-"+run, "g-"+run, 1)
	case 4:
		a, err := contentSigner(now, "some-other-key-not-configured-42").Sign(BounceDomain, rcpt, mid)
		if err != nil {
			panic(err)
		}
		return a
	case 5:
		a, err := contentSigner(now, contentVERPKey).Sign("evil.example", rcpt, mid)
		if err != nil {
			panic(err)
		}
		return strings.TrimSuffix(a, "evil.example") + BounceDomain
	case 6:
		return fmt.Sprintf("b+%s%d@%s", strings.Repeat("z", 29), i, BounceDomain)
	default:
		return fmt.Sprintf("bounce@%s.evil.example", run)
	}
}

func flip(c byte) byte {
	if c == 'a' {
		return 'b'
	}
	return 'a'
}

// States of go-smtp's DATA reader (data.go, after net/textproto): a dot
// is removed only in stateBeginLine, which only CR LF enters.
const (
	stateBeginLine = iota
	stateDot
	stateDotCR
	stateCR
	stateData
)

// step advances go-smtp's DATA reader state by c, for a message that is
// dot-stuffed (so stateDot never sees the end marker).
func step(st int, c byte) int {
	switch {
	case st == stateCR && c == '\n':
		return stateBeginLine
	case c == '\r':
		if st == stateCR {
			return stateData
		}
		return stateCR
	}
	return stateData
}

// dataState is the reader's state after raw. Only its end matters: a
// byte other than CR leaves stateCR, and a run of CRs after it enters
// stateCR at its odd CRs and leaves it at its even ones, so an LF begins
// a line after an odd run of CRs. (stepState is the reference.)
func dataState(raw []byte) int {
	if len(raw) == 0 {
		return stateBeginLine
	}
	end := len(raw)
	if raw[end-1] == '\n' {
		end--
	}
	crs := 0
	for end-crs > 0 && raw[end-crs-1] == '\r' {
		crs++
	}
	switch {
	case end < len(raw) && crs%2 == 1:
		return stateBeginLine
	case end == len(raw) && crs%2 == 1:
		return stateCR
	}
	return stateData
}

// stepState is dataState byte by byte, the reference the tests hold it to.
func stepState(raw []byte) int {
	st := stateBeginLine
	for _, c := range raw {
		st = step(st, c)
	}
	return st
}

// stuff is raw as written after DATA: a dot doubled wherever go-smtp
// removes one, then the end marker. raw must end in stateBeginLine
// (finish sees to it), so the receiver gets exactly raw.
func stuff(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+len(raw)/64+3)
	from := 0 // raw[:from] is copied
	for i := 0; i < len(raw); {
		// The dots at a line start: the first byte, or one after an LF
		// that begins a line.
		j := i
		if i > 0 || raw[0] != '.' {
			k := bytes.Index(raw[i:], []byte("\n."))
			if k < 0 {
				break
			}
			j = i + k + 1
		}
		if dataState(raw[:j]) == stateBeginLine {
			out = append(append(out, raw[from:j]...), '.')
			from = j
		}
		i = j + 1
	}
	out = append(out, raw[from:]...)
	return append(out, ".\r\n"...)
}

// stuffSlow is stuff byte by byte, the reference the tests hold it to.
func stuffSlow(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+len(raw)/64+3)
	st := stateBeginLine
	for _, c := range raw {
		if st == stateBeginLine && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		st = step(st, c)
	}
	return append(out, ".\r\n"...)
}
