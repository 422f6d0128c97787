package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/apppass/apppass/docs"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

func TestHTTPRoutes(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	get := func(t *testing.T, url string, header http.Header) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	statusOf := func(t *testing.T, body []byte) string {
		t.Helper()
		var s struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("not JSON: %s", body)
		}
		return s.Status
	}

	if code, body := get(t, f.URL+"/healthz", nil); code != http.StatusOK || statusOf(t, body) != "ok" {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, body := get(t, f.URL+"/readyz", nil); code != http.StatusOK || statusOf(t, body) != "ready" {
		t.Fatalf("readyz: %d %s", code, body)
	}
	// GET /rpc is for WebSocket upgrades only.
	if code, body := get(t, f.URL+"/rpc", http.Header{"Authorization": {"Bearer " + f.Token(Alice)}}); code != http.StatusBadRequest {
		t.Fatalf("GET /rpc without upgrade: %d %s", code, body)
	}
	// The AsyncAPI document of the events: no token, and any page may read
	// it (AsyncAPI Studio is one), like /openrpc.json.
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/asyncapi.yaml", nil)
	req.Header.Set("Origin", "https://studio.asyncapi.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || !bytes.Equal(served, docs.AsyncAPI) {
		t.Fatalf("GET /asyncapi.yaml: %d %v, %d bytes", resp.StatusCode, resp.Header, len(served))
	}
	if resp, err := http.Post(f.URL+"/asyncapi.yaml", "application/yaml", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /asyncapi.yaml: %d", resp.StatusCode)
	}
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(method, f.URL+"/rpc", strings.NewReader(Request("appPasswords.list", "")))
		req.Header.Set("Authorization", "Bearer "+f.Token(Alice))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("%s /rpc: HTTP %d", method, resp.StatusCode)
		}
	}

	t.Run("not ready", func(t *testing.T) {
		down := NewFixture(t, FixtureOptions{Ready: func(context.Context) error {
			return errors.New("NATS is unreachable")
		}})
		code, body := get(t, down.URL+"/readyz", nil)
		if code != http.StatusServiceUnavailable || statusOf(t, body) != "unavailable" {
			t.Fatalf("readyz when not ready: %d %s", code, body)
		}
		// Alive all the same.
		if code, _ := get(t, down.URL+"/healthz", nil); code != http.StatusOK {
			t.Fatalf("healthz when not ready: %d", code)
		}
	})
}
