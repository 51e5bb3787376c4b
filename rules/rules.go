// Package rules holds bouncer's knowledge of real-world bounces as data:
// which mailbox provider a domain or MTA host belongs to, which phrases of a
// reply mean which reason, and how to find recipients and replies in the
// human-readable text of bounces that are not RFC 3464 DSNs (qmail, Exim,
// Exchange, Gmail, ...).
//
// The default rules are embedded from default/*.json. An operator's file
// (bouncer --rules FILE) has the same schema; its entries replace the default
// entries of the same name and are tried before them, so a rule can be added
// or corrected without recompiling.
package rules

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sort"
	"strings"
)

//go:embed default/*.json
var defaultFS embed.FS

// File is the schema of a rules file.
type File struct {
	Providers []Provider   `json:"providers,omitempty"`
	Reasons   []ReasonRule `json:"reasons,omitempty"`
	Formats   []Format     `json:"formats,omitempty"`
	// Autoreply conditions recognise auto-replies (RFC 3834, vacation
	// texts): a message for which any holds is an auto-reply.
	Autoreply []Cond `json:"autoreply,omitempty"`
	// Daemon conditions recognise messages written by a mail system
	// (MAILER-DAEMON, X-Failed-Recipients): such a message is never an
	// auto-reply, whatever its Auto-Submitted header says.
	Daemon []Cond `json:"daemon,omitempty"`
	// Delayed conditions recognise a delay warning among non-DSN bounces:
	// the MTA still holds the message and will retry, so its recipients'
	// action is "delayed", not "failed".
	Delayed []Cond `json:"delayed,omitempty"`
	// Commands name the SMTP command a reply answers when its wording
	// makes that certain and the bounce does not say ("Recipient address
	// rejected" is Postfix's refusal at RCPT TO).
	Commands []CommandRule `json:"commands,omitempty"`
}

// CommandRule maps reply wording to the SMTP command that drew the reply:
// a rule matches when any of its phrases occurs in the lower-cased text.
type CommandRule struct {
	Name    string   `json:"name"`
	Command string   `json:"command"` // CONN, EHLO, HELO, MAIL, RCPT or DATA
	Phrases []string `json:"phrases"`
	Note    string   `json:"note,omitempty"`

	phrases []needle
}

// smtpCommands are the commands a CommandRule may name: the connection
// (its greeting) and the commands of RFC 5321 section 4.1.1 a reply to a
// transaction answers.
var smtpCommands = map[string]bool{"CONN": true, "EHLO": true, "HELO": true, "MAIL": true, "RCPT": true, "DATA": true}

// Provider names a mailbox provider by the domains it hosts and the host
// names of its MTAs.
type Provider struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains,omitempty"` // recipient domains, exact or "*.suffix"
	Hosts   []string `json:"hosts,omitempty"`   // MTA host name suffixes, "google.com" matches "mx.google.com"
}

// ReasonRule maps reply text to a reason. A rule matches when any of its
// phrases occurs in the lower-cased reply (or any regexp matches) and every
// condition it sets holds.
type ReasonRule struct {
	Name     string   `json:"name"`
	Reason   string   `json:"reason"`
	Scope    string   `json:"scope,omitempty"` // overrides the reason's default scope
	Phrases  []string `json:"phrases,omitempty"`
	Regexps  []string `json:"regexps,omitempty"`
	Status   []string `json:"status,omitempty"`   // enhanced status prefixes required, "5.7." or "4.2.0"
	Codes    []int    `json:"codes,omitempty"`    // reply codes required, 450; 4 or 5 alone means the class
	Provider []string `json:"provider,omitempty"` // providers required
	// AfterData is the reason to use instead when the reply may have come
	// after DATA: the command that drew it is DATA, or nothing says which
	// it was and the format is not a local one. A server that took the
	// recipient at RCPT and refuses the message after DATA is a content
	// filter speaking, whatever its words ("550 Unknown user"). An
	// enhanced status X.1.1 keeps the rule's own reason. Empty: no change.
	AfterData string `json:"after_data,omitempty"`
	Note      string `json:"note,omitempty"`

	re   []*regexp.Regexp
	need []needle // need[i] is in every text re[i] matches
}

