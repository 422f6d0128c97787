package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/client"
	"github.com/apppass/apppass/rpc/errcode"
)

const secret = "abcd-efgh-ijkl-mnop" // a password in params: it must never show in an error

// answering returns a server that answers every call with status and body.
func answering(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func call(srv *httptest.Server, out any) error {
	c := client.Client{URL: srv.URL + "/rpc", Bearer: "key"}
	return c.Call(context.Background(), "appPasswords.authenticate", map[string]string{"password": secret}, out)
}

// TestCall: the request is a JSON-RPC call with the bearer; the result is
// decoded.
func TestCall(t *testing.T) {
	var got struct {
		Method, Path, Auth, ContentType string
		Body                            map[string]any
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Method, got.Path, got.Auth, got.ContentType = r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		if err := json.NewDecoder(r.Body).Decode(&got.Body); err != nil {
			t.Errorf("request body: %v", err)
		}
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"uuid":"u-1","scopes":["mail"]}}`)
	}))
	defer srv.Close()
	var res struct {
		UUID   string
		Scopes []string
	}
	if err := call(srv, &res); err != nil {
		t.Fatal(err)
	}
	if res.UUID != "u-1" || len(res.Scopes) != 1 || res.Scopes[0] != "mail" {
		t.Errorf("result %+v", res)
	}
	if got.Method != http.MethodPost || got.Path != "/rpc" || got.Auth != "Bearer key" || got.ContentType != "application/json" {
		t.Errorf("request %+v", got)
	}
	b := got.Body
	if b["jsonrpc"] != "2.0" || b["id"] != float64(1) || b["method"] != "appPasswords.authenticate" {
		t.Errorf("envelope %v", b)
	}
	if p, _ := b["params"].(map[string]any); p["password"] != secret {
		t.Errorf("params %v", b["params"])
	}
}

// TestNoBearer: a client without a bearer sends no Authorization header
// (rather than an empty one).
func TestNoBearer(t *testing.T) {
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Values("Authorization"))
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":null}`)
	}))
	defer srv.Close()
	c := client.Client{URL: srv.URL}
	if err := c.Call(context.Background(), "rpc.discover", nil, nil); err != nil {
		t.Fatal(err)
	}
	if v := auth.Load().([]string); len(v) != 0 {
		t.Errorf("Authorization %q", v)
	}
}

// TestErrors: every code of ours comes back as *client.Error of its kind,
// and errors.Is holds against the domain's error of that kind only.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		code int64
		kind apppass.Kind
	}{
		{errcode.InvalidParams, apppass.KindInvalid},
		{errcode.Unauthenticated, apppass.KindUnauthenticated},
		{errcode.Forbidden, apppass.KindForbidden},
		{errcode.NotFound, apppass.KindNotFound},
		{errcode.Rejected, apppass.KindRejected},
		{errcode.Limit, apppass.KindLimit},
		{errcode.Unavailable, apppass.KindUnavailable},
		{errcode.Internal, apppass.KindInternal},
		{errcode.MethodNotFound, apppass.KindInternal},
		{-31999, apppass.KindInternal}, // a code this version does not know
	} {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "error": map[string]any{"code": tc.code, "message": "nope"}})
		err := call(answering(t, http.StatusOK, string(body)), nil)
		var e *client.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Message != "nope" || e.Kind() != tc.kind {
			t.Errorf("code %d: %#v", tc.code, err)
			continue
		}
		if got, want := errors.Is(err, apppass.ErrRejected), tc.kind == apppass.KindRejected; got != want {
			t.Errorf("code %d: errors.Is(ErrRejected) = %v", tc.code, got)
		}
		if got, want := errors.Is(err, apppass.ErrNotFound), tc.kind == apppass.KindNotFound; got != want {
			t.Errorf("code %d: errors.Is(ErrNotFound) = %v", tc.code, got)
		}
		if errors.Is(err, errors.New("nope")) {
			t.Errorf("code %d: errors.Is holds for an unrelated error", tc.code)
		}
	}
}

