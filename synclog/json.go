package synclog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// canonical is bouncer's own sync log record (DESIGN.md "Sync reply logs").
type canonical struct {
	ID          string          `json:"id"`
	TS          json.RawMessage `json:"ts"` // RFC 3339 string or Unix seconds
	MessageID   string          `json:"message_id"`
	ReturnPath  string          `json:"return_path"`
	Sender      string          `json:"sender"`
	Recipient   string          `json:"recipient"`
	MX          string          `json:"mx"`
	ReplyCode   int             `json:"reply_code"`
	Status      string          `json:"status"`
	Reply       string          `json:"reply"`
	SMTPCommand string          `json:"smtp_command"`
	Attempt     int             `json:"attempt"`
	Stream      string          `json:"stream"`
	Campaign    string          `json:"campaign"`
	Result      string          `json:"result"` // optional: delivered, deferred, bounced, expired
}

// kumo is a KumoMTA log record (https://docs.kumomta.com/reference/log_record/).
type kumo struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Sender    string          `json:"sender"`
	Recipient json.RawMessage `json:"recipient"` // a string, or an array in newer releases
	Queue     string          `json:"queue"`
	Site      string          `json:"site"`
	Response  struct {
		Code         int `json:"code"`
		EnhancedCode *struct {
			Class   int `json:"class"`
			Subject int `json:"subject"`
			Detail  int `json:"detail"`
		} `json:"enhanced_code"`
		Content string `json:"content"`
		Command string `json:"command"`
	} `json:"response"`
	PeerAddress *struct {
		Name string `json:"name"`
		Addr string `json:"addr"`
	} `json:"peer_address"`
	Timestamp   json.RawMessage `json:"timestamp"`
	NumAttempts int             `json:"num_attempts"`
	Meta        map[string]any  `json:"meta"`
	Headers     map[string]any  `json:"headers"`
	Feedback    json.RawMessage `json:"feedback_report"`
}

