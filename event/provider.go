package event

// Providers is the fixed list of mailbox providers bouncer names. Anything
// else is ProviderOther, so metric label values stay bounded.
var Providers = []string{
	"gmail", "outlook", "yahoo", "aol", "icloud", "amazonses", "amazonworkmail",
	"sendgrid", "mimecast", "messagelabs", "proofpoint", "trendmicro", "barracuda",
	"gmx", "mailru", "yandex", "zoho", "qq", "docomo", "kddi", "softbank",
	"orange", "comcast", "cox", "godaddy", "facebook", "verizon",
}

// ProviderOther names every provider not in Providers.
const ProviderOther = "other"

var providerSet = func() map[string]bool {
	m := make(map[string]bool, len(Providers))
	for _, p := range Providers {
		m[p] = true
	}
	return m
}()

// ProviderLabel maps a provider name to a bounded label value.
func ProviderLabel(p string) string {
	if providerSet[p] {
		return p
	}
	return ProviderOther
}