// TestRetryAfter: the limit error's data.retryAfter (seconds) as the
// server encodes it; nothing for another error or without data.
func TestRetryAfter(t *testing.T) {
	limit := func(data any) string {
		e := map[string]any{"code": errcode.Limit, "message": "too many failed logins"}
		if data != nil {
			e["data"] = data
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "error": e})
		return string(b)
	}
	for _, tc := range []struct {
		name, body string
		want       time.Duration
	}{
		{"limit", limit(errcode.Data{RetryAfter: 7}), 7 * time.Second},
		{"limit without data", limit(nil), 0},
		{"limit with other data", limit(map[string]string{"ox": "ASP-0001"}), 0},
		{"limit with bad data", limit("soon"), 0},
		{"another code", `{"jsonrpc":"2.0","id":1,"error":{"code":-32010,"message":"no","data":{"retryAfter":7}}}`, 0},
	} {
		var e *client.Error
		if err := call(answering(t, http.StatusOK, tc.body), nil); !errors.As(err, &e) {
			t.Errorf("%s: %v", tc.name, err)
		} else if got := e.RetryAfter(); got != tc.want {
			t.Errorf("%s: RetryAfter %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestErrorWithHTTPStatus: a JSON-RPC error is the answer whatever the
// HTTP status, including one with the id null (the server could not read
// the call's).
func TestErrorWithHTTPStatus(t *testing.T) {
	srv := answering(t, http.StatusRequestEntityTooLarge, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"request body exceeds 1 MiB"}}`)
	var e *client.Error
	if err := call(srv, nil); !errors.As(err, &e) || e.Code != errcode.InvalidRequest {
		t.Errorf("%v", err)
	}
}

// TestNotAReply: what is not a JSON-RPC reply is an error naming the HTTP
// status, never an *Error, and never showing the request.
func TestNotAReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"HTML from a proxy", http.StatusBadGateway, "<html>bad gateway</html>", "answered HTTP 502 without a JSON-RPC response"},
		{"empty", http.StatusOK, "", "answered HTTP 200 without a JSON-RPC response"},
		{"JSON of another kind", http.StatusOK, `{"status":"ok"}`, "answered HTTP 200 without a JSON-RPC response"},
		{"truncated", http.StatusOK, `{"jsonrpc":"2.0","id":1,"result":{"uuid"`, "without a JSON-RPC response"},
		{"a result with an HTTP error", http.StatusInternalServerError, `{"jsonrpc":"2.0","id":1,"result":{}}`, "answered HTTP 500"},
		{"a reply to another call", http.StatusOK, `{"jsonrpc":"2.0","id":2,"result":{}}`, "a reply to id 2, not to id 1"},
		{"a result without an id", http.StatusOK, `{"jsonrpc":"2.0","id":null,"result":{}}`, "a reply to id null, not to id 1"},
		{"a result of another shape", http.StatusOK, `{"jsonrpc":"2.0","id":1,"result":[1]}`, "appPasswords.authenticate: unexpected result"},
	} {
		var out struct{ UUID string }
		err := call(answering(t, tc.status, tc.body), &out)
		var e *client.Error
		if err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestReplyBound: a reply over MaxReply is an error, one at it is not; a
// server that never stops sending cannot make the client hold it.
func TestReplyBound(t *testing.T) {
	reply := func(n int) string {
		head, tail := `{"jsonrpc":"2.0","id":1,"result":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	c := client.Client{MaxReply: 4096}
	c.URL = answering(t, http.StatusOK, reply(4096)).URL
	if err := c.Call(context.Background(), "m", nil, nil); err != nil {
		t.Errorf("at the bound: %v", err)
	}
	c.URL = answering(t, http.StatusOK, reply(4097)).URL
	if err := c.Call(context.Background(), "m", nil, nil); err == nil || !strings.Contains(err.Error(), "reply too long: more than 4096 bytes") {
		t.Errorf("over the bound: %v", err)
	}

	endless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":"`)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer endless.Close()
	c = client.Client{URL: endless.URL} // the default bound
	done := make(chan error, 1)
	go func() { done <- c.Call(context.Background(), "m", nil, nil) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "reply too long") {
			t.Errorf("endless reply: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an endless reply held the client")
	}
}

// TestRaw: the reply's bytes as they came, after the same checks as Call.
func TestRaw(t *testing.T) {
	const body = `{"jsonrpc":"2.0","id":1,"result":{"uuid":"u-1"}}` + "\n"
	c := client.Client{URL: answering(t, http.StatusOK, body).URL}
	raw, err := c.Raw(context.Background(), "m", nil)
	if err != nil || string(raw) != body {
		t.Errorf("Raw = %q, %v", raw, err)
	}
	c.URL = answering(t, http.StatusOK, `{"jsonrpc":"2.0","id":1,"error":{"code":-32010,"message":"no"}}`).URL
	if raw, err := c.Raw(context.Background(), "m", nil); !errors.Is(err, apppass.ErrRejected) || raw != nil {
		t.Errorf("Raw of an error = %q, %v", raw, err)
	}
}

// TestContext: a call ends when its context does, even if the server
// never answers.
func TestContext(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c := client.Client{URL: srv.URL}
	began := time.Now()
	err := c.Call(ctx, "m", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "calling "+srv.URL+": ") {
		t.Errorf("%v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestNoRedirect: a redirect is not followed (it would carry the bearer
// and the password elsewhere).
func TestNoRedirect(t *testing.T) {
	var reached atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer elsewhere.Close()
	redirecting := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect))
	defer redirecting.Close()
	for name, hc := range map[string]*http.Client{"default": nil, "HTTPClient": client.HTTPClient(&http.Transport{}, time.Minute)} {
		c := client.Client{URL: redirecting.URL, Bearer: "key", HTTP: hc}
		err := c.Call(context.Background(), "m", map[string]string{"password": secret}, nil)
		if err == nil || !strings.Contains(err.Error(), "answered HTTP 307") || reached.Load() {
			t.Errorf("%s: %v (followed: %v)", name, err, reached.Load())
		}
	}
}

// TestConnectionReuse: calls over a keep-alive transport share one
// connection, so the client reads each reply to its end.
func TestConnectionReuse(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"uuid":"u-1"}}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := client.Client{URL: srv.URL, HTTP: client.HTTPClient(&http.Transport{MaxIdleConnsPerHost: 1}, 0)}
	for range 5 {
		if err := c.Call(context.Background(), "m", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 calls", n)
	}
}

// TestDecodeReply: the framing another transport uses checks the id it
// was given.
func TestDecodeReply(t *testing.T) {
	var out struct{ UUID string }
	if err := client.DecodeReply([]byte(`{"jsonrpc":"2.0","id":5,"result":{"uuid":"u-5"}}`), 5, "m", &out); err != nil || out.UUID != "u-5" {
		t.Errorf("%v %+v", err, out)
	}
	if err := client.DecodeReply([]byte(`{"jsonrpc":"2.0","id":4,"result":{}}`), 5, "m", nil); err == nil || !strings.Contains(err.Error(), "a reply to id 4, not to id 5") {
		t.Errorf("another id: %v", err)
	}
	var e *client.Error
	if err := client.DecodeReply([]byte(`{"jsonrpc":"2.0","id":5,"error":{"code":-32029,"message":"slow down","data":{"retryAfter":3}}}`), 5, "m", nil); !errors.As(err, &e) || e.RetryAfter() != 3*time.Second {
		t.Errorf("limit: %v", err)
	}
	req, err := client.MarshalRequest(5, "m", nil)
	if err != nil || string(req) != `{"jsonrpc":"2.0","id":5,"method":"m","params":null}` {
		t.Errorf("MarshalRequest = %s, %v", req, err)
	}
}

// TestAuthenticate: the attempt goes as the method's params (the empty
// ones left out), the answer comes back as apppass.Authenticated.
func TestAuthenticate(t *testing.T) {
	var params atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Method string
			Params json.RawMessage
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		params.Store(req.Method + " " + string(req.Params))
		if strings.Contains(string(req.Params), "wrong") {
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"error":{"code":-32010,"message":"app password not accepted"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"uuid":"u-1","contextId":1,"userId":3,"login":"demo@example.com","appScope":"mail","scopes":["imap","smtp"],"expires":"2027-01-02T03:04:05Z"}}`)
	}))
	defer srv.Close()
	c := client.Client{URL: srv.URL, Bearer: "gateway-key"}
	got, err := c.Authenticate(context.Background(), apppass.LoginAttempt{Login: "demo@example.com", Password: secret, Protocol: "imap", IP: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `appPasswords.authenticate {"login":"demo@example.com","password":"` + secret + `","protocol":"imap","ip":"192.0.2.1"}`; params.Load() != want {
		t.Errorf("sent %s\nwant %s", params.Load(), want)
	}
	if got.UUID != "u-1" || got.ContextID != 1 || got.UserID != 3 || got.Login != "demo@example.com" || got.AppScope != "mail" ||
		strings.Join(got.Scopes, ",") != "imap,smtp" || got.Expires == nil || !got.Expires.Equal(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("%+v", got)
	}
	if got, err := c.Authenticate(context.Background(), apppass.LoginAttempt{Login: "demo@example.com", Password: "wrong", Protocol: "imap"}); got != nil || !errors.Is(err, apppass.ErrRejected) {
		t.Errorf("refused: %+v, %v", got, err)
	}
}