// Format describes a non-DSN bounce family: how to recognise it and where in
// its text the recipients and their replies are.
type Format struct {
	Name     string `json:"name"`
	Provider string `json:"provider,omitempty"` // provider the format implies
	Note     string `json:"note,omitempty"`
	// Match: the format applies when any condition holds.
	Match []Cond `json:"match"`
	// Start and End delimit the error block in the text; lines before the
	// first Start phrase and from the first End phrase on are ignored. An
	// empty Start means the whole text.
	Start []string `json:"start,omitempty"`
	End   []string `json:"end,omitempty"`
	// Recipient regexps find the lines that name a failed recipient. The
	// named group "rcpt" is the address; an optional group "diag" is reply
	// text on the same line. Lines that follow, up to the next recipient
	// line or a blank line, are the reply text. Without Recipient patterns
	// any line holding an address starts a recipient.
	Recipient []string `json:"recipient,omitempty"`
	// Diagnostic regexps, tried on the error block when a recipient's own
	// lines hold no reply; group "diag".
	Diagnostic []string `json:"diagnostic,omitempty"`
	// Fallback formats apply only when nothing else recognised the
	// message: they read any bounce-looking text generically.
	Fallback bool `json:"fallback,omitempty"`
	// Multiline formats let a recipient's reply run over blank lines, up
	// to the next recipient line or the End phrase (GMX's "For the
	// following reason:" paragraph, Domino's "because:").
	Multiline bool `json:"multiline,omitempty"`
	// Reason forces a reason for every recipient of this format when the
	// reply itself says nothing more specific.
	Reason string `json:"reason,omitempty"`
	// Local formats report the verdict of the reporting system itself (its
	// local delivery agent or its directory: Domino, Notes, IMail), not a
	// remote server's SMTP reply: no SMTP command drew their texts, so a
	// rule's after_data reading does not apply to them.
	Local bool `json:"local,omitempty"`

	recipient  []*regexp.Regexp
	diagnostic []*regexp.Regexp
	start, end []needle
}

// Cond is one recognition condition of a Format: every part set must hold.
// Header values and the body are compared lower-cased.
type Cond struct {
	From    []string `json:"from,omitempty"`    // From contains any
	Subject []string `json:"subject,omitempty"` // Subject contains any
	Header  string   `json:"header,omitempty"`  // this header is present ...
	Value   []string `json:"value,omitempty"`   // ... and contains any of these
	Body    []string `json:"body,omitempty"`    // the text contains any

	from, subject, value, body []needle
}

// Set is a compiled, ready-to-use set of rules. It is safe for concurrent use.
type Set struct {
	providers []Provider
	reasons   []ReasonRule
	formats   []Format
	autoreply []Cond
	daemon    []Cond
	delayed   []Cond
	commands  []CommandRule
	domains   map[string]string // exact recipient domain -> provider

	// reasonPhrases finds the phrases of reasons in one pass, each
	// phrase's id the number of its rule.
	reasonPhrases *phraseIndex
}

// Default returns the embedded default rules.
func Default() (*Set, error) {
	f, err := loadDefault()
	if err != nil {
		return nil, err
	}
	return compile(f)
}

// MustDefault is Default for package initialisation and tests; the embedded
// rules are checked by this package's tests, so it does not fail in a build
// that passed them.
func MustDefault() *Set {
	s, err := Default()
	if err != nil {
		panic(err)
	}
	return s
}

// Load returns the default rules overridden by the rules file at path.
func Load(path string) (*Set, error) {
	f, err := loadDefault()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading rules file: %w", err)
	}
	var over File
	if err := decode(b, &over); err != nil {
		return nil, fmt.Errorf("rules file %s: %w", path, err)
	}
	return compile(merge(f, over))
}

func loadDefault() (File, error) {
	names, err := fs.Glob(defaultFS, "default/*.json")
	if err != nil {
		return File{}, err
	}
	sort.Strings(names)
	var all File
	for _, name := range names {
		b, err := defaultFS.ReadFile(name)
		if err != nil {
			return File{}, err
		}
		var f File
		if err := decode(b, &f); err != nil {
			return File{}, fmt.Errorf("embedded rules %s: %w", name, err)
		}
		all.Providers = append(all.Providers, f.Providers...)
		all.Reasons = append(all.Reasons, f.Reasons...)
		all.Formats = append(all.Formats, f.Formats...)
		all.Autoreply = append(all.Autoreply, f.Autoreply...)
		all.Daemon = append(all.Daemon, f.Daemon...)
		all.Delayed = append(all.Delayed, f.Delayed...)
		all.Commands = append(all.Commands, f.Commands...)
	}
	return all, nil
}

