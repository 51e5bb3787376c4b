package classify

import (
	"strings"
	"testing"
)

func TestSESJSON(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // notification type, "" for none
	}{
		{"bare bounce", `{"notificationType":"Bounce","bounce":{"bouncedRecipients":[]}}`, "Bounce"},
		{"sns envelope", `{"Type":"Notification","Message":"{\"notificationType\":\"Complaint\",\"complaint\":{}}"}`, "Complaint"},
		{"event publishing", `{"eventType":"Delivery","delivery":{}}`, "Delivery"},
		{"sendmail line break", "{\"Type\":\"Notification\",\"Message\":\"{\\\"notificationType\\\":\\\"Bou!\n nce\\\"}\"}", "Bounce"},
		{"text around", "Hello\n{\"notificationType\":\"Delivery\"}\n--\nunsubscribe {here}", "Delivery"},
		{"other type", `{"notificationType":"Open"}`, ""},
		{"not json", `notificationType: Bounce`, ""},
		{"broken json", `{"notificationType":"Bounce",`, ""},
		{"too large", `{"notificationType":"Bounce","x":"` + strings.Repeat("a", maxNotificationBytes) + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if n := sesJSON(tt.text); n != nil {
				got = n.NotificationType
			}
			if got != tt.want {
				t.Errorf("sesJSON(%.60q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}
