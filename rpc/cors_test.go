package rpc_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

const (
	allowedOrigin = "https://groupware.example.com"
	otherOrigin   = "https://evil.example.net"
)

func corsFixture(t *testing.T) *Fixture {
	t.Helper()
	f := NewFixture(t, FixtureOptions{})
	f.Server.CORSOrigins = []string{allowedOrigin, "http://localhost:3000"}
	f.Reserve(t)
	return f
}

func doRequest(t *testing.T, method, url string, headers map[string]string, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// corsHeaders lists the Access-Control-* headers of a response.
func corsHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func preflight(t *testing.T, url, origin, method string) *http.Response {
	t.Helper()
	return doRequest(t, http.MethodOptions, url, map[string]string{"Origin": origin,
		"Access-Control-Request-Method": method, "Access-Control-Request-Headers": "authorization,content-type,x-request-id"}, "")
}

func TestCORSPreflight(t *testing.T) {
	f := corsFixture(t)
	for path, methods := range map[string]string{"/rpc": "POST", "/appsuite/api/appPasswords": "GET, POST"} {
		resp := preflight(t, f.URL+path, allowedOrigin, "POST")
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != allowedOrigin ||
			h.Get("Access-Control-Allow-Methods") != methods || h.Get("Access-Control-Max-Age") != "600" ||
			h.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, X-Request-Id" ||
			!slices.Contains(h.Values("Vary"), "Origin") || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("preflight %s: HTTP %d %v", path, resp.StatusCode, h)
		}
		if !generatedID.MatchString(h.Get(rpc.RequestIDHeader)) {
			t.Fatalf("preflight %s has no request id", path)
		}
	}
	// The second configured origin works as well.
	if resp := preflight(t, f.URL+"/rpc", "http://localhost:3000", "POST"); resp.StatusCode != http.StatusNoContent ||
		resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("second origin: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	// Other origins, near misses included: 403, no CORS headers.
	for _, origin := range []string{otherOrigin, "http://groupware.example.com", "https://groupware.example.com:8443",
		"https://groupware.example.com.evil.net", "null"} {
		resp := preflight(t, f.URL+"/rpc", origin, "POST")
		if resp.StatusCode != http.StatusForbidden || len(corsHeaders(resp.Header)) != 0 {
			t.Fatalf("preflight from %s: HTTP %d, CORS headers %v", origin, resp.StatusCode, corsHeaders(resp.Header))
		}
	}
	// A preflight without Origin is no preflight from a browser: refused.
	resp := doRequest(t, http.MethodOptions, f.URL+"/rpc", map[string]string{"Access-Control-Request-Method": "POST"}, "")
	if resp.StatusCode != http.StatusForbidden || len(corsHeaders(resp.Header)) != 0 {
		t.Fatalf("preflight without Origin: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	// Paths outside /rpc and /appsuite/api/ get no CORS at all.
	for _, path := range []string{"/healthz", "/auth/basic", "/metrics"} {
		resp := preflight(t, f.URL+path, allowedOrigin, "GET")
		if len(corsHeaders(resp.Header)) != 0 || resp.StatusCode == http.StatusNoContent {
			t.Fatalf("preflight on %s: HTTP %d %v", path, resp.StatusCode, corsHeaders(resp.Header))
		}
	}
}

func TestCORSActualRequests(t *testing.T) {
	f := corsFixture(t)
	token := f.Token(Alice)
	call := func(origin, bearer string) *http.Response {
		h := map[string]string{"Authorization": "Bearer " + bearer, "Content-Type": "application/json"}
		if origin != "" {
			h["Origin"] = origin
		}
		return doRequest(t, http.MethodPost, f.URL+"/rpc", h, Request("appPasswords.list", ""))
	}
	// Allowed: the exact origin and the request id exposed, no credentials.
	resp := call(allowedOrigin, token)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != allowedOrigin ||
		resp.Header.Get("Access-Control-Expose-Headers") != rpc.RequestIDHeader ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "" || !slices.Contains(resp.Header.Values("Vary"), "Origin") {
		t.Fatalf("allowed origin: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	// Errors too, so the page can read why.
	if resp := call(allowedOrigin, "bad"); resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Fatalf("allowed origin, bad token: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	// Not allowed: answered (the browser withholds it), without CORS headers.
	if resp := call(otherOrigin, token); resp.StatusCode != 200 || len(corsHeaders(resp.Header)) != 0 {
		t.Fatalf("other origin: HTTP %d %v", resp.StatusCode, corsHeaders(resp.Header))
	}
	// No Origin (curl, gateways): no CORS headers.
	if resp := call("", token); resp.StatusCode != 200 || len(corsHeaders(resp.Header)) != 0 {
		t.Fatalf("no origin: HTTP %d %v", resp.StatusCode, corsHeaders(resp.Header))
	}
	// Without configured origins nothing is allowed.
	plain := NewFixture(t, FixtureOptions{})
	resp = doRequest(t, http.MethodPost, plain.URL+"/rpc", map[string]string{"Authorization": "Bearer " + plain.Token(Alice), "Origin": allowedOrigin},
		Request("appPasswords.list", ""))
	if resp.StatusCode != 200 || len(corsHeaders(resp.Header)) != 0 {
		t.Fatalf("unconfigured: HTTP %d %v", resp.StatusCode, corsHeaders(resp.Header))
	}
	if resp := preflight(t, plain.URL+"/rpc", allowedOrigin, "POST"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unconfigured preflight: HTTP %d", resp.StatusCode)
	}
}

// TestCORSWebSocket: browsers do not preflight WebSocket upgrades, so the
// origin is checked at the upgrade: the page's own host and the CORS
// origins may open one, other pages may not.
func TestCORSWebSocket(t *testing.T) {
	f := corsFixture(t)
	token := f.Token(Alice)
	dial := func(origin string) (int, error) {
		h := http.Header{"Authorization": {"Bearer " + token}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(f.WSURL(""), h)
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			return 0, err
		}
		return resp.StatusCode, err
	}
	for _, origin := range []string{"", allowedOrigin, "http://" + strings.TrimPrefix(f.URL, "http://")} {
		if status, err := dial(origin); err != nil || status != http.StatusSwitchingProtocols {
			t.Fatalf("origin %q: HTTP %d, %v", origin, status, err)
		}
	}
	if status, _ := dial(otherOrigin); status != http.StatusForbidden {
		t.Fatalf("origin %s: HTTP %d, want 403", otherOrigin, status)
	}
}