func decode(b []byte, f *File) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		return err
	}
	return nil
}

// merge puts the override's entries first and drops default entries whose
// name the override reuses.
func merge(def, over File) File {
	var out File
	seen := map[string]bool{}
	for _, p := range over.Providers {
		seen[p.Name] = true
	}
	out.Providers = append(out.Providers, over.Providers...)
	for _, p := range def.Providers {
		if !seen[p.Name] {
			out.Providers = append(out.Providers, p)
		}
	}
	seen = map[string]bool{}
	for _, r := range over.Reasons {
		seen[r.Name] = true
	}
	out.Reasons = append(out.Reasons, over.Reasons...)
	for _, r := range def.Reasons {
		if !seen[r.Name] {
			out.Reasons = append(out.Reasons, r)
		}
	}
	seen = map[string]bool{}
	for _, r := range over.Formats {
		seen[r.Name] = true
	}
	out.Formats = append(out.Formats, over.Formats...)
	for _, r := range def.Formats {
		if !seen[r.Name] {
			out.Formats = append(out.Formats, r)
		}
	}
	seen = map[string]bool{}
	for _, r := range over.Commands {
		seen[r.Name] = true
	}
	out.Commands = append(out.Commands, over.Commands...)
	for _, r := range def.Commands {
		if !seen[r.Name] {
			out.Commands = append(out.Commands, r)
		}
	}
	out.Autoreply = append(append(out.Autoreply, over.Autoreply...), def.Autoreply...)
	out.Daemon = append(append(out.Daemon, over.Daemon...), def.Daemon...)
	out.Delayed = append(append(out.Delayed, over.Delayed...), def.Delayed...)
	return out
}

// reasonVocabulary is event.Reasons as strings; rules sits beside event in
// the layers and does not import it. A test keeps the two equal.
var reasonVocabulary = strings.Fields(`userunknown hostunknown hasmoved notaccept mailboxfull suspend
	emailtoolarge expired blocked badreputation requireptr spamdetected virusdetected contenterror
	filtered notcompliantrfc policyviolation authfailure ratelimited norelaying rejected securityerror
	syntaxerror systemerror systemfull networkerror mailererror failedstarttls suppressed onhold
	undefined delivered feedback vacation greylisting`)

