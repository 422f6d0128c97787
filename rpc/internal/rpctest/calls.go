package rpctest

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/apppass/apppass/internal/gatewaytest"
)

// call2 makes a call that may be refused at HTTP level (401) and returns
// the answer without insisting on HTTP 200.
func (f *Fixture) Call2(t testing.TB, bearer, method, params string) (int, Response) {
	t.Helper()
	status, body := f.Post(t, "Bearer "+bearer, Request(method, params))
	return status, ParseResponse(t, body)
}

// reserve serves f.Server's handler anew, after a test changed the Server
// (metrics, CORS origins, logger), and points f.URL at it.
func (f *Fixture) Reserve(t *testing.T) {
	t.Helper()
	hs := httptest.NewServer(f.Server.Handler())
	t.Cleanup(hs.Close)
	f.URL = hs.URL
}

// logTo makes f log JSON at debug into a buffer, served anew.
func (f *Fixture) LogTo(t *testing.T) *gatewaytest.Buffer {
	t.Helper()
	buf := &gatewaytest.Buffer{}
	f.Server.Logger = slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.Reserve(t)
	return buf
}

func (f *Fixture) PostWithHeaders(t *testing.T, path string, headers map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.URL+path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

const OxPath = "/appsuite/api/appPasswords"

// ox sends one request to the OX API: query is the URL's query, form (if
// not "") a urlencoded POST body, authorization the header ("" for none).
// It checks what every OX answer has (HTTP 200, JSON, not cacheable) and
// returns the members of the body.
func (f *Fixture) OX(t testing.TB, authorization, method, query, form string) map[string]json.RawMessage {
	t.Helper()
	var body io.Reader
	if form != "" {
		body = strings.NewReader(form)
	}
	req, err := http.NewRequest(method, f.URL+OxPath+"?"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	contentType := ""
	if form != "" {
		contentType = "application/x-www-form-urlencoded"
	}
	resp, raw, err := roundTrip(req, contentType, authorization)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d, OX answers 200: %s", method, query, resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", cc)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatalf("body is not a JSON object: %s", raw)
	}
	return members
}
