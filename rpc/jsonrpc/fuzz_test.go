package jsonrpc_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/rpc/jsonrpc"
)

func FuzzRPCEnvelope(f *testing.F) {
	fx := NewFuzzFixture(f)
	f.Fuzz(func(t *testing.T, caller byte, body []byte) {
		fx.EnsurePassword(t)
		body = []byte(fx.Fill(string(body)))
		before := fx.Snapshot(t)
		req := httptest.NewRequest(http.MethodPost, "/rpc", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.Bearers[int(caller)%len(fx.Bearers)])
		req.Header.Set("Content-Type", "application/json")
		w := fx.Serve(req)
		trimmed := bytes.TrimSpace(body)
		switch {
		case w.Code == http.StatusNoContent:
			// Notifications only: answered with nothing, and only then.
			if !json.Valid(trimmed) || (trimmed[0] != '{' && trimmed[0] != '[') {
				t.Fatalf("204 for a body that holds no notification: %q", body)
			}
			return
		case w.Code == http.StatusRequestEntityTooLarge && len(body) > jsonrpc.MaxBodyBytes:
			return
		case w.Code != http.StatusOK:
			t.Fatalf("HTTP %d for %q", w.Code, body)
		}
		out := w.Body.Bytes()
		var replies []json.RawMessage
		if bytes.HasPrefix(bytes.TrimSpace(out), []byte("[")) {
			if json.Unmarshal(out, &replies) != nil {
				t.Fatalf("batch answer is not an array: %s", out)
			}
			var batch []json.RawMessage
			if !json.Valid(trimmed) || trimmed[0] != '[' || json.Unmarshal(trimmed, &batch) != nil || len(replies) > len(batch) {
				t.Fatalf("%d replies to %q", len(replies), body)
			}
		} else {
			replies = []json.RawMessage{out}
		}
		failed := false
		for _, raw := range replies {
			failed = CheckReply(t, raw).Error != nil || failed
		}
		if failed && len(replies) == 1 && !bytes.HasPrefix(trimmed, []byte("[")) && fx.Snapshot(t) != before {
			t.Fatalf("a refused call changed alice's passwords: %q", body)
		}
	})
}

func FuzzRPCParams(f *testing.F) {
	fx := NewFuzzFixture(f)
	names := jsonrpc.MethodNames()
	f.Fuzz(func(t *testing.T, method, caller byte, params []byte) {
		fx.EnsurePassword(t)
		params = []byte(fx.Fill(string(params)))
		if !json.Valid(params) {
			return // the envelope's business (FuzzRPCEnvelope)
		}
		name := names[int(method)%len(names)]
		body := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":7,"method":%q,"params":%s}`, name, params)
		before := fx.Snapshot(t)
		req := httptest.NewRequest(http.MethodPost, "/rpc", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.Bearers[int(caller)%len(fx.Bearers)])
		w := fx.Serve(req)
		if w.Code != http.StatusOK {
			t.Fatalf("HTTP %d for %s", w.Code, body)
		}
		r := CheckReply(t, w.Body.Bytes())
		if string(r.ID) != "7" {
			t.Fatalf("id %s, want 7: %s", r.ID, w.Body.Bytes())
		}
		if r.Error != nil {
			if r.Error.Code == errcode.ParseError || r.Error.Code == errcode.InvalidRequest || r.Error.Code == errcode.MethodNotFound {
				t.Fatalf("a well-formed request of a known method answered %d: %s", r.Error.Code, body)
			}
			if fx.Snapshot(t) != before {
				t.Fatalf("a refused call changed alice's passwords: %s", body)
			}
			return
		}
		if name == "appPasswords.add" {
			var added struct{ Password string }
			if json.Unmarshal(r.Result, &added) != nil || !PasswordRE.MatchString(added.Password) {
				t.Fatalf("add answered %s", r.Result)
			}
		}
	})
}
