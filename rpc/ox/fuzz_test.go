package ox_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

func FuzzOXForm(f *testing.F) {
	fx := NewFuzzFixture(f)
	f.Fuzz(func(t *testing.T, post bool, query, body string, form bool) {
		fx.EnsurePassword(t)
		query, body = fx.Fill(query), fx.Fill(body)
		if _, err := url.ParseRequestURI("/?" + query); err != nil || strings.ContainsAny(query, " #") {
			return // not a request line a client can send
		}
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		before := fx.Snapshot(t)
		req := httptest.NewRequest(method, "/appsuite/api/appPasswords?"+query, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.Bearers[0])
		if form {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		w := fx.Serve(req)
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("HTTP %d %q for %s ?%q %q", w.Code, w.Header().Get("Content-Type"), method, query, body)
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("not a JSON object: %s", w.Body.Bytes())
		}
		_, hasData := out["data"]
		_, hasError := out["error"]
		if hasData == hasError {
			t.Fatalf("want exactly one of data and error: %s", w.Body.Bytes())
		}
		if !hasError {
			return
		}
		var code string
		_ = json.Unmarshal(out["code"], &code)
		if code == "" || code == "SVL-0011" || code == "ASP-0010" {
			t.Fatalf("input caused %q: %s", code, w.Body.Bytes())
		}
		if fx.Snapshot(t) != before {
			t.Fatalf("a refused request changed alice's passwords: %s ?%q %q", method, query, body)
		}
	})
}
