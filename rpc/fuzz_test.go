package rpc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/stdwebhook"
)

// The fuzz targets drive the real handler (on a real store) with what a
// caller controls, and check what must hold for any input: no panic, an
// answer of the documented shape, no internal error, and a refused request
// changes no password. Seed corpora are in testdata/fuzz/<target>; inputs
// may name the fixture's live password and uuid as {password} and {uuid}
// (and {basic}: alice's Basic credentials), which the fuzzer could not
// guess. .ci/run runs each target for a few
// seconds; `go test -run '^$' -fuzz '^FuzzRPCEnvelope$' ./rpc/` runs one
// for as long as you like.

// fuzzFixture is a fixture with the gateway endpoints' settings, and a
// known password of alice's that every input may use.
type fuzzFixture struct {
	*fixture
	handler  http.Handler
	secret   stdwebhook.Secret
	password string
	uuid     string
	bearers  []string // user, app-password session, gateway, admin
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	fx := &fuzzFixture{fixture: newFixture(f, fixtureOptions{})}
	fx.secret, _ = stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	fx.Server.MailBackends = rpc.DefaultMailBackends()
	fx.Server.Provisioning = &rpc.Provisioning{Secrets: []stdwebhook.Secret{fx.secret}, IDs: fx.Store, RevokeOnPasswordChange: true}
	fx.handler = fx.Server.Handler()
	fx.bearers = []string{fx.token(alice), fx.token(alice, "app_password"), gatewaySecret, adminSecret}
	fx.ensurePassword(f)
	return fx
}

