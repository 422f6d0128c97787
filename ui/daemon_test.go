package ui_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/ui"
)

var (
	buildOnce sync.Once
	buildDir  string
	apppassd  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// daemonBinary builds apppassd once per test binary.
func daemonBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "apppass-ui-test"); buildErr != nil {
			return
		}
		apppassd, buildErr = gatewaytest.Build(buildDir, "github.com/apppass/apppass/cmd/apppassd", "apppassd", gatewaytest.RaceEnabled)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return apppassd
}

var settingsLine = regexp.MustCompile(`Open the settings page.*\n\s+(http://\S+/#token=(\S+))`)

// settingsURL waits for the line apppassd prints for the page (it follows
// the token line StartDaemon waited for) and returns the URL and its token.
func settingsURL(t *testing.T, d *gatewaytest.Daemon) (string, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := settingsLine.FindStringSubmatch(d.Stdout.String()); m != nil {
			return m[1], m[2]
		}
		if time.Now().After(deadline) {
			t.Fatalf("apppassd printed no settings page line:\n%s", d.Stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// On the embedded default (APPPASS_UI=auto) apppassd serves the page, says
// where it is, and the rest of the API is unchanged.
func TestDaemonServesPage(t *testing.T) {
	d := gatewaytest.StartDaemon(t, daemonBinary(t))
	url, token := settingsURL(t, d)
	if url != d.URL+"/#token="+token || token != d.Token {
		t.Fatalf("settings line %q does not carry the printed token %q for %s", url, d.Token, d.URL)
	}
	resp, page := httpGet(t, d.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" ||
		resp.Header.Get("Content-Security-Policy") != ui.ContentSecurityPolicy || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /: %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.Contains(page, `<h1 data-i18n="title">`) {
		t.Fatalf("GET / is not the settings page:\n%s", page)
	}
	for path, ct := range map[string]string{"/ui/app.js": "text/javascript; charset=utf-8", "/ui/messages.js": "text/javascript; charset=utf-8", "/ui/app.css": "text/css; charset=utf-8"} {
		if resp, _ := httpGet(t, d.URL+path); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"/ui/nope.js", "/nope", "/index.html"} {
		if resp, _ := httpGet(t, d.URL+path); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	// POST / is not the page's (the mux answers 405 for a GET-only route).
	resp, err := http.Post(d.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
	if resp, _ := httpGet(t, d.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("GET /healthz: %d", resp.StatusCode)
	}
}

// APPPASS_UI=off: no page, no assets, no line pointing at them.
func TestDaemonUIOff(t *testing.T) {
	d := gatewaytest.StartDaemon(t, daemonBinary(t), "APPPASS_UI=off")
	for _, path := range []string{"/", "/ui/app.js", "/ui/app.css"} {
		if resp, _ := httpGet(t, d.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s with APPPASS_UI=off: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := httpGet(t, d.URL+"/readyz"); resp.StatusCode != 200 {
		t.Errorf("GET /readyz: %d", resp.StatusCode)
	}
	// The welcome text is printed in one go after the token line, which
	// StartDaemon waited for; the gateway key line ends it.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.Stdout.String(), "export GATEWAY_KEY=") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if out := d.Stdout.String(); !strings.Contains(out, "export GATEWAY_KEY=") || strings.Contains(out, "settings page") {
		t.Errorf("welcome text with APPPASS_UI=off:\n%s", out)
	}
}
