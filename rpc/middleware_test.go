package rpc_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// logRecords parses JSON log output, one object a line; a line that is
// not JSON fails the test.
func logRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		recs = append(recs, m)
	}
	return recs
}

// withRequestID returns the records carrying request_id id.
func withRequestID(recs []map[string]any, id string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["request_id"] == id {
			out = append(out, r)
		}
	}
	return out
}

func findRecord(recs []map[string]any, msg string, attrs map[string]any) map[string]any {
	for _, r := range recs {
		if r["msg"] != msg {
			continue
		}
		match := true
		for k, v := range attrs {
			if r[k] != v {
				match = false
			}
		}
		if match {
			return r
		}
	}
	return nil
}

// TestRequestID: a sane X-Request-Id comes back and is in every log line
// of its request; an absent or unsafe one is replaced by a fresh id.
func TestRequestID(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	logs := f.LogTo(t)
	token := f.Token(Alice)

	resp, body := f.PostWithHeaders(t, "/rpc", map[string]string{"Authorization": "Bearer " + token, rpc.RequestIDHeader: "req-1.a:b/c=d@e+f_g"},
		Request("appPasswords.add", `{"appScope":"mail","appName":"phone"}`))
	if got := resp.Header.Get(rpc.RequestIDHeader); got != "req-1.a:b/c=d@e+f_g" {
		t.Fatalf("X-Request-Id %q, want the one sent", got)
	}
	password := Decode[Created](t, OK(t, ParseResponse(t, body))).Password

	// Absent, too long, or with characters that could forge a log line or
	// a header: a fresh id, different each time.
	seen := map[string]bool{}
	for _, sent := range []string{"", strings.Repeat("a", 129), "two words", `quote"d`, "semi;colon", "ünï"} {
		h := map[string]string{"Authorization": "Bearer " + token}
		if sent != "" {
			h[rpc.RequestIDHeader] = sent
		}
		resp, _ := f.PostWithHeaders(t, "/rpc", h, Request("appPasswords.list", ""))
		got := resp.Header.Get(rpc.RequestIDHeader)
		if !generatedID.MatchString(got) || seen[got] {
			t.Fatalf("sent %q: X-Request-Id %q, want a fresh generated id", sent, got)
		}
		seen[got] = true
	}
	longest := strings.Repeat("b", 128)
	resp, _ = f.PostWithHeaders(t, "/rpc", map[string]string{"Authorization": "Bearer " + token, rpc.RequestIDHeader: longest}, Request("appPasswords.list", ""))
	if resp.Header.Get(rpc.RequestIDHeader) != longest {
		t.Fatalf("a 128-character id was not kept")
	}
	// Every route has one, errors and 404s included.
	for _, path := range []string{"/healthz", "/nope"} {
		r, err := http.Get(f.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if !generatedID.MatchString(r.Header.Get(rpc.RequestIDHeader)) {
			t.Fatalf("GET %s: no request id", path)
		}
	}
	// A refused bearer and an error from a method.
	resp, _ = f.PostWithHeaders(t, "/rpc", map[string]string{"Authorization": "Bearer not-a-token", rpc.RequestIDHeader: "req-401"}, Request("appPasswords.list", ""))
	if resp.StatusCode != 401 || resp.Header.Get(rpc.RequestIDHeader) != "req-401" {
		t.Fatalf("401: HTTP %d, id %q", resp.StatusCode, resp.Header.Get(rpc.RequestIDHeader))
	}
	f.PostWithHeaders(t, "/rpc?access_token=query-secret", map[string]string{"Authorization": "Bearer " + token, rpc.RequestIDHeader: "req-err"},
		Request("appPasswords.remove", `{"uuid":"00000000-0000-4000-8000-000000000000"}`))

	recs := logRecords(t, logs.String())
	mine := withRequestID(recs, "req-1.a:b/c=d@e+f_g")
	if findRecord(mine, "call", map[string]any{"method": "appPasswords.add", "caller": Alice.Login}) == nil {
		t.Fatalf("no call line with the request id: %v", mine)
	}
	if findRecord(mine, "http request", map[string]any{"method": "POST", "path": "/rpc", "status": float64(200)}) == nil {
		t.Fatalf("no access line with the request id: %v", mine)
	}
	if findRecord(withRequestID(recs, "req-401"), "http request", map[string]any{"status": float64(401)}) == nil {
		t.Fatalf("no access line for the 401")
	}
	errLines := withRequestID(recs, "req-err")
	if findRecord(errLines, "call", map[string]any{"method": "appPasswords.remove", "code": float64(errcode.NotFound)}) == nil ||
		findRecord(errLines, "http request", map[string]any{"path": "/rpc"}) == nil {
		t.Fatalf("error call lines: %v", errLines)
	}
	for _, r := range recs {
		if r["msg"] == "http request" || r["msg"] == "call" {
			if id, _ := r["request_id"].(string); id == "" {
				t.Fatalf("a request's line without request_id: %v", r)
			}
		}
	}
	for _, secret := range []string{token, password, strings.ReplaceAll(password, "-", ""), "query-secret", "not-a-token"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the logs contain a secret %q:\n%s", secret, logs.String())
		}
	}
}

