package event

import "testing"

func TestReasonScopes(t *testing.T) {
	want := map[Reason]Scope{
		ReasonUserUnknown: ScopeRecipient, ReasonHostUnknown: ScopeRecipient, ReasonHasMoved: ScopeRecipient,
		ReasonNotAccept: ScopeRecipient, ReasonMailboxFull: ScopeRecipient, ReasonSuspend: ScopeRecipient,
		ReasonSuppressed: ScopeRecipient,
		ReasonExpired:    ScopeTransport, ReasonNetworkError: ScopeTransport, ReasonGreylisting: ScopeTransport,
		ReasonFailedSTARTTLS: ScopeTransport, ReasonSystemError: ScopeTransport, ReasonUndefined: ScopeTransport,
		ReasonBlocked: ScopeSender, ReasonBadReputation: ScopeSender, ReasonSpamDetected: ScopeSender,
		ReasonAuthFailure: ScopeSender, ReasonRateLimited: ScopeSender, ReasonNoRelaying: ScopeSender,
		ReasonPolicyViolation: ScopeSender, ReasonRequirePTR: ScopeSender, ReasonFiltered: ScopeSender,
		ReasonDelivered: ScopeNone, ReasonFeedback: ScopeNone, ReasonVacation: ScopeNone,
	}
	for r, s := range want {
		if got := r.DefaultScope(); got != s {
			t.Errorf("%s.DefaultScope() = %q, want %q", r, got, s)
		}
	}
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if !r.Valid() || seen[r] {
			t.Errorf("Reasons holds %q invalid or twice", r)
		}
		seen[r] = true
		if s := r.DefaultScope(); s != ScopeNone && s != ScopeRecipient && s != ScopeSender && s != ScopeTransport {
			t.Errorf("%s has scope %q", r, s)
		}
	}
	if Reason("nonsense").Valid() {
		t.Error(`"nonsense" is a valid reason`)
	}
}

func TestClassIsFailure(t *testing.T) {
	for _, c := range Classes {
		want := c == ClassHard || c == ClassSoft || c == ClassGreylist
		if c.IsFailure() != want {
			t.Errorf("%s.IsFailure() = %v", c, !want)
		}
	}
}

func TestProviderLabel(t *testing.T) {
	for _, p := range Providers {
		if ProviderLabel(p) != p {
			t.Errorf("ProviderLabel(%q) = %q", p, ProviderLabel(p))
		}
	}
	for _, p := range []string{"", "example", "GMAIL"} {
		if ProviderLabel(p) != ProviderOther {
			t.Errorf("ProviderLabel(%q) = %q, want other", p, ProviderLabel(p))
		}
	}
}
