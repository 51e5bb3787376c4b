package reliability

import "testing"

// TestHTTPAbuse runs http-abuse in its CI size (10 concurrent exports, 5
// slow readers, 3 concurrent 16 MiB imports, 50 checkers). It fails on a
// refused request answered other than the expected 4xx (or 503 with
// Retry-After), a change of the imported suppressions, an RSS peak over
// httpRSSBound (1 GiB), a failed check after the abuse, the process dying,
// or a lost or duplicated report of the SMTP load.
func TestHTTPAbuse(t *testing.T) { runScenario(t, "http-abuse") }
