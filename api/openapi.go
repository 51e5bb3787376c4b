package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3 document of every route New registers,
// kept in the repository as api/openapi.json; openapi_test.go checks the
// two against each other.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves the document as it is in the repository, byte for byte.
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	w.Write(openAPIDoc)
}
