package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/apppass/apppass/ui"
)

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkLockedDown checks the headers every answer of the handler carries.
func checkLockedDown(t *testing.T, path string, resp *http.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": ui.ContentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", path, k, got, v)
		}
	}
}

func TestHandlerServesPageAndAssets(t *testing.T) {
	h := ui.Handler(nil)
	for _, tc := range []struct{ path, contentType, cache, contains string }{
		{"/", "text/html; charset=utf-8", "no-store", `<script src="/ui/app.js" defer></script>`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "no-cache", "appPasswords.getApps"},
		{"/ui/app.css", "text/css; charset=utf-8", "no-cache", ":focus-visible"},
	} {
		resp := get(t, h, "GET", tc.path)
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", tc.path, resp.StatusCode)
		}
		checkLockedDown(t, tc.path, resp)
		if got := resp.Header.Get("Content-Type"); got != tc.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.contentType)
		}
		if got := resp.Header.Get("Cache-Control"); got != tc.cache {
			t.Errorf("GET %s: Cache-Control %q, want %q", tc.path, got, tc.cache)
		}
		if !strings.Contains(b, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}

		// HEAD answers the same headers without a body.
		head := get(t, h, "HEAD", tc.path)
		if head.StatusCode != 200 || head.Header.Get("Content-Type") != tc.contentType || body(t, head) != "" {
			t.Errorf("HEAD %s: %d %q", tc.path, head.StatusCode, head.Header.Get("Content-Type"))
		}

		// Revalidation with the ETag is answered 304.
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("GET %s: no ETag", tc.path)
		}
		if again := get(t, h, "GET", tc.path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: %d, want 304", tc.path, again.StatusCode)
		}
	}
}

func TestHandlerRefusesOtherPathsAndMethods(t *testing.T) {
	h := ui.Handler(nil)
	for _, path := range []string{"/ui/", "/ui/nope.js", "/ui/index.html", "/index.html", "/static/app.js", "/ui/app.js/", "/ui/APP.JS", "/ui/../go.mod"} {
		resp := get(t, h, "GET", path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
		checkLockedDown(t, path, resp)
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		resp := get(t, h, method, "/")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d Allow %q, want 405 with Allow: GET, HEAD", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

// The CSP forbids inline script and style and anything from elsewhere;
// the page must not need them, or the browser would block it.
func TestPageNeedsNothingTheCSPForbids(t *testing.T) {
	if !strings.Contains(ui.ContentSecurityPolicy, "default-src 'self'") ||
		strings.Contains(ui.ContentSecurityPolicy, "unsafe-inline") || strings.Contains(ui.ContentSecurityPolicy, "unsafe-eval") {
		t.Fatalf("CSP is not strict: %s", ui.ContentSecurityPolicy)
	}
	h := ui.Handler(nil)
	page := body(t, get(t, h, "GET", "/"))
	forbidden := map[string]*regexp.Regexp{
		"inline script":        regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),
		"script without src":   regexp.MustCompile(`<script(?:\s(?:[^>s]|s[^r]|sr[^c])*)?>`),
		"inline style element": regexp.MustCompile(`<style`),
		"style attribute":      regexp.MustCompile(`\sstyle=`),
		"event handler":        regexp.MustCompile(`\son[a-z]+=`),
		"javascript: URL":      regexp.MustCompile(`javascript:`),
		"external resource":    regexp.MustCompile(`(?:src|href)="(?:https?:)?//`),
	}
	js := body(t, get(t, h, "GET", "/ui/app.js"))
	css := body(t, get(t, h, "GET", "/ui/app.css"))
	for what, re := range forbidden {
		if m := re.FindString(page); m != "" {
			t.Errorf("index.html has %s: %q", what, m)
		}
	}
	for name, text := range map[string]string{"app.js": js, "app.css": css} {
		for _, bad := range []string{"http://", "https://", "eval(", "new Function", "innerHTML", "@import", "url("} {
			if strings.Contains(text, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}

// TestPageHasNoTextOfItsOwn: every text of index.html comes from the
// message catalogue (data-i18n), so that every language gets all of it.
func TestPageHasNoTextOfItsOwn(t *testing.T) {
	raw, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	page := regexp.MustCompile(`(?s)<!--.*?-->`).ReplaceAllString(string(raw), "")
	for _, m := range regexp.MustCompile(`>([^<]*)<`).FindAllStringSubmatch(page, -1) {
		if text := strings.TrimSpace(m[1]); text != "" {
			t.Errorf("index.html has text outside the catalogue: %q", text)
		}
	}
	for _, attr := range regexp.MustCompile(`\s(placeholder|aria-label|title|alt)="`).FindAllString(page, -1) {
		t.Errorf("index.html has a text attribute outside the catalogue: %s", attr)
	}
}

// With an issuer, the page learns how to sign in from config.json, and
// its CSP lets it call the issuer's token endpoint, nothing else of the
// issuer's; until the endpoints are known it says there is no sign-in.
func TestSignInConfig(t *testing.T) {
	known := false
	how := ui.SignIn{Issuer: "https://login.example.com/realms/ox", ClientID: "apppass-page", Scope: "openid email",
		AuthorizationEndpoint: "https://login.example.com/realms/ox/auth", TokenEndpoint: "https://tokens.example.com:8443/token"}
	h := ui.Handler(func() (ui.SignIn, bool) { return how, known })

	resp := get(t, h, "GET", ui.ConfigPath)
	if got := strings.TrimSpace(body(t, resp)); got != `{"signIn":null}` || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("before discovery: %s (Cache-Control %q)", got, resp.Header.Get("Cache-Control"))
	}
	checkLockedDown(t, ui.ConfigPath, resp)

	known = true
	resp = get(t, h, "GET", ui.ConfigPath)
	var config struct{ SignIn *ui.SignIn }
	if err := json.Unmarshal([]byte(body(t, resp)), &config); err != nil || config.SignIn == nil || *config.SignIn != how {
		t.Fatalf("config = %+v, %v", config.SignIn, err)
	}
	want := strings.Replace(ui.ContentSecurityPolicy, "connect-src 'self'", "connect-src 'self' https://tokens.example.com:8443", 1)
	for _, path := range []string{"/", ui.ConfigPath, "/nope"} {
		if got := get(t, h, "GET", path).Header.Get("Content-Security-Policy"); got != want {
			t.Errorf("%s: CSP = %q, want %q", path, got, want)
		}
	}
}
