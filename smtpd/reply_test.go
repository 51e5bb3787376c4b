package smtpd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/bouncer-mail/bouncer/verp"
)

func TestReplyFor(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
		enh  smtp.EnhancedCode
	}{
		{"nil", nil, 0, smtp.EnhancedCode{}},
		{"size limit passes through", smtp.ErrDataTooLarge, 552, smtp.EnhancedCode{5, 3, 4}},
		{"own reply passes through", errNotOurDomain, 550, smtp.EnhancedCode{5, 7, 1}},
		{"not VERP", fmt.Errorf("verify: %w", verp.ErrNotVERP), 550, smtp.EnhancedCode{5, 7, 1}},
		{"forged", verp.ErrForged, 550, smtp.EnhancedCode{5, 7, 1}},
		{"expired", fmt.Errorf("x: %w", verp.ErrExpired), 550, smtp.EnhancedCode{5, 7, 1}},
		{"line too long", smtp.ErrTooLongLine, 554, smtp.EnhancedCode{5, 6, 0}},
		{"NATS down", errors.New("nats: no responders available for request"), 451, smtp.EnhancedCode{4, 3, 0}},
		{"timeout", context.DeadlineExceeded, 451, smtp.EnhancedCode{4, 3, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := replyFor(tt.err, "ref123")
			if tt.code == 0 {
				if got != nil {
					t.Fatalf("replyFor(nil) = %v, want nil", got)
				}
				return
			}
			if got == nil || got.Code != tt.code || got.EnhancedCode != tt.enh {
				t.Fatalf("replyFor(%v) = %v, want %d %v", tt.err, got, tt.code, tt.enh)
			}
			if got.Code == 451 {
				if !strings.Contains(got.Message, "ref123") {
					t.Errorf("451 text %q does not carry the reference id", got.Message)
				}
				if strings.Contains(got.Message, "nats") || strings.Contains(got.Message, "deadline") {
					t.Errorf("451 text %q leaks the internal error", got.Message)
				}
			}
		})
	}
}