func parseJSON(b []byte) ([]Attempt, error) {
	var probe struct {
		Type     *string         `json:"type"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%w: JSON: %v", ErrMalformed, err)
	}
	if probe.Type != nil && len(probe.Response) > 0 {
		return parseKumo(b)
	}
	return parseCanonical(b)
}

func parseCanonical(b []byte) ([]Attempt, error) {
	var c canonical
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: canonical JSON: %v", ErrMalformed, err)
	}
	rcpt := normAddr(c.Recipient)
	if rcpt == "" || !strings.Contains(rcpt, "@") {
		return nil, fmt.Errorf("%w: canonical JSON: no recipient address", ErrMalformed)
	}
	ts, err := parseTime(c.TS)
	if err != nil {
		return nil, fmt.Errorf("%w: canonical JSON: ts: %v", ErrMalformed, err)
	}
	if c.ReplyCode != 0 && (c.ReplyCode < 200 || c.ReplyCode > 599) {
		return nil, fmt.Errorf("%w: canonical JSON: reply_code %d", ErrMalformed, c.ReplyCode)
	}
	a := Attempt{
		ID: c.ID, Time: ts, Format: FormatCanonical,
		MessageID: angle(c.MessageID), ReturnPath: normAddr(c.ReturnPath), Sender: normAddr(c.Sender),
		Recipient: rcpt, MX: c.MX, ReplyCode: c.ReplyCode, Status: c.Status, Reply: c.Reply,
		Command: strings.ToUpper(strings.TrimSpace(c.SMTPCommand)), Attempt: c.Attempt,
		Stream: c.Stream, Campaign: c.Campaign,
	}
	switch r := Result(strings.ToLower(c.Result)); r {
	case ResultDelivered, ResultDeferred, ResultBounced, ResultExpired:
		a.Result = r
	case "":
		a.Result = resultOfCode(c.ReplyCode, c.Status)
	default:
		return nil, fmt.Errorf("%w: canonical JSON: result %q", ErrMalformed, c.Result)
	}
	if a.Result == "" {
		return nil, fmt.Errorf("%w: canonical JSON: neither reply_code, status nor result says what happened", ErrMalformed)
	}
	if a.ID == "" {
		a.ID = recordID(FormatCanonical, b, rcpt)
	}
	return []Attempt{a}, nil
}

func resultOfCode(code int, status string) Result {
	class := code / 100
	if class == 0 && status != "" {
		class = int(status[0] - '0')
	}
	switch class {
	case 2:
		return ResultDelivered
	case 4:
		return ResultDeferred
	case 5:
		return ResultBounced
	}
	return ""
}

// kumoResults maps KumoMTA record types to results. Reception and
// delivery-side records that say nothing of a recipient's fate are not
// attempts.
var kumoResults = map[string]Result{
	"Delivery":         ResultDelivered,
	"TransientFailure": ResultDeferred,
	"Bounce":           ResultBounced,
	"Expiration":       ResultExpired,
	"AdminBounce":      ResultBounced,
	"OOB":              ResultBounceOOB,
	"Feedback":         ResultComplaint,
}

// ErrNotAttempt is returned for a record of a known format that is not a
// delivery attempt (a KumoMTA Reception record): nothing to store, and not
// an error worth a dead letter.
var ErrNotAttempt = fmt.Errorf("synclog: not a delivery attempt")

func parseKumo(b []byte) ([]Attempt, error) {
	var k kumo
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%w: KumoMTA record: %v", ErrMalformed, err)
	}
	result, ok := kumoResults[k.Type]
	if !ok {
		if k.Type == "Reception" || k.Type == "Rejection" || k.Type == "Any" {
			return nil, fmt.Errorf("%w: KumoMTA %s record", ErrNotAttempt, k.Type)
		}
		return nil, fmt.Errorf("%w: KumoMTA record type %q", ErrMalformed, k.Type)
	}
	rcpts, err := kumoRecipients(k.Recipient)
	if err != nil {
		return nil, err
	}
	ts, err := parseTime(k.Timestamp)
	if err != nil {
		return nil, fmt.Errorf("%w: KumoMTA timestamp: %v", ErrMalformed, err)
	}
	status := ""
	if e := k.Response.EnhancedCode; e != nil && e.Class != 0 {
		status = fmt.Sprintf("%d.%d.%d", e.Class, e.Subject, e.Detail)
	}
	mx := ""
	if k.PeerAddress != nil {
		mx = strings.TrimSuffix(k.PeerAddress.Name, ".")
	}
	base := Attempt{
		Time: ts, Format: FormatKumoMTA, Result: result, QueueID: k.ID,
		Sender: normAddr(k.Sender), ReturnPath: normAddr(k.Sender), MX: mx,
		ReplyCode: k.Response.Code, Status: status, Reply: strings.TrimSpace(k.Response.Content),
		Command: kumoCommand(k.Response.Command), Attempt: k.NumAttempts,
		MessageID: angle(headerString(k.Headers, "Message-ID")),
		Stream:    metaString(k.Meta, "stream", "tenant"),
		Campaign:  metaString(k.Meta, "campaign"),
	}
	if base.Stream == "" {
		base.Stream = kumoTenant(k.Queue)
	}
	out := make([]Attempt, 0, len(rcpts))
	for _, r := range rcpts {
		a := base
		a.Recipient = r
		if k.ID != "" {
			a.ID = k.ID + "/" + k.Type + "/" + strconv.Itoa(k.NumAttempts) + "/" + r
		} else {
			a.ID = recordID(FormatKumoMTA, b, r)
		}
		out = append(out, a)
	}
	return out, nil
}

func kumoRecipients(raw json.RawMessage) ([]string, error) {
	var one string
	var many []string
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, fmt.Errorf("%w: KumoMTA record without recipient", ErrMalformed)
	case json.Unmarshal(raw, &one) == nil:
		many = []string{one}
	case json.Unmarshal(raw, &many) == nil:
	default:
		return nil, fmt.Errorf("%w: KumoMTA recipient is neither a string nor an array of strings", ErrMalformed)
	}
	if len(many) > MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients in one record, limit %d", ErrMalformed, len(many), MaxRecipients)
	}
	out := make([]string, 0, len(many))
	for _, r := range many {
		if r = normAddr(r); strings.Contains(r, "@") {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: KumoMTA record without a recipient address", ErrMalformed)
	}
	return out, nil
}

// kumoCommand turns KumoMTA's command ("RCPT TO:<a@b>\r\n", ".\r\n") into
// the verb.
func kumoCommand(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	switch {
	case c == "":
		return ""
	case c == "." || strings.HasPrefix(c, "DATA") || strings.HasPrefix(c, "BDAT"):
		return "DATA"
	case strings.HasPrefix(c, "RCPT"):
		return "RCPT"
	case strings.HasPrefix(c, "MAIL"):
		return "MAIL"
	case strings.HasPrefix(c, "EHLO"):
		return "EHLO"
	case strings.HasPrefix(c, "HELO"):
		return "HELO"
	case strings.HasPrefix(c, "STARTTLS"):
		return "STARTTLS"
	}
	if i := strings.IndexAny(c, " :"); i > 0 {
		return c[:i]
	}
	return c
}

// kumoTenant reads the tenant of a KumoMTA queue name "campaign:tenant@domain".
func kumoTenant(queue string) string {
	at := strings.LastIndexByte(queue, '@')
	if at < 0 {
		return ""
	}
	q := queue[:at]
	if i := strings.IndexByte(q, ':'); i >= 0 {
		return q[i+1:]
	}
	return ""
}

func metaString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

func headerString(h map[string]any, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			if s, ok := v.(string); ok {
				return s
			}
		}
	}
	return ""
}

func parseTime(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, fmt.Errorf("missing")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, err
		}
		return t.UTC(), nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return time.Time{}, fmt.Errorf("neither RFC 3339 nor Unix seconds")
	}
	if f <= 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("Unix seconds %v out of range", f)
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
}
