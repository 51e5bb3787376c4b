package outcome

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// it returns an item at t0 plus min minutes; keys are "stream|return
// path|message id".
func it(id string, min int, source string, class event.Class, action, keys string) Item {
	k := strings.Split(keys, "|")
	return Item{ID: id, Stream: k[0], ReturnPath: k[1], MessageID: k[2], Observation: Observation{
		Time: t0.Add(time.Duration(min) * time.Minute), Source: source, Class: class, Action: action,
	}}
}

// summary is a group as "state/class [ids] key".
func summary(g Grouped) string {
	return fmt.Sprintf("%s/%s %v %s", g.State, g.Class, g.IDs, strings.ReplaceAll(g.Key(), "\x00", "|"))
}

func TestGroup(t *testing.T) {
	const window = 5 * 24 * time.Hour
	day := 24 * 60
	tests := []struct {
		name  string
		items []Item
		want  []string
	}{
		{"accepted then bounced via the VERP return path", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news|b+tok1@bounces.example.com|<m1@x>"),
			it("n1", 90, "ndr", event.ClassHard, "failed", "|b+tok1@bounces.example.com|"),
		}, []string{"bounced/hard [s1 n1] news|mid:<m1@x>"}},
		{"a VERP report before its sync log", []Item{
			it("n1", 0, "ndr", event.ClassHard, "failed", "|B+Tok1@Bounces.example.com|"),
			it("s1", 1, "sync", event.ClassDelivered, "delivered", "news|b+tok1@bounces.example.com|<m1@x>"),
		}, []string{"bounced/hard [n1 s1] news|mid:<m1@x>"}},
		{"sync 5xx and the NDR with the same message id: one failure", []Item{
			it("s1", 0, "sync", event.ClassHard, "failed", "news|bounces@example.com|<m1@x>"),
			it("n1", 2, "ndr", event.ClassHard, "failed", "|other@example.com|<m1@x>"),
		}, []string{"bounced/hard [s1 n1] news|mid:<m1@x>"}},
		{"return path group merged with a message id group", []Item{
			it("s1", 0, "sync", event.ClassGreylist, "delayed", "news|b+tok1@bounces.example.com|<m1@x>"),
			it("n1", 30, "ndr", event.ClassSoft, "failed", "|b+tok1@bounces.example.com|"),
			it("a1", 60, "ndr", event.ClassAutoreply, "", "||<m1@x>"),
		}, []string{"bounced/soft [s1 n1 a1] news|mid:<m1@x>"}},
		{"4xx then 250: greylisting resolved", []Item{
			it("s1", 0, "sync", event.ClassGreylist, "delayed", "news|b+t@bounces.example.com|<m1@x>"),
			it("s2", 15, "sync", event.ClassDelivered, "delivered", "news|b+t@bounces.example.com|<m1@x>"),
		}, []string{"greylist_resolved/greylist [s1 s2] news|mid:<m1@x>"}},
		{"a keyless NDR within the window attaches to the latest sync group", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news||<m1@x>"),
			it("s2", 60, "sync", event.ClassDelivered, "delivered", "shop||<m2@x>"),
			it("n1", 2*day, "ndr", event.ClassHard, "failed", "||"),
		}, []string{"delivered/delivered [s1] news|mid:<m1@x>", "bounced/hard [s2 n1] shop|mid:<m2@x>"}},
		{"a keyless NDR outside the window stands alone", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news||<m1@x>"),
			it("n1", 6*day, "ndr", event.ClassHard, "failed", "||"),
		}, []string{"delivered/delivered [s1] news|mid:<m1@x>", "bounced/hard [n1] |id:n1"}},
		{"a keyless NDR never attaches to a later sync group", []Item{
			it("n1", 0, "ndr", event.ClassHard, "failed", "||"),
			it("s1", 10, "sync", event.ClassDelivered, "delivered", "news||<m1@x>"),
		}, []string{"bounced/hard [n1] |id:n1", "delivered/delivered [s1] news|mid:<m1@x>"}},
		{"the window counts from the group's last sync item", []Item{
			it("s1", 0, "sync", event.ClassGreylist, "delayed", "news||<m1@x>"),
			it("s2", 4*day, "sync", event.ClassGreylist, "delayed", "news||<m1@x>"),
			it("n1", 8*day, "ndr", event.ClassSoft, "failed", "||"),
		}, []string{"bounced/soft [s1 s2 n1] news|mid:<m1@x>"}},
		{"two messages to the same recipient stay two outcomes", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news|b+tok1@bounces.example.com|<m1@x>"),
			it("s2", 5, "sync", event.ClassDelivered, "delivered", "news|b+tok2@bounces.example.com|<m2@x>"),
			it("n2", 30, "ndr", event.ClassHard, "failed", "|b+tok2@bounces.example.com|"),
		}, []string{"delivered/delivered [s1] news|mid:<m1@x>", "bounced/hard [s2 n2] news|mid:<m2@x>"}},
		{"a fixed return path shared by two messages keys nothing", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news|bounces@example.com|<m1@x>"),
			it("s2", 5, "sync", event.ClassDelivered, "delivered", "news|bounces@example.com|<m2@x>"),
			it("n1", 30, "ndr", event.ClassHard, "failed", "|bounces@example.com|"),
		}, []string{"delivered/delivered [s1] news|mid:<m1@x>", "bounced/hard [s2 n1] news|mid:<m2@x>"}},
		{"a sync item with no keys stands alone", []Item{
			it("s1", 0, "sync", event.ClassSoft, "failed", "news||"),
			it("s2", 5, "sync", event.ClassDelivered, "delivered", "news||"),
		}, []string{"bounced/soft [s1] news|id:s1", "delivered/delivered [s2] news|id:s2"}},
		{"a complaint wins its group", []Item{
			it("s1", 0, "sync", event.ClassDelivered, "delivered", "news|b+t@bounces.example.com|<m1@x>"),
			it("c1", 600, "ndr", event.ClassComplaint, "", "|b+t@bounces.example.com|"),
		}, []string{"complained/complaint [s1 c1] news|mid:<m1@x>"}},
		{"nothing", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, g := range Group(tt.items, window) {
				got = append(got, summary(g))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Group =\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(tt.want, "\n "))
			}
		})
	}
}

