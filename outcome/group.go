package outcome

import (
	"sort"
	"strings"
	"time"
)

// Item is one stored event of a recipient with its correlation keys
// (docs/outcomes.md "Correlation keys"): what Group gathers into
// outcomes.
type Item struct {
	ID         string // the event's id: breaks ties between equal times
	Stream     string // the sending stream; "" for a report
	ReturnPath string // VERP return path: a sync record's sender, the address a report was sent to
	MessageID  string
	Observation
}

// Grouped is the outcome of one (stream, message) of the recipient whose
// items were grouped.
type Grouped struct {
	// Stream is the first non-empty stream of the group's sync items, ""
	// when none has one (a report alone).
	Stream string
	// MessageID is the group's message id, "" when no item had one; a
	// group never holds two.
	MessageID string
	// ReturnPath is the group's first return path, "" when none.
	ReturnPath string
	// IDs are the group's item ids, in time order (ties by id).
	IDs []string
	Outcome
}

// Key identifies the group among the recipient's: its stream, and its
// message id, else its return path, else its first item's id.
//
// TODO: the VERP message-id hash (verp/) where the message id is unknown,
// so a report that arrives before its sync log keeps its key.
func (g Grouped) Key() string {
	id := "mid:" + g.MessageID
	switch {
	case g.MessageID != "":
	case g.ReturnPath != "":
		id = "rp:" + g.ReturnPath
	default:
		id = "id:" + g.IDs[0]
	}
	return g.Stream + "\x00" + id
}

// Group gathers the items of one recipient into outcomes, by the key
// precedence of docs/outcomes.md:
//
//  1. items sharing a return path are one group;
//  2. items sharing a message id are one group, merged with the return
//     path group of that message id;
//  3. a report (Source other than "sync") with neither key joins the
//     group whose latest sync item is the latest at most window before
//     the report (the later-starting group on a tie); with none, or with
//     window ≤ 0, it stands alone.
//
// A return path shared by items of two different message ids is not
// VERP, but a fixed bounce address; it keys nothing, and its reports
// without a message id are placed by rule 3.
//
// The result does not depend on the order of items; groups come in the
// order of their first item (by time, then id), each folded by Fold.
func Group(items []Item, window time.Duration) []Grouped {
	sorted := append([]Item(nil), items...)
	sort.SliceStable(sorted, func(i, j int) bool { return itemLess(&sorted[i], &sorted[j]) })

	u := newUnion(len(sorted))
	// Rule 1, VERP return paths: one message id at most among an
	// address's items.
	byReturnPath := map[string][]int{}
	for i := range sorted {
		if rp := returnPathKey(&sorted[i]); rp != "" {
			byReturnPath[rp] = append(byReturnPath[rp], i)
		}
	}
	verp := map[string]bool{}
	for rp, idx := range byReturnPath {
		ids := map[string]bool{}
		for _, i := range idx {
			if m := sorted[i].MessageID; m != "" {
				ids[m] = true
			}
		}
		if len(ids) > 1 {
			continue
		}
		verp[rp] = true
		for _, i := range idx[1:] {
			u.join(idx[0], i)
		}
	}
	// Rule 2, message ids.
	byMessageID := map[string]int{}
	for i := range sorted {
		m := sorted[i].MessageID
		if m == "" {
			continue
		}
		if first, ok := byMessageID[m]; ok {
			u.join(first, i)
		} else {
			byMessageID[m] = i
		}
	}
	// Rule 3, the time window, against the groups of rules 1 and 2:
	// attached reports are no sync items, so they never move another.
	lastSync := map[int]int{} // root -> index of its latest sync item
	for i := range sorted {
		if sorted[i].Source == "sync" {
			lastSync[u.find(i)] = i // sorted: the last one seen is the latest
		}
	}
	var attach [][2]int
	for i := range sorted {
		it := &sorted[i]
		if it.Source == "sync" || it.MessageID != "" || verp[returnPathKey(it)] || window <= 0 {
			continue
		}
		best := -1
		for _, s := range lastSync {
			d := it.Time.Sub(sorted[s].Time)
			if d < 0 || d > window {
				continue
			}
			if best < 0 || sorted[s].Time.After(sorted[best].Time) ||
				(sorted[s].Time.Equal(sorted[best].Time) && s > best) {
				best = s
			}
		}
		if best >= 0 {
			attach = append(attach, [2]int{best, i})
		}
	}
	for _, a := range attach {
		u.join(a[0], a[1])
	}

	// Groups in the order of their first item; items in sorted order.
	var (
		out   []Grouped
		index = map[int]int{} // root -> position in out
		obs   [][]Observation
	)
	for i := range sorted {
		it := &sorted[i]
		r := u.find(i)
		p, ok := index[r]
		if !ok {
			p = len(out)
			index[r] = p
			out = append(out, Grouped{})
			obs = append(obs, nil)
		}
		g := &out[p]
		g.IDs = append(g.IDs, it.ID)
		obs[p] = append(obs[p], it.Observation)
		if g.Stream == "" && it.Source == "sync" {
			g.Stream = it.Stream
		}
		if g.MessageID == "" {
			g.MessageID = it.MessageID
		}
		if g.ReturnPath == "" {
			g.ReturnPath = returnPathKey(it)
		}
	}
	for p := range out {
		out[p].Outcome = Fold(obs[p])
	}
	return out
}

// itemLess is the canonical order: time, then id, then the remaining
// fields, so equal-looking items still sort one way.
func itemLess(a, b *Item) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	if a.Source != b.Source {
		return a.Source < b.Source
	}
	if a.Class != b.Class {
		return a.Class < b.Class
	}
	if a.MessageID != b.MessageID {
		return a.MessageID < b.MessageID
	}
	return a.ReturnPath < b.ReturnPath
}

// returnPathKey is how return paths compare: addresses, case-folded.
func returnPathKey(it *Item) string {
	return strings.ToLower(strings.TrimSpace(it.ReturnPath))
}

// union is a disjoint-set forest over item indices. The root of a set
// is its smallest index, so roots follow the canonical order.
type union []int

func newUnion(n int) union {
	u := make(union, n)
	for i := range u {
		u[i] = i
	}
	return u
}

func (u union) find(i int) int {
	for u[i] != i {
		u[i] = u[u[i]]
		i = u[i]
	}
	return i
}

func (u union) join(a, b int) {
	ra, rb := u.find(a), u.find(b)
	switch {
	case ra < rb:
		u[rb] = ra
	case rb < ra:
		u[ra] = rb
	}
}