// ensurePassword gives alice the known password again if an input removed
// it (or made room for it, at her limit).
func (fx *fuzzFixture) ensurePassword(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	list, err := fx.Service.List(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if fx.uuid != "" && slices.ContainsFunc(list, func(p apppass.Listed) bool { return p.UUID == fx.uuid }) {
		return
	}
	if len(list) >= fx.Service.MaxPerUser {
		if _, err := fx.Service.RemoveAll(ctx, alice, nil, apppass.ReasonUser); err != nil {
			t.Fatal(err)
		}
	}
	added, err := fx.Service.Add(ctx, alice, apppass.AddRequest{AppScope: "mail", AppName: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	fx.password, fx.uuid = added.Password, added.UUID
}

// fill puts the live password and uuid where an input names them, and
// {basic} for alice's Basic credentials with it.
func (fx *fuzzFixture) fill(s string) string {
	basic := base64.StdEncoding.EncodeToString([]byte(alice.Login + ":" + fx.password))
	return strings.NewReplacer("{password}", fx.password, "{uuid}", fx.uuid, "{basic}", basic).Replace(s)
}

// snapshot is alice's passwords as the store has them, to compare around
// a refused request.
func (fx *fuzzFixture) snapshot(t *testing.T) string {
	t.Helper()
	list, err := fx.Service.List(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(list)
	return string(raw)
}

func (fx *fuzzFixture) serve(r *http.Request) *httptest.ResponseRecorder {
	r.RemoteAddr = "192.0.2.10:40000"
	w := httptest.NewRecorder()
	fx.handler.ServeHTTP(w, r)
	return w
}

// knownCodes are the codes errors.go assigns.
var knownCodes = []int64{rpc.CodeParseError, rpc.CodeInvalidRequest, rpc.CodeMethodNotFound, rpc.CodeInvalidParams,
	rpc.CodeInternal, rpc.CodeUnauthenticated, rpc.CodeForbidden, rpc.CodeNotFound, rpc.CodeRejected, rpc.CodeLimit, rpc.CodeUnavailable}

// checkReply checks one JSON-RPC response object: the envelope, a code
// from the table, never an internal error, and -32602 naming its field.
func checkReply(t *testing.T, raw []byte) response {
	t.Helper()
	r := parseResponse(t, raw)
	if r.Error == nil {
		return r
	}
	if !slices.Contains(knownCodes, r.Error.Code) {
		t.Fatalf("error code %d is not in errors.go: %s", r.Error.Code, raw)
	}
	if r.Error.Code == rpc.CodeInternal || r.Error.Code == rpc.CodeUnavailable {
		t.Fatalf("input caused %d: %s", r.Error.Code, raw)
	}
	if r.Error.Code == rpc.CodeInvalidParams {
		var d errorData
		if err := json.Unmarshal(r.Error.Data, &d); err != nil || d.Field == "" || d.Reason == "" {
			t.Fatalf("-32602 without data.field and data.reason: %s", raw)
		}
	}
	return r
}

func FuzzRPCEnvelope(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, caller byte, body []byte) {
		fx.ensurePassword(t)
		body = []byte(fx.fill(string(body)))
		before := fx.snapshot(t)
		req := httptest.NewRequest(http.MethodPost, "/rpc", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.bearers[int(caller)%len(fx.bearers)])
		req.Header.Set("Content-Type", "application/json")
		w := fx.serve(req)
		trimmed := bytes.TrimSpace(body)
		switch {
		case w.Code == http.StatusNoContent:
			// Notifications only: answered with nothing, and only then.
			if !json.Valid(trimmed) || (trimmed[0] != '{' && trimmed[0] != '[') {
				t.Fatalf("204 for a body that holds no notification: %q", body)
			}
			return
		case w.Code == http.StatusRequestEntityTooLarge && len(body) > rpc.MaxBodyBytes:
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
			failed = checkReply(t, raw).Error != nil || failed
		}
		if failed && len(replies) == 1 && !bytes.HasPrefix(trimmed, []byte("[")) && fx.snapshot(t) != before {
			t.Fatalf("a refused call changed alice's passwords: %q", body)
		}
	})
}

func FuzzRPCParams(f *testing.F) {
	fx := newFuzzFixture(f)
	names := rpc.MethodNames()
	f.Fuzz(func(t *testing.T, method, caller byte, params []byte) {
		fx.ensurePassword(t)
		params = []byte(fx.fill(string(params)))
		if !json.Valid(params) {
			return // the envelope's business (FuzzRPCEnvelope)
		}
		name := names[int(method)%len(names)]
		body := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":7,"method":%q,"params":%s}`, name, params)
		before := fx.snapshot(t)
		req := httptest.NewRequest(http.MethodPost, "/rpc", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.bearers[int(caller)%len(fx.bearers)])
		w := fx.serve(req)
		if w.Code != http.StatusOK {
			t.Fatalf("HTTP %d for %s", w.Code, body)
		}
		r := checkReply(t, w.Body.Bytes())
		if string(r.ID) != "7" {
			t.Fatalf("id %s, want 7: %s", r.ID, w.Body.Bytes())
		}
		if r.Error != nil {
			if r.Error.Code == rpc.CodeParseError || r.Error.Code == rpc.CodeInvalidRequest || r.Error.Code == rpc.CodeMethodNotFound {
				t.Fatalf("a well-formed request of a known method answered %d: %s", r.Error.Code, body)
			}
			if fx.snapshot(t) != before {
				t.Fatalf("a refused call changed alice's passwords: %s", body)
			}
			return
		}
		if name == "appPasswords.add" {
			var added struct{ Password string }
			if json.Unmarshal(r.Result, &added) != nil || !passwordRE.MatchString(added.Password) {
				t.Fatalf("add answered %s", r.Result)
			}
		}
	})
}

func FuzzOXForm(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, post bool, query, body string, form bool) {
		fx.ensurePassword(t)
		query, body = fx.fill(query), fx.fill(body)
		if _, err := url.ParseRequestURI("/?" + query); err != nil || strings.ContainsAny(query, " #") {
			return // not a request line a client can send
		}
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		before := fx.snapshot(t)
		req := httptest.NewRequest(method, "/appsuite/api/appPasswords?"+query, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fx.bearers[0])
		if form {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		w := fx.serve(req)
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
		if fx.snapshot(t) != before {
			t.Fatalf("a refused request changed alice's passwords: %s ?%q %q", method, query, body)
		}
	})
}

func FuzzProvisioning(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		if strings.ContainsAny(id, "\x00\r\n") || !utf8.ValidString(id) {
			return // not a header value a client can send
		}
		req := httptest.NewRequest(http.MethodPost, "/webhooks/provisioning", bytes.NewReader(body))
		stdwebhook.SetHeaders(req.Header.Set, id, time.Now(), body, fx.secret)
		w := fx.serve(req)
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

// validHeader is what net/http lets through as a header value.
func validHeader(vs ...string) bool {
	for _, v := range vs {
		if strings.ContainsAny(v, "\x00\r\n") {
			return false
		}
	}
	return true
}

// fuzzLogin says whether login and password are alice's live ones, in the
// forms authenticate accepts.
func (fx *fuzzFixture) fuzzLogin(login, password string) bool {
	norm := strings.NewReplacer("-", "", " ", "").Replace(strings.ToLower(password))
	return apppass.LoginKey(login) == apppass.LoginKey(alice.Login) && norm == strings.ReplaceAll(fx.password, "-", "")
}

func FuzzNginxMailAuth(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, user, pass, protocol, method, clientIP, attempt string) {
		fx.ensurePassword(t)
		user, pass = fx.fill(user), fx.fill(pass)
		if !validHeader(user, pass, protocol, method, clientIP, attempt) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/auth/mail", nil)
		for k, v := range map[string]string{"Auth-User": user, "Auth-Pass": pass, "Auth-Protocol": protocol,
			"Auth-Method": method, "Client-IP": clientIP, "Auth-Login-Attempt": attempt, rpc.GatewayKeyHeader: gatewaySecret} {
			req.Header.Set(k, v)
		}
		w := fx.serve(req)
		status := w.Header().Get("Auth-Status")
		if w.Code != http.StatusOK || status == "" {
			t.Fatalf("HTTP %d, Auth-Status %q", w.Code, status)
		}
		_, hasBackend := rpc.DefaultMailBackends()[protocol]
		_, ipErr := netip.ParseAddr(clientIP)
		if hasBackend && (clientIP == "" || ipErr == nil) && strings.HasPrefix(status, "Temporary") {
			t.Fatalf("input caused %q (user %q protocol %q)", status, user, protocol)
		}
		if status != "OK" {
			return
		}
		login, _ := url.PathUnescape(user)
		password, _ := url.PathUnescape(pass)
		if !fx.fuzzLogin(login, password) || !hasBackend || w.Header().Get("Auth-Server") == "" || w.Header().Get("Auth-Port") == "" {
			t.Fatalf("OK for user %q pass %q protocol %q: %v", user, pass, protocol, w.Header())
		}
		if w.Header().Get("X-AppPass-UUID") != fx.uuid {
			t.Fatalf("OK names uuid %q, want %q", w.Header().Get("X-AppPass-UUID"), fx.uuid)
		}
	})
}