// A zero window never attaches a keyless report.
func TestGroupNoWindow(t *testing.T) {
	items := []Item{
		it("s1", 0, "sync", event.ClassDelivered, "delivered", "news||<m1@x>"),
		it("n1", 0, "ndr", event.ClassHard, "failed", "||"),
	}
	if got := Group(items, 0); len(got) != 2 {
		t.Errorf("Group with window 0 = %d groups, want 2", len(got))
	}
}

// TestGroupOrderIndependent checks that every permutation of a mixed set
// of items groups and folds to the same outcomes.
func TestGroupOrderIndependent(t *testing.T) {
	items := []Item{
		it("s1", 0, "sync", event.ClassGreylist, "delayed", "news|b+tok1@bounces.example.com|<m1@x>"),
		it("s2", 10, "sync", event.ClassDelivered, "delivered", "news|b+tok1@bounces.example.com|<m1@x>"),
		it("n1", 20, "ndr", event.ClassHard, "failed", "|b+tok1@bounces.example.com|"),
		it("s3", 20, "sync", event.ClassDelivered, "delivered", "shop||<m2@x>"),
		it("n2", 30, "ndr", event.ClassSoft, "failed", "||"),
		it("n3", 30, "ndr", event.ClassHard, "failed", "||<m3@x>"),
		it("a1", 40, "ndr", event.ClassAutoreply, "", "||<m2@x>"),
	}
	want := Group(items, time.Hour)
	var permute func(k int)
	permute = func(k int) {
		if k == len(items) {
			if got := Group(items, time.Hour); !reflect.DeepEqual(got, want) {
				t.Fatalf("order %v groups to %+v, want %+v", ids(items), got, want)
			}
			return
		}
		for i := k; i < len(items); i++ {
			items[k], items[i] = items[i], items[k]
			permute(k + 1)
			items[k], items[i] = items[i], items[k]
		}
	}
	permute(0)
	var got []string
	for _, g := range want {
		got = append(got, summary(g))
	}
	wantSummary := []string{
		"bounced/hard [s1 s2 n1] news|mid:<m1@x>",
		"bounced/soft [s3 n2 a1] shop|mid:<m2@x>",
		"bounced/hard [n3] |mid:<m3@x>",
	}
	if !reflect.DeepEqual(got, wantSummary) {
		t.Errorf("mixed set groups to\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(wantSummary, "\n "))
	}
}

func ids(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}
