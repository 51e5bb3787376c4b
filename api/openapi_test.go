package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// openAPIServer is a handler with no token (loopback clients may do
// everything), so a request reaches its handler.
func openAPIServer(t *testing.T) (*server, *http.ServeMux) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, mux, err := newServer(Config{Store: st, Logger: slog.New(slog.DiscardHandler), Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return s, mux
}

// openAPIOperation is what the test reads of an operation.
type openAPIOperation struct {
	OperationID string            `json:"operationId"`
	Parameters  []json.RawMessage `json:"parameters"`
	Responses   map[string]any    `json:"responses"`
}

type openAPIParameter struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

type openAPIDocument struct {
	OpenAPI    string                                 `json:"openapi"`
	Paths      map[string]map[string]openAPIOperation `json:"paths"`
	Components struct {
		Parameters map[string]openAPIParameter `json:"parameters"`
	} `json:"components"`
}

var openAPIMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// routePath turns a ServeMux pattern into its method ("" for any) and an
// OpenAPI path template.
func routePath(pattern string) (method, path string) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	path = strings.ReplaceAll(path, "{$}", "")
	path = regexp.MustCompile(`\{(\w+)\.\.\.\}`).ReplaceAllString(path, "{$1}")
	return strings.ToLower(method), path
}

// TestOpenAPIServed: /openapi.json serves api/openapi.json byte for byte,
// publicly, and it is an OpenAPI 3 document.
func TestOpenAPIServed(t *testing.T) {
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h, err := New(Config{Store: st, Logger: slog.New(slog.DiscardHandler), Gatherer: prometheus.NewRegistry(), ReadTokens: []string{"read-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/openapi.json") // no token
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("GET /openapi.json = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, file) {
		t.Errorf("GET /openapi.json serves %d bytes that differ from api/openapi.json (%d bytes)", len(body), len(file))
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("api/openapi.json is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
}

// TestOpenAPIMatchesRoutes checks the document against the handler both
// ways: every registered route is documented, and every documented path
// and method reaches a route of that pattern.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc openAPIDocument
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	s, mux := openAPIServer(t)
	if len(s.routes) == 0 {
		t.Fatal("the server lists no routes")
	}

	documented := map[string]string{} // "method path" -> pattern it must reach
	for _, pattern := range s.routes {
		method, path := routePath(pattern)
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("route %q: path %s is not in api/openapi.json", pattern, path)
			continue
		}
		if method == "" {
			if len(ops) == 0 {
				t.Errorf("route %q: path %s has no operation in api/openapi.json", pattern, path)
			}
			for m := range ops {
				documented[m+" "+path] = pattern
			}
			continue
		}
		if _, ok := ops[method]; !ok {
			t.Errorf("route %q: %s %s is not in api/openapi.json", pattern, strings.ToUpper(method), path)
		}
		documented[method+" "+path] = pattern
	}

	srv := httptest.NewServer(mux)
	defer srv.Close()
	ids := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if !slices.Contains(openAPIMethods, method) {
				continue // "parameters", "summary" ...
			}
			what := strings.ToUpper(method) + " " + path
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s: operationId %q missing or repeated", what, op.OperationID)
			}
			ids[op.OperationID] = true
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", what)
			}
			checkPathParameters(t, what, path, op, doc)

			want, ok := documented[method+" "+path]
			if !ok {
				t.Errorf("%s is documented but no route registers it", what)
				continue
			}
			target := strings.ReplaceAll(path, "{address}", "a@example.com")
			r := httptest.NewRequest(strings.ToUpper(method), target, nil)
			if _, got := mux.Handler(r); got != want {
				t.Errorf("%s: the mux routes %s to %q, want %q", what, target, got, want)
			}
			// And over HTTP: the mux neither refuses the path nor the method.
			req, _ := http.NewRequest(strings.ToUpper(method), srv.URL+target, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Errorf("%s: the mux answers %d %s", what, resp.StatusCode, body)
			}
		}
	}
}

// checkPathParameters: each {name} of the path template is a required path
// parameter of the operation, declared or referenced, and nothing else is.
func checkPathParameters(t *testing.T, what, path string, op openAPIOperation, doc openAPIDocument) {
	t.Helper()
	var inPath []string
	for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
		inPath = append(inPath, m[1])
	}
	var declared []string
	for _, raw := range op.Parameters {
		var p openAPIParameter
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatalf("%s: parameter %s: %v", what, raw, err)
		}
		if p.Ref != "" {
			ref, ok := doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
			if !ok {
				t.Errorf("%s: parameter %s does not resolve", what, p.Ref)
				continue
			}
			p = ref
		}
		if p.In == "path" {
			if !p.Required {
				t.Errorf("%s: path parameter %s is not required", what, p.Name)
			}
			declared = append(declared, p.Name)
		}
	}
	slices.Sort(inPath)
	slices.Sort(declared)
	if !slices.Equal(inPath, declared) {
		t.Errorf("%s: path parameters %v, declared %v", what, inPath, declared)
	}
}

// TestOpenAPIRefs: every $ref of the document points at something in it.
func TestOpenAPIRefs(t *testing.T) {
	var doc any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if !resolves(doc, ref) {
					t.Errorf("$ref %q does not resolve", ref)
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
}

func resolves(doc any, ref string) bool {
	if !strings.HasPrefix(ref, "#/") {
		return false
	}
	cur := doc
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")]; !ok {
			return false
		}
	}
	return true
}
