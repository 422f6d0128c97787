package rpc_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc"
)

// wsClient is a raw WebSocket client: it sends the exact bytes a test
// chooses and reads the exact bytes the server answers.
type wsClient struct {
	conn   *websocket.Conn
	nextID int
}

func (f *fixture) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(f.URL, "http") + "/rpc" + query
}

// dialWS opens a socket with "Authorization: Bearer <bearer>".
func (f *fixture) dialWS(t testing.TB, bearer string) *wsClient {
	t.Helper()
	return f.dialWSAt(t, f.wsURL(""), http.Header{"Authorization": {"Bearer " + bearer}})
}

// dialWSQuery opens a socket with ?access_token=<token>.
func (f *fixture) dialWSQuery(t testing.TB, token string) *wsClient {
	t.Helper()
	return f.dialWSAt(t, f.wsURL("?access_token="+token), nil)
}

func (f *fixture) dialWSAt(t testing.TB, url string, header http.Header) *wsClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &wsClient{conn: conn, nextID: 100}
}

// refusedWS dials and expects the upgrade to be refused with HTTP 401 and
// a JSON-RPC -32001 body.
func (f *fixture) refusedWS(t testing.TB, url string, header http.Header) {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s succeeded", url)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, and no HTTP response", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial %s: HTTP %d, want 401", url, resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	wantError(t, parseResponse(t, body), rpc.CodeUnauthenticated)
}

