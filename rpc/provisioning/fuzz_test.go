package provisioning_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/stdwebhook"
)

func FuzzProvisioning(f *testing.F) {
	fx := NewFuzzFixture(f)
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		if strings.ContainsAny(id, "\x00\r\n") || !utf8.ValidString(id) {
			return // not a header value a client can send
		}
		req := httptest.NewRequest(http.MethodPost, "/webhooks/provisioning", bytes.NewReader(body))
		stdwebhook.SetHeaders(req.Header.Set, id, time.Now(), body, fx.Secret)
		w := fx.Serve(req)
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("HTTP %d, not a JSON object: %s", w.Code, w.Body.Bytes())
		}
		switch w.Code {
		case http.StatusOK:
			if out["status"] != "done" && out["status"] != "ignored" {
				t.Fatalf("200 with %s", w.Body.Bytes())
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusConflict:
			if msg, _ := out["error"].(string); msg == "" {
				t.Fatalf("HTTP %d without an error message: %s", w.Code, w.Body.Bytes())
			}
		default:
			t.Fatalf("HTTP %d for id %q body %q: %s", w.Code, id, body, w.Body.Bytes())
		}
	})
}