func compile(f File) (*Set, error) {
	var errs []error
	vocab := map[string]bool{}
	for _, r := range reasonVocabulary {
		vocab[r] = true
	}
	s := &Set{domains: map[string]string{}}
	names := map[string]bool{}
	for _, p := range f.Providers {
		if p.Name == "" {
			errs = append(errs, errors.New("provider without a name"))
			continue
		}
		for i, d := range p.Domains {
			p.Domains[i] = strings.ToLower(d)
			if !strings.HasPrefix(d, "*.") {
				if _, dup := s.domains[p.Domains[i]]; !dup {
					s.domains[p.Domains[i]] = p.Name
				}
			}
		}
		for i, h := range p.Hosts {
			p.Hosts[i] = strings.ToLower(strings.TrimPrefix(h, "."))
		}
		s.providers = append(s.providers, p)
	}
	for _, r := range f.Reasons {
		where := fmt.Sprintf("reason rule %q", r.Name)
		if r.Name == "" {
			errs = append(errs, errors.New("reason rule without a name"))
		}
		if names["reason/"+r.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		}
		names["reason/"+r.Name] = true
		if !vocab[r.Reason] {
			errs = append(errs, fmt.Errorf("%s: unknown reason %q", where, r.Reason))
		}
		if r.AfterData != "" && !vocab[r.AfterData] {
			errs = append(errs, fmt.Errorf("%s: unknown after_data reason %q", where, r.AfterData))
		}
		switch r.Scope {
		case "", "recipient", "sender", "transport":
		default:
			errs = append(errs, fmt.Errorf("%s: unknown scope %q", where, r.Scope))
		}
		if len(r.Phrases) == 0 && len(r.Regexps) == 0 {
			errs = append(errs, fmt.Errorf("%s: needs phrases or regexps", where))
		}
		for i, p := range r.Phrases {
			r.Phrases[i] = strings.ToLower(p)
		}
		for _, expr := range r.Regexps {
			re, err := regexp.Compile("(?i)" + expr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			r.re = append(r.re, re)
			r.need = append(r.need, newNeedle(requiredLiteral("(?i)"+expr)))
		}
		s.reasons = append(s.reasons, r)
	}
	for _, fm := range f.Formats {
		where := fmt.Sprintf("format %q", fm.Name)
		if fm.Name == "" {
			errs = append(errs, errors.New("format without a name"))
		}
		if names["format/"+fm.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		}
		names["format/"+fm.Name] = true
		if len(fm.Match) == 0 {
			errs = append(errs, fmt.Errorf("%s: needs at least one match condition", where))
		}
		if fm.Reason != "" && !vocab[fm.Reason] {
			errs = append(errs, fmt.Errorf("%s: unknown reason %q", where, fm.Reason))
		}
		errs = append(errs, compileConds(where, fm.Match)...)
		fm.start = newNeedles(lowerCopy(fm.Start))
		fm.end = newNeedles(lowerCopy(fm.End))
		for _, expr := range fm.Recipient {
			re, err := regexp.Compile(expr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			if re.SubexpIndex("rcpt") < 0 {
				errs = append(errs, fmt.Errorf("%s: recipient pattern %q has no (?P<rcpt>...) group", where, expr))
				continue
			}
			fm.recipient = append(fm.recipient, re)
		}
		for _, expr := range fm.Diagnostic {
			re, err := regexp.Compile(expr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			if re.SubexpIndex("diag") < 0 {
				errs = append(errs, fmt.Errorf("%s: diagnostic pattern %q has no (?P<diag>...) group", where, expr))
				continue
			}
			fm.diagnostic = append(fm.diagnostic, re)
		}
		s.formats = append(s.formats, fm)
	}
	for _, c := range f.Commands {
		where := fmt.Sprintf("command rule %q", c.Name)
		if c.Name == "" {
			errs = append(errs, errors.New("command rule without a name"))
		}
		if names["command/"+c.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		}
		names["command/"+c.Name] = true
		if !smtpCommands[c.Command] {
			errs = append(errs, fmt.Errorf("%s: unknown command %q", where, c.Command))
		}
		if len(c.Phrases) == 0 {
			errs = append(errs, fmt.Errorf("%s: needs phrases", where))
		}
		c.Phrases = lowerCopy(c.Phrases)
		c.phrases = newNeedles(c.Phrases)
		s.commands = append(s.commands, c)
	}
	var (
		phrases []string
		ids     []int32
		size    int
	)
	for i, r := range s.reasons {
		for _, p := range r.Phrases {
			phrases = append(phrases, p)
			ids = append(ids, int32(i))
			size += len(p)
		}
	}
	if size > maxPhraseBytes {
		errs = append(errs, fmt.Errorf("reason rules: %d bytes of phrases, at most %d", size, maxPhraseBytes))
	} else {
		s.reasonPhrases = newPhraseIndex(phrases, ids, len(s.reasons))
	}
	errs = append(errs, compileConds("autoreply", f.Autoreply)...)
	s.autoreply = f.Autoreply
	errs = append(errs, compileConds("daemon", f.Daemon)...)
	s.daemon = f.Daemon
	errs = append(errs, compileConds("delayed", f.Delayed)...)
	s.delayed = f.Delayed
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func compileConds(where string, conds []Cond) []error {
	var errs []error
	for i := range conds {
		c := &conds[i]
		lower(c.From)
		lower(c.Subject)
		lower(c.Value)
		lower(c.Body)
		c.from, c.subject = newNeedles(c.From), newNeedles(c.Subject)
		c.value, c.body = newNeedles(c.Value), newNeedles(c.Body)
		if len(c.From)+len(c.Subject)+len(c.Body) == 0 && c.Header == "" {
			errs = append(errs, fmt.Errorf("%s: empty match condition", where))
		}
	}
	return errs
}

func lower(ss []string) {
	for i, s := range ss {
		ss[i] = strings.ToLower(s)
	}
}

func lowerCopy(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}