func (c *wsClient) send(t testing.TB, msg string) {
	t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read waits for the next message. The deadline only keeps a broken
// server from hanging the test; it is not a speed requirement.
func (c *wsClient) read(t testing.TB) []byte {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, msg, err := c.conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return msg
}

// call sends one request with a fresh numeric id and reads its answer.
func (c *wsClient) call(t testing.TB, method, params string) response {
	t.Helper()
	c.nextID++
	id := strconv.Itoa(c.nextID)
	m, _ := json.Marshal(method)
	msg := `{"jsonrpc":"2.0","id":` + id + `,"method":` + string(m)
	if params != "" {
		msg += `,"params":` + params
	}
	c.send(t, msg+"}")
	r := parseResponse(t, c.read(t))
	if string(r.ID) != id {
		t.Fatalf("%s: answer has id %s, want %s", method, r.ID, id)
	}
	return r
}

func TestWebSocket(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	user := f.dialWS(t, f.token(alice))
	userByQuery := f.dialWSQuery(t, f.token(alice))
	gateway := f.dialWS(t, gatewaySecret)
	gatewayByQuery := f.dialWSQuery(t, gatewaySecret)

	t.Run("UI flow", func(t *testing.T) {
		if apps := decode[[]map[string]any](t, ok(t, user.call(t, "appPasswords.getApps", ""))); len(apps) != 7 {
			t.Fatalf("getApps: %d apps", len(apps))
		}
		rawC := ok(t, user.call(t, "appPasswords.add", `{"appScope":"mail","appName":"phone"}`))
		wantKeys(t, rawC, "uuid", "login", "password", "newLogin", "appScope", "name", "created", "expires", "idleExpiry", "allowedIPs", "settings")
		c := decode[created](t, rawC)
		if !passwordRE.MatchString(c.Password) || c.Login != alice.Login || c.NewLogin || len(c.Settings) == 0 {
			t.Fatalf("add = %+v", c)
		}
		// The other socket, authenticated by ?access_token=, sees it.
		rawList := ok(t, userByQuery.call(t, "appPasswords.list", ""))
		if strings.Contains(string(rawList), c.Password) {
			t.Fatalf("list reveals the password: %s", rawList)
		}
		list := decode[[]listed](t, rawList)
		if len(list) != 1 || list[0].UUID != c.UUID || list[0].LastLogin != nil {
			t.Fatalf("list = %+v", list)
		}
		// The gateway logs in with it.
		for _, g := range []*wsClient{gateway, gatewayByQuery} {
			a := decode[authenticated](t, ok(t, g.call(t, "appPasswords.authenticate",
				`{"login":"ALICE@example.com","password":"`+strings.ToUpper(c.Password)+`","protocol":"imap","ip":"198.51.100.1"}`)))
			if a.UUID != c.UUID || a.ContextID != 1 || a.UserID != 5 || a.Login != alice.Login || a.AppScope != "mail" || len(a.Scopes) == 0 {
				t.Fatalf("authenticate = %+v", a)
			}
		}
		list = decode[[]listed](t, ok(t, user.call(t, "appPasswords.list", "")))
		if list[0].LastLogin == nil || list[0].LastLogin.IP != "198.51.100.1" {
			t.Fatalf("lastLogin = %+v", list[0].LastLogin)
		}
		if got := ok(t, user.call(t, "appPasswords.remove", `{"uuid":"`+c.UUID+`"}`)); string(got) != `{"result":"OK"}` {
			t.Fatalf("remove = %s", got)
		}
		wantError(t, gateway.call(t, "appPasswords.authenticate",
			`{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`), rpc.CodeRejected)
		f.add(t, f.token(alice), "eas", "a")
		f.add(t, f.token(alice), "eas", "b")
		if got := ok(t, userByQuery.call(t, "appPasswords.removeAll", `{"appScope":"eas"}`)); string(got) != `{"removed":2}` {
			t.Fatalf("removeAll = %s", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		d := wantInvalid(t, user.call(t, "appPasswords.add", `{"appScope":"telnet","appName":"x"}`), "appScope")
		if d.OX != "ASP-0002" {
			t.Fatalf("data.ox = %q", d.OX)
		}
		wantInvalid(t, user.call(t, "appPasswords.add", `{"appScope":"mail","appName":{"$ne":""}}`), "appName")
		wantInvalid(t, user.call(t, "appPasswords.add", `{"appScope":"mail","appName":"x","extra":1}`), "extra")
		wantInvalid(t, user.call(t, "appPasswords.add", `["mail","x"]`), "params")
		wantInvalid(t, user.call(t, "appPasswords.add", `{"appScope":"mail","appScope":"telnet","appName":"x"}`), "appScope")
		wantInvalid(t, user.call(t, "appPasswords.add", `{"appScope":"telnet","appScope":"mail","appName":"x"}`), "appScope")
		wantInvalid(t, user.call(t, "appPasswords.remove", `{"uuid":"nope"}`), "uuid")
		wantError(t, user.call(t, "appPasswords.remove", `{"uuid":"00000000-0000-4000-8000-000000000000"}`), rpc.CodeNotFound)
		wantError(t, user.call(t, "appPasswords.nope", ""), rpc.CodeMethodNotFound)
		wantError(t, user.call(t, "appPasswords.authenticate", `{"login":"a","password":"b","protocol":"imap"}`), rpc.CodeForbidden)
		wantError(t, user.call(t, "appPasswords.list", `{"user":{"contextId":1,"userId":6,"login":"bob@example.com"}}`), rpc.CodeForbidden)
		wantError(t, gateway.call(t, "appPasswords.add", `{"appScope":"mail","appName":"x"}`), rpc.CodeForbidden)
		wantError(t, gateway.call(t, "appPasswords.list", ""), rpc.CodeForbidden)
		wantError(t, gateway.call(t, "appPasswords.authenticate", `{"login":"alice@example.com","password":"aaaa-bbbb-cccc-dddd","protocol":"imap"}`), rpc.CodeRejected)
		wantInvalid(t, gateway.call(t, "appPasswords.authenticate",
			`{"login":"alice@example.com","login":"bob@example.com","password":"aaaa-bbbb-cccc-dddd","protocol":"imap"}`), "login")
		admin := f.dialWS(t, adminSecret)
		wantInvalid(t, admin.call(t, "appPasswords.add",
			`{"appScope":"mail","appName":"x","user":{"contextId":1,"userId":6,"contextId":1,"login":"bob@example.com"}}`), "user.contextId")
		wantInvalid(t, admin.call(t, "appPasswords.list", ""), "user")
		viaApp := f.dialWS(t, f.token(alice, "app_password"))
		wantError(t, viaApp.call(t, "appPasswords.add", `{"appScope":"mail","appName":"x"}`), rpc.CodeForbidden)
		wantError(t, viaApp.call(t, "appPasswords.list", ""), rpc.CodeForbidden)
		// None of the refused adds added anything.
		if got := string(ok(t, user.call(t, "appPasswords.list", ""))); got != "[]" {
			t.Fatalf("list after refused calls = %s", got)
		}
		if got := string(ok(t, admin.call(t, "appPasswords.list", `{"user":{"contextId":1,"userId":6,"login":"bob@example.com"}}`))); got != "[]" {
			t.Fatalf("bob's list after refused calls = %s", got)
		}
	})

	t.Run("malformed messages keep the socket open", func(t *testing.T) {
		sock := f.dialWS(t, f.token(alice))
		for _, tc := range []struct{ msg, id string }{
			{`{"jsonrpc":"2.0","id":1,"method":`, "null"},
			{`not json`, "null"},
			{`[{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"},]`, "null"},
		} {
			sock.send(t, tc.msg)
			r := parseResponse(t, sock.read(t))
			wantError(t, r, rpc.CodeParseError)
			if string(r.ID) != tc.id {
				t.Fatalf("%s: id %s", tc.msg, r.ID)
			}
			ok(t, sock.call(t, "appPasswords.list", ""))
		}
		for _, tc := range []struct{ msg, id string }{
			{`{"jsonrpc":"1.0","id":5,"method":"appPasswords.list"}`, "5"},
			{`{"id":6,"method":"appPasswords.list"}`, "6"},
			{`{"jsonrpc":"2.0","id":7,"method":7}`, "7"},
			{`{"jsonrpc":"2.0","id":{},"method":"appPasswords.list"}`, "null"},
			{`{"jsonrpc":"2.0","method":1,"params":"bar"}`, "null"},
			{`{"foo":"boo"}`, "null"},
			{`[]`, "null"},
			{`42`, "null"},
		} {
			sock.send(t, tc.msg)
			r := parseResponse(t, sock.read(t))
			wantError(t, r, rpc.CodeInvalidRequest)
			if string(r.ID) != tc.id {
				t.Fatalf("%s: id %s, want %s", tc.msg, r.ID, tc.id)
			}
			ok(t, sock.call(t, "appPasswords.list", ""))
		}
		// A request carrying a "result" or "error" member is still a
		// request, answered as over HTTP.
		for _, extra := range []string{`"result":null`, `"error":{"code":1,"message":"x"}`} {
			sock.send(t, `{"jsonrpc":"2.0","id":"x","method":"appPasswords.getApps",`+extra+`}`)
			r := parseResponse(t, sock.read(t))
			if string(r.ID) != `"x"` {
				t.Fatalf("id %s", r.ID)
			}
			ok(t, r)
			ok(t, sock.call(t, "appPasswords.list", ""))
		}
	})

	t.Run("ids echoed", func(t *testing.T) {
		sock := f.dialWS(t, f.token(alice))
		for _, id := range []string{`"abc"`, `""`, `0`, `7`, `-7`, `1.5`, `2e3`, `null`,
			`9223372036854775807`, `9223372036854775808`, `18446744073709551615`, `18446744073709551616`} {
			sock.send(t, `{"jsonrpc":"2.0","id":`+id+`,"method":"appPasswords.getApps"}`)
			r := parseResponse(t, sock.read(t))
			ok(t, r)
			if string(r.ID) != id {
				t.Fatalf("id %s came back as %s", id, r.ID)
			}
			ok(t, sock.call(t, "appPasswords.list", ""))
		}
	})

	t.Run("batch", func(t *testing.T) {
		sock := f.dialWS(t, f.token(alice))
		sock.send(t, `[
			{"jsonrpc":"2.0","id":"a","method":"appPasswords.add","params":{"appScope":"caldav","appName":"batched"}},
			{"jsonrpc":"2.0","method":"appPasswords.getApps"},
			{"jsonrpc":"2.0","id":"b","method":"appPasswords.list"},
			{"jsonrpc":"2.0","id":"c","method":"appPasswords.nope"},
			1]`)
		rs := parseBatch(t, sock.read(t))
		var ids []string
		for _, r := range rs {
			ids = append(ids, string(r.ID))
			switch string(r.ID) {
			case `"a"`, `"b"`:
				ok(t, r)
			case `"c"`:
				wantError(t, r, rpc.CodeMethodNotFound)
			default:
				wantError(t, r, rpc.CodeInvalidRequest)
			}
		}
		slices.Sort(ids)
		if want := []string{`"a"`, `"b"`, `"c"`, "null"}; !slices.Equal(ids, want) {
			t.Fatalf("batch answer ids %v, want %v", ids, want)
		}
		if list := decode[[]listed](t, ok(t, sock.call(t, "appPasswords.list", ""))); len(list) != 1 || list[0].Name != "batched" {
			t.Fatalf("list after batch = %+v", list)
		}
	})

	t.Run("notifications are not answered", func(t *testing.T) {
		sock := f.dialWS(t, f.token(alice))
		for _, n := range []string{
			`{"jsonrpc":"2.0","method":"appPasswords.getApps"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.nope"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.add","params":{"appScope":"telnet","appName":"x"}}`,
			`[{"jsonrpc":"2.0","method":"appPasswords.list"},{"jsonrpc":"2.0","method":"appPasswords.nope"}]`,
		} {
			sock.send(t, n)
		}
		// Every message that comes back now must answer a call: an answer
		// to a notification would arrive first, and fail the id check.
		for range 3 {
			ok(t, sock.call(t, "appPasswords.list", ""))
		}
	})

	t.Run("concurrent calls on one socket", func(t *testing.T) {
		sock := f.dialWS(t, f.token(alice))
		const n = 8
		for i := range n {
			sock.send(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":"add-%d","method":"appPasswords.add","params":{"appScope":"webdav","appName":"w%d"}}`, i, i))
		}
		seen := map[string]bool{}
		for range n {
			r := parseResponse(t, sock.read(t))
			c := decode[created](t, ok(t, r))
			id := string(r.ID)
			if seen[id] || c.Name != "w"+strings.TrimSuffix(strings.TrimPrefix(id, `"add-`), `"`) {
				t.Fatalf("answer %s for %+v (seen %v)", id, c, seen)
			}
			seen[id] = true
		}
		if got := ok(t, sock.call(t, "appPasswords.removeAll", `{"appScope":"webdav"}`)); string(got) != fmt.Sprintf(`{"removed":%d}`, n) {
			t.Fatalf("removeAll = %s", got)
		}
	})

	t.Run("message over 1 MiB closes the socket", func(t *testing.T) {
		big := f.dialWS(t, f.token(alice))
		call := `{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"}`
		big.send(t, call+strings.Repeat(" ", rpc.MaxBodyBytes-len(call)+1))
		_ = big.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, msg, err := big.conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("after an oversized message: %q, %v; want close 1009", msg, err)
		}
		// Exactly 1 MiB is fine, and other sockets are unaffected.
		edge := f.dialWS(t, f.token(alice))
		edge.send(t, call+strings.Repeat(" ", rpc.MaxBodyBytes-len(call)))
		ok(t, parseResponse(t, edge.read(t)))
		ok(t, user.call(t, "appPasswords.list", ""))
	})
}

func TestWebSocketUpgradeRefused(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	expired := f.Tokens.Mint(alice, time.Hour, time.Now().Add(-2*time.Hour))
	for name, tc := range map[string]struct {
		query  string
		header http.Header
	}{
		"no token":                {"", nil},
		"empty access_token":      {"?access_token=", nil},
		"garbage bearer":          {"", http.Header{"Authorization": {"Bearer garbage"}}},
		"garbage access_token":    {"?access_token=garbage", nil},
		"expired bearer":          {"", http.Header{"Authorization": {"Bearer " + expired}}},
		"expired access_token":    {"?access_token=" + expired, nil},
		"token of another key":    {"?access_token=" + newFixture(t, fixtureOptions{}).token(alice), nil},
		"basic auth":              {"", http.Header{"Authorization": {"Basic Z3c6Z2F0ZXdheS1zZWNyZXQtMTIzNDU2"}}},
		"bad header, good query":  {"?access_token=" + f.token(alice), http.Header{"Authorization": {"Bearer garbage"}}},
		"gateway secret mistyped": {"?access_token=" + gatewaySecret + "x", nil},
	} {
		t.Run(name, func(t *testing.T) {
			f.refusedWS(t, f.wsURL(tc.query), tc.header)
		})
	}
}

// TestWebSocketTokenExpiry: a user token is checked on every call, so a
// socket outlives its token only as a dead line.
func TestWebSocketTokenExpiry(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	user := f.dialWS(t, f.token(alice)) // valid for an hour
	gateway := f.dialWS(t, gatewaySecret)
	c := decode[created](t, ok(t, user.call(t, "appPasswords.add", `{"appScope":"mail","appName":"phone"}`)))
	ok(t, user.call(t, "appPasswords.list", ""))

	f.authOffset.Store(int64(59 * time.Minute)) // not yet
	ok(t, user.call(t, "appPasswords.list", ""))

	f.authOffset.Store(int64(61 * time.Minute))
	for _, m := range []struct{ method, params string }{
		{"appPasswords.list", ""},
		{"appPasswords.getApps", ""},
		{"appPasswords.add", `{"appScope":"mail","appName":"too late"}`},
		{"appPasswords.remove", `{"uuid":"` + c.UUID + `"}`},
		{"appPasswords.removeAll", ""},
	} {
		wantError(t, user.call(t, m.method, m.params), rpc.CodeUnauthenticated)
	}
	// Batches on the socket too.
	user.send(t, `[{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"},{"jsonrpc":"2.0","id":2,"method":"appPasswords.remove","params":{"uuid":"`+c.UUID+`"}}]`)
	for _, r := range parseBatch(t, user.read(t)) {
		wantError(t, r, rpc.CodeUnauthenticated)
	}
	// Nothing happened: the password is still there and still works, for a
	// gateway, whose key does not expire.
	ok(t, gateway.call(t, "appPasswords.authenticate", `{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`))
	// The same token cannot open a new socket or make an HTTP call now.
	stale := f.Tokens.Mint(alice, time.Hour, time.Now())
	f.refusedWS(t, f.wsURL(""), http.Header{"Authorization": {"Bearer " + stale}})
	status, _ := f.post(t, "Bearer "+stale, request("appPasswords.list", ""))
	if status != http.StatusUnauthorized {
		t.Fatalf("HTTP call with the expired token: %d", status)
	}
	// A fresh token for the moved clock works.
	fresh := f.dialWS(t, f.Tokens.Mint(alice, time.Hour, time.Now().Add(61*time.Minute)))
	if list := decode[[]listed](t, ok(t, fresh.call(t, "appPasswords.list", ""))); len(list) != 1 || list[0].UUID != c.UUID {
		t.Fatalf("list = %+v", list)
	}
}
