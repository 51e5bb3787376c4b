// Package suppress decides who must not be mailed again, from the outcomes
// of earlier mail (DESIGN.md "Suppression policy"): a hard recipient-scope
// failure or a complaint suppresses at once; soft recipient-scope failures
// suppress after a number of them within a window, for a while, and a later
// delivery lifts that; greylisting, sender-scope and transport failures
// never suppress a recipient. The package is pure: it reads outcomes, it
// does not store anything.
package suppress

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Policy is the configurable part of the decision. The zero Policy is not
// usable; start from Default.
type Policy struct {
	// SoftCount soft recipient-scope failures within SoftWindow suppress
	// for SoftFor.
	SoftCount  int      `json:"soft_count"`
	SoftWindow Duration `json:"soft_window"`
	SoftFor    Duration `json:"soft_for"`
	// HardFor and ComplaintFor bound those suppressions; 0 is forever.
	HardFor      Duration `json:"hard_for"`
	ComplaintFor Duration `json:"complaint_for"`
	// ComplaintScope is "stream" (a complaint about one stream suppresses
	// that stream only) or "global".
	ComplaintScope string `json:"complaint_scope"`
	// Normalize rules of address comparison beyond lower-casing.
	Normalize Normalization `json:"normalize"`
}

// Default is DESIGN.md's policy: hard and complaints now and for good,
// soft after 3 within 7 days for 30 days, complaints per stream.
var Default = Policy{
	SoftCount:      3,
	SoftWindow:     Duration(7 * 24 * time.Hour),
	SoftFor:        Duration(30 * 24 * time.Hour),
	ComplaintScope: "stream",
}

// Validate reports the first unusable setting.
func (p Policy) Validate() error {
	switch {
	case p.SoftCount < 1:
		return errors.New("suppress: soft_count must be at least 1")
	case p.SoftWindow <= 0:
		return errors.New("suppress: soft_window must be positive")
	case p.SoftFor <= 0:
		return errors.New("suppress: soft_for must be positive")
	case p.HardFor < 0 || p.ComplaintFor < 0:
		return errors.New("suppress: hard_for and complaint_for must not be negative (0 is forever)")
	case p.ComplaintScope != "stream" && p.ComplaintScope != "global":
		return fmt.Errorf("suppress: complaint_scope %q: want stream or global", p.ComplaintScope)
	}
	return nil
}

// Load reads a policy file (JSON); fields it leaves out keep Default's
// values, unknown fields are an error.
func Load(path string) (Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("suppression policy: %w", err)
	}
	p := Default
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("suppression policy %s: %w", path, err)
	}
	return p, p.Validate()
}

// Duration is a time.Duration written as "720h" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"720h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Outcome is what the policy reads of one final outcome of a recipient.
type Outcome struct {
	Time   time.Time // when it became final (its last observation)
	Stream string    // "" when unknown
	Class  event.Class
	Reason event.Reason
	Scope  event.Scope
}

// GlobalStream names the scope that covers every stream.
const GlobalStream = ""

// Decision is one suppression in force.
type Decision struct {
	Stream string // GlobalStream, or the stream it applies to
	Class  event.Class
	Reason event.Reason
	Rule   string    // "hard", "complaint", "soft"
	Since  time.Time // when it started
	Until  time.Time // zero: until lifted by hand
}

// Evaluate returns the suppressions in force at now for one recipient,
// given its final outcomes (any order). Hard failures suppress every
// stream; soft failures are counted over every stream and suppress every
// stream; a complaint suppresses its stream (or every stream, as the policy
// says). A delivery after soft failures lifts the soft suppression and
// restarts the count.
func (p Policy) Evaluate(outcomes []Outcome, now time.Time) []Decision {
	sorted := append([]Outcome(nil), outcomes...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.Before(sorted[j].Time) })
	var out []Decision
	until := func(since time.Time, d Duration) time.Time {
		if d == 0 {
			return time.Time{}
		}
		return since.Add(time.Duration(d))
	}
	inForce := func(d Decision) bool { return !d.Since.After(now) && (d.Until.IsZero() || now.Before(d.Until)) }

	// Hard: the first hard recipient-scope failure.
	for _, o := range sorted {
		if o.Class == event.ClassHard && o.Scope == event.ScopeRecipient {
			if d := (Decision{Stream: GlobalStream, Class: o.Class, Reason: o.Reason, Rule: "hard", Since: o.Time, Until: until(o.Time, p.HardFor)}); inForce(d) {
				out = append(out, d)
			}
			break
		}
	}
	// Complaints: the latest per stream.
	complaints := map[string]Outcome{}
	for _, o := range sorted {
		if o.Class == event.ClassComplaint {
			s := o.Stream
			if p.ComplaintScope == "global" {
				s = GlobalStream
			}
			complaints[s] = o
		}
	}
	for s, o := range complaints {
		if d := (Decision{Stream: s, Class: o.Class, Reason: o.Reason, Rule: "complaint", Since: o.Time, Until: until(o.Time, p.ComplaintFor)}); inForce(d) {
			out = append(out, d)
		}
	}
	// Soft: SoftCount recipient-scope soft failures within SoftWindow with
	// no delivery between them; the suppression starts at the last of them.
	var run []Outcome
	var soft *Decision
	for _, o := range sorted {
		if o.Time.After(now) {
			break
		}
		switch {
		case o.Class == event.ClassDelivered:
			run, soft = nil, nil // a delivery proves the mailbox works again
		case o.Class == event.ClassSoft && o.Scope == event.ScopeRecipient:
			run = append(run, o)
			for len(run) > 0 && o.Time.Sub(run[0].Time) > time.Duration(p.SoftWindow) {
				run = run[1:]
			}
			if len(run) >= p.SoftCount {
				d := Decision{Stream: GlobalStream, Class: o.Class, Reason: o.Reason, Rule: "soft", Since: o.Time, Until: o.Time.Add(time.Duration(p.SoftFor))}
				soft = &d
			}
		}
	}
	if soft != nil && inForce(*soft) {
		out = append(out, *soft)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Stream < out[j].Stream
	})
	return out
}

// Suppressed reports whether mail to the recipient on stream is suppressed
// by any of decisions.
func Suppressed(decisions []Decision, stream string) bool {
	for _, d := range decisions {
		if d.Stream == GlobalStream || d.Stream == stream {
			return true
		}
	}
	return false
}
