package outcome

import (
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func ob(min int, source string, class event.Class, reason event.Reason, action string) Observation {
	return Observation{Time: t0.Add(time.Duration(min) * time.Minute), Source: source, Class: class, Reason: reason, Scope: reason.DefaultScope(), Action: action, Provider: "gmail"}
}

func TestFold(t *testing.T) {
	var (
		sync250   = ob(0, "sync", event.ClassDelivered, event.ReasonDelivered, "delivered")
		syncGrey  = ob(0, "sync", event.ClassGreylist, event.ReasonGreylisting, "delayed")
		sync250b  = ob(15, "sync", event.ClassDelivered, event.ReasonDelivered, "delivered")
		syncHard  = ob(0, "sync", event.ClassHard, event.ReasonUserUnknown, "failed")
		ndrHard   = ob(5, "ndr", event.ClassHard, event.ReasonUserUnknown, "failed")
		ndrSoft   = ob(30, "ndr", event.ClassSoft, event.ReasonMailboxFull, "failed")
		ndrDelay  = ob(60, "ndr", event.ClassSoft, event.ReasonExpired, "delayed")
		syncDefer = ob(1, "sync", event.ClassSoft, event.ReasonMailboxFull, "delayed")
		complaint = ob(90, "ndr", event.ClassComplaint, event.ReasonFeedback, "")
		autorep   = ob(2, "ndr", event.ClassAutoreply, event.ReasonVacation, "")
	)
	tests := []struct {
		name       string
		obs        []Observation
		state      State
		class      event.Class
		reason     event.Reason
		final      bool
		syncAndNDR bool
	}{
		{"nothing", nil, "", "", "", false, false},
		{"delivered", []Observation{sync250}, StateDelivered, event.ClassDelivered, event.ReasonDelivered, true, false},
		{"accepted then bounced is a bounce", []Observation{sync250, ndrSoft}, StateBounced, event.ClassSoft, event.ReasonMailboxFull, true, false},
		{"order does not matter", []Observation{ndrSoft, sync250}, StateBounced, event.ClassSoft, event.ReasonMailboxFull, true, false},
		{"4xx then 250 is a greylist resolved", []Observation{syncGrey, sync250b}, StateGreylistResolved, event.ClassGreylist, event.ReasonGreylisting, true, false},
		{"greylisting still pending", []Observation{syncGrey}, StatePending, event.ClassGreylist, event.ReasonGreylisting, false, false},
		{"soft deferral pending", []Observation{syncDefer}, StatePending, event.ClassSoft, event.ReasonMailboxFull, false, false},
		{"delay notice then delivered", []Observation{ndrDelay, sync250b}, StateDelivered, event.ClassDelivered, event.ReasonDelivered, true, false},
		{"sync bounce and its NDR count once", []Observation{syncHard, ndrHard}, StateBounced, event.ClassHard, event.ReasonUserUnknown, true, true},
		{"hard wins over soft", []Observation{ndrSoft, ndrHard}, StateBounced, event.ClassHard, event.ReasonUserUnknown, true, false},
		{"complaint after delivery", []Observation{sync250, complaint}, StateComplained, event.ClassComplaint, event.ReasonFeedback, true, false},
		{"auto-reply after delivery is a delivery", []Observation{sync250, autorep}, StateDelivered, event.ClassDelivered, event.ReasonDelivered, true, false},
		{"only an auto-reply", []Observation{autorep}, StateAutoreplied, event.ClassAutoreply, event.ReasonVacation, true, false},
		{"unreadable", []Observation{ob(0, "ndr", event.ClassUnknown, event.ReasonUndefined, "")}, StateUnknown, event.ClassUnknown, event.ReasonUndefined, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Fold(tt.obs)
			if got.State != tt.state || got.Class != tt.class || got.Reason != tt.reason || got.Final != tt.final || got.SyncAndNDR != tt.syncAndNDR {
				t.Errorf("Fold = %s %s/%s final=%v both=%v; want %s %s/%s final=%v both=%v",
					got.State, got.Class, got.Reason, got.Final, got.SyncAndNDR, tt.state, tt.class, tt.reason, tt.final, tt.syncAndNDR)
			}
			if len(tt.obs) > 0 && (got.Observations != len(tt.obs) || got.First.After(got.Last)) {
				t.Errorf("Observations %d First %v Last %v", got.Observations, got.First, got.Last)
			}
		})
	}
}

// TestFoldOrderIndependent checks that every permutation of a mixed set
// folds to the same outcome.
func TestFoldOrderIndependent(t *testing.T) {
	obs := []Observation{
		ob(0, "sync", event.ClassGreylist, event.ReasonGreylisting, "delayed"),
		ob(10, "sync", event.ClassDelivered, event.ReasonDelivered, "delivered"),
		ob(20, "ndr", event.ClassSoft, event.ReasonMailboxFull, "failed"),
		ob(25, "sync", event.ClassHard, event.ReasonUserUnknown, "failed"),
	}
	want := Fold(obs)
	var permute func(k int)
	permute = func(k int) {
		if k == len(obs) {
			if got := Fold(obs); got != want {
				t.Fatalf("order %v folds to %+v, want %+v", obs, got, want)
			}
			return
		}
		for i := k; i < len(obs); i++ {
			obs[k], obs[i] = obs[i], obs[k]
			permute(k + 1)
			obs[k], obs[i] = obs[i], obs[k]
		}
	}
	permute(0)
	if want.Class != event.ClassHard {
		t.Errorf("mixed set: %s, want hard", want.Class)
	}
}
