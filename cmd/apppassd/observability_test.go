package main_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestObservabilityWiring: apppassd serves /metrics by default with every
// source wired (store, NATS, cache), answers CORS for APPPASS_CORS_ORIGINS,
// and APPPASS_METRICS=false turns /metrics off.
func TestObservabilityWiring(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t),
		"APPPASS_CORS_ORIGINS=https://groupware.example.com")
	token, _ := d.credentials(t)
	d.call(t, token, "appPasswords.list", nil, nil)

	resp, body := d.exchange(t, http.MethodGet, "/metrics", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	text := string(body)
	for _, want := range []string{
		`(?m)^apppass_rpc_calls_total\{code="ok",method="appPasswords.list"\} 1$`,
		`(?m)^apppass_store_up 1$`,
		`(?m)^apppass_nats_connected 1$`,
		`(?m)^apppass_outbox_pending_events \d+$`,
		`(?m)^apppass_auth_cache_hits_total 0$`,
		`(?m)^apppass_auth_cache_misses_total 0$`,
		`(?m)^go_goroutines \d+$`,
		`(?m)^process_resident_memory_bytes `,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("/metrics has no line matching %s", want)
		}
	}
	// No webhooks configured: no webhook series.
	if strings.Contains(text, "apppass_webhook_deliveries_total") {
		t.Error("webhook deliveries exported without webhooks")
	}

	resp, _ = d.exchange(t, http.MethodOptions, "/rpc", map[string]string{"Origin": "https://groupware.example.com",
		"Access-Control-Request-Method": "POST"}, "")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://groupware.example.com" {
		t.Fatalf("preflight: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = d.exchange(t, http.MethodOptions, "/rpc", map[string]string{"Origin": "https://other.example.com",
		"Access-Control-Request-Method": "POST"}, "")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("preflight from another origin: HTTP %d", resp.StatusCode)
	}

	off := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t), "APPPASS_METRICS=false")
	r, err := http.Get(off.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Fatalf("APPPASS_METRICS=false: GET /metrics HTTP %d, want 404", r.StatusCode)
	}
}
