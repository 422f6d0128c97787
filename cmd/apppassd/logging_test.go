package main_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/config/datadir"
)

// exchange sends one HTTP request to d and returns the response with its
// body read.
func (d *daemon) exchange(t *testing.T, method, path string, headers map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, d.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

// TestLogsCarryRequestIDsAndNoSecrets runs apppassd with JSON logs at
// debug through everything that handles a secret (add, list, logins right
// and wrong over /rpc, /auth/basic and /auth/mail, WebSocket with the
// token in the query, remove, bad tokens and keys), then reads its stderr:
// every line is JSON, every request's lines carry its id, and none holds
// a password, token or key.
func TestLogsCarryRequestIDsAndNoSecrets(t *testing.T) {
	dataDir := t.TempDir()
	d := start(t, "APPPASS_DATA_DIR="+dataDir, "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t),
		"APPPASS_LOG_LEVEL=debug", "APPPASS_LOG_FORMAT=json")
	token, gatewayKey := d.credentials(t)
	rpcBody := func(method string, params any) string {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
		return string(b)
	}
	call := func(bearer, requestID, method string, params any) (*http.Response, rpcReply) {
		t.Helper()
		h := map[string]string{"Authorization": "Bearer " + bearer, "Content-Type": "application/json"}
		if requestID != "" {
			h["X-Request-Id"] = requestID
		}
		resp, body := d.exchange(t, http.MethodPost, "/rpc", h, rpcBody(method, params))
		var r rpcReply
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("%s: %v: %s", method, err, body)
		}
		return resp, r
	}

	// add, with a request id of the caller's.
	resp, r := call(token, "e2e-add-1", "appPasswords.add", map[string]any{"appScope": "mail", "appName": "Phone"})
	if r.Error != nil || resp.Header.Get("X-Request-Id") != "e2e-add-1" {
		t.Fatalf("add: %+v, X-Request-Id %q", r.Error, resp.Header.Get("X-Request-Id"))
	}
	var mail added
	_ = json.Unmarshal(r.Result, &mail)
	var cal added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "caldav", "appName": "Calendar"}, &cal)
	d.call(t, token, "appPasswords.list", nil, nil)

	wrongPassword := "qwer-tyui-opas-dfgh"
	login := func(password, protocol, requestID string) *rpcReply {
		_, r := call(gatewayKey, requestID, "appPasswords.authenticate",
			map[string]any{"login": "demo@example.com", "password": password, "protocol": protocol, "ip": "192.0.2.9"})
		return &r
	}
	if r := login(strings.ToUpper(strings.ReplaceAll(mail.Password, "-", "")), "imap", "e2e-login-ok"); r.Error != nil {
		t.Fatalf("authenticate: %+v", r.Error)
	}
	if r := login(wrongPassword, "imap", "e2e-login-wrong"); r.Error == nil || r.Error.Code != -32010 {
		t.Fatalf("wrong password: %+v", r)
	}

	// The nginx adapters, right and wrong.
	basic := func(password string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte("demo@example.com:"+password))
	}
	for password, want := range map[string]int{cal.Password: 200, wrongPassword: 401} {
		resp, _ := d.exchange(t, http.MethodGet, "/auth/basic", map[string]string{"X-AppPass-Gateway-Key": gatewayKey,
			"Authorization": basic(password), "X-AppPass-Protocol": "caldav", "X-Real-IP": "192.0.2.10"}, "")
		if resp.StatusCode != want {
			t.Fatalf("/auth/basic: HTTP %d, want %d", resp.StatusCode, want)
		}
	}
	for password, want := range map[string]string{mail.Password: "OK", wrongPassword: "Invalid login or password"} {
		resp, _ := d.exchange(t, http.MethodGet, "/auth/mail", map[string]string{"X-AppPass-Gateway-Key": gatewayKey,
			"Auth-Method": "plain", "Auth-User": "demo@example.com", "Auth-Pass": url.PathEscape(password),
			"Auth-Protocol": "imap", "Client-IP": "192.0.2.11", "X-Request-Id": "e2e-mail"}, "")
		if got := resp.Header.Get("Auth-Status"); got != want {
			t.Fatalf("/auth/mail: Auth-Status %q, want %q", got, want)
		}
	}

	// WebSocket with the token in the query string, which must not be logged.
	ws, wsResp, err := websocket.DefaultDialer.Dial(strings.Replace(d.URL, "http", "ws", 1)+"/rpc?access_token="+token,
		http.Header{"X-Request-Id": {"e2e-ws"}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	if wsResp.Header.Get("X-Request-Id") != "e2e-ws" {
		t.Fatalf("upgrade X-Request-Id %q", wsResp.Header.Get("X-Request-Id"))
	}
	if err := ws.WriteJSON(map[string]any{"jsonrpc": "2.0", "id": 41, "method": "appPasswords.list"}); err != nil {
		t.Fatal(err)
	}
	var wsReply rpcReply
	if err := ws.ReadJSON(&wsReply); err != nil || wsReply.Error != nil {
		t.Fatalf("websocket list: %v %+v", err, wsReply.Error)
	}
	ws.Close()

	// Bad credentials: garbage, a tampered token, a gateway key where a
	// user belongs, a wrong gateway key, a bad token on the WebSocket.
	tampered := token[:len(token)-2] + "xy"
	if strings.HasSuffix(token, "xy") {
		tampered = token[:len(token)-2] + "zz"
	}
	badKey := "not-the-gateway-key-0123456789"
	for _, bearer := range []string{"garbage-bearer-4711", tampered} {
		if resp, r := call(bearer, "e2e-bad-token", "appPasswords.list", nil); resp.StatusCode != 401 || r.Error == nil {
			t.Fatalf("bad token: HTTP %d", resp.StatusCode)
		}
	}
	if _, r := call(gatewayKey, "", "appPasswords.list", nil); r.Error == nil || r.Error.Code != -32003 {
		t.Fatalf("gateway key on list: %+v", r.Error)
	}
	if resp, _ := d.exchange(t, http.MethodGet, "/auth/basic", map[string]string{"X-AppPass-Gateway-Key": badKey,
		"Authorization": basic(mail.Password), "X-AppPass-Protocol": "caldav"}, ""); resp.StatusCode != 403 {
		t.Fatalf("/auth/basic with a wrong key: HTTP %d", resp.StatusCode)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(strings.Replace(d.URL, "http", "ws", 1)+"/rpc?access_token="+tampered, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("websocket with a tampered token: %v", err)
	}

	// remove, then a login with the revoked password.
	d.call(t, token, "appPasswords.remove", map[string]any{"uuid": mail.UUID}, nil)
	if r := login(mail.Password, "imap", ""); r.Error == nil {
		t.Fatal("a revoked password was accepted")
	}
	if code := d.Stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	logs := d.Stderr.String()
	// No secret, in any form.
	secrets := map[string]string{
		"app password":                 mail.Password,
		"app password without dashes":  strings.ReplaceAll(mail.Password, "-", ""),
		"app password as typed":        strings.ToUpper(strings.ReplaceAll(mail.Password, "-", "")),
		"CalDAV password":              cal.Password,
		"CalDAV password unformatted":  strings.ReplaceAll(cal.Password, "-", ""),
		"wrong password":               wrongPassword,
		"wrong password unformatted":   strings.ReplaceAll(wrongPassword, "-", ""),
		"user token":                   token,
		"user token signature":         token[strings.LastIndex(token, ".")+1:],
		"tampered token":               tampered,
		"garbage bearer":               "garbage-bearer-4711",
		"gateway key":                  gatewayKey,
		"wrong gateway key":            badKey,
		"Basic credentials":            strings.TrimPrefix(basic(cal.Password), "Basic "),
		"URL-encoded password (mail)":  url.PathEscape(mail.Password),
		"access_token query parameter": "access_token",
	}
	for _, name := range []string{datadir.PepperFile, datadir.UserTokenKeyFile, datadir.GatewayKeyFile} {
		raw, err := os.ReadFile(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatalf("reading the %s from the data dir: %v", name, err)
		}
		secrets[name] = strings.TrimSpace(string(raw))
	}
	for name, secret := range secrets {
		if len(secret) < 8 {
			t.Fatalf("%s is too short to look for: %q", name, secret)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain the %s", name)
		}
	}

	// Every line is JSON; every request's lines carry its id.
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		recs = append(recs, m)
	}
	byID := map[string][]map[string]any{}
	for _, m := range recs {
		switch m["msg"] {
		case "call", "http request":
			id, _ := m["request_id"].(string)
			if id == "" {
				t.Errorf("request line without request_id: %v", m)
			}
			byID[id] = append(byID[id], m)
		}
	}
	has := func(id, msg string, attrs map[string]any) {
		t.Helper()
		for _, m := range byID[id] {
			match := m["msg"] == msg
			for k, v := range attrs {
				match = match && m[k] == v
			}
			if match {
				return
			}
		}
		t.Errorf("no %q line %v with request_id %s; its lines: %v", msg, attrs, id, byID[id])
	}
	has("e2e-add-1", "call", map[string]any{"method": "appPasswords.add", "caller": "demo@example.com", "level": "DEBUG"})
	has("e2e-add-1", "http request", map[string]any{"method": "POST", "path": "/rpc", "status": float64(200)})
	has("e2e-login-ok", "call", map[string]any{"method": "appPasswords.authenticate"})
	has("e2e-login-wrong", "call", map[string]any{"method": "appPasswords.authenticate", "code": float64(-32010)})
	has("e2e-mail", "http request", map[string]any{"method": "GET", "path": "/auth/mail"})
	has("e2e-ws", "call", map[string]any{"method": "appPasswords.list", "rpc_id": "41"})
	has("e2e-ws", "http request", map[string]any{"path": "/rpc", "status": float64(101)})
	has("e2e-bad-token", "http request", map[string]any{"path": "/rpc", "status": float64(401)})
	if len(byID["e2e-mail"]) != 2 || len(byID["e2e-bad-token"]) != 2 {
		t.Errorf("want one access line per request: mail %d, bad token %d", len(byID["e2e-mail"]), len(byID["e2e-bad-token"]))
	}
}