func FuzzNginxBasicAuth(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, authorization, protocol, realIP, device string) {
		fx.ensurePassword(t)
		authorization = fx.fill(authorization)
		if !validHeader(authorization, protocol, realIP, device) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/auth/basic", nil)
		for k, v := range map[string]string{"Authorization": authorization, "X-AppPass-Protocol": protocol,
			"X-Real-IP": realIP, "X-AppPass-Device": device, rpc.GatewayKeyHeader: gatewaySecret} {
			req.Header.Set(k, v)
		}
		w := fx.serve(req)
		switch w.Code {
		case http.StatusOK:
			login, password, ok := req.BasicAuth()
			if !ok || !fx.fuzzLogin(login, password) || w.Header().Get("X-AppPass-UUID") != fx.uuid {
				t.Fatalf("200 for Authorization %q protocol %q: %v", authorization, protocol, w.Header())
			}
			if got := w.Header().Get("X-AppPass-User"); got != strconv.FormatInt(alice.UserID, 10) {
				t.Fatalf("200 names user %q", got)
			}
		case http.StatusUnauthorized:
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic realm=") {
				t.Fatalf("401 without a Basic challenge: %v", w.Header())
			}
		case http.StatusTooManyRequests:
			if n, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || n < 1 {
				t.Fatalf("429 with Retry-After %q", w.Header().Get("Retry-After"))
			}
		case http.StatusBadRequest: // the gateway's configuration: no or an unknown protocol
		default:
			t.Fatalf("HTTP %d for Authorization %q protocol %q ip %q: %s", w.Code, authorization, protocol, realIP, w.Body.Bytes())
		}
	})
}