// TestRequestIDWebSocket: a socket has one request id, sent back on the
// upgrade; each call's line adds its JSON-RPC id.
func TestRequestIDWebSocket(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	logs := f.LogTo(t)
	token := f.Token(Alice)
	conn, resp, err := websocket.DefaultDialer.Dial(f.WSURL("?access_token="+token), http.Header{rpc.RequestIDHeader: {"ws-conn-1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if got := resp.Header.Get(rpc.RequestIDHeader); got != "ws-conn-1" {
		t.Fatalf("upgrade X-Request-Id %q", got)
	}
	c := &WSClient{Conn: conn, NextID: 6}
	OK(t, c.Call(t, "appPasswords.list", ""))                                             // id 7
	WantError(t, c.Call(t, "appPasswords.remove", `{"uuid":"x"}`), errcode.InvalidParams) // id 8
	c.Send(t, `[{"jsonrpc":"2.0","id":"b1","method":"appPasswords.list"}]`)               // a batch
	c.Read(t)

	recs := withRequestID(logRecords(t, logs.String()), "ws-conn-1")
	if findRecord(recs, "call", map[string]any{"method": "appPasswords.list", "rpc_id": "7"}) == nil ||
		findRecord(recs, "call", map[string]any{"method": "appPasswords.remove", "rpc_id": "8"}) == nil {
		t.Fatalf("call lines of the socket: %v", recs)
	}
	if len(findAll(recs, "call")) != 3 {
		t.Fatalf("want 3 call lines with the connection's id (the batch's too): %v", recs)
	}
	if findRecord(recs, "http request", map[string]any{"path": "/rpc", "status": float64(101)}) == nil {
		t.Fatalf("no access line for the upgrade: %v", recs)
	}
	if strings.Contains(logs.String(), token) {
		t.Fatal("the access token from the query string was logged")
	}
}

func findAll(recs []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestRequestIDOnErrorLogs: the warning logged when MongoDB is down
// carries the request id of the call that met it.
func TestRequestIDOnErrorLogs(t *testing.T) {
	uri, stopStore := StoppableStore(t)
	f := NewFixture(t, FixtureOptions{MongoURI: uri})
	logs := f.LogTo(t)
	stopStore()
	_, body := f.PostWithHeaders(t, "/rpc", map[string]string{"Authorization": "Bearer " + f.Token(Alice), rpc.RequestIDHeader: "req-down"},
		Request("appPasswords.list", ""))
	WantError(t, ParseResponse(t, body), errcode.Unavailable)
	recs := withRequestID(logRecords(t, logs.String()), "req-down")
	if r := findRecord(recs, "backing service unavailable", map[string]any{"method": "appPasswords.list"}); r == nil || r["level"] != "WARN" {
		t.Fatalf("no warning with the request id: %v", recs)
	}
}
