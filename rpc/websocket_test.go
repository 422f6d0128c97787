package rpc_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
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

// TestWebSocketClosesAtTokenExpiry: the server ends a user's connection
// when its token expires, with close code 4001.
func TestWebSocketClosesAtTokenExpiry(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.dialWS(t, f.Tokens.Mint(alice, 2*time.Second, time.Now()))
	ok(t, c.call(t, "appPasswords.list", ""))
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _, err := c.conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "the token expired" {
		t.Fatalf("read after the token expired: %v, want close 4001 \"the token expired\"", err)
	}
	// A gateway's socket has no token to expire.
	g := f.dialWS(t, gatewaySecret)
	ok(t, g.call(t, "rpc.discover", ""))
}

// TestWebSocketBackPressure: a client sending thousands of calls without
// reading the answers holds a few calls in flight, not thousands: the
// server stops reading until it may write again.
func TestWebSocketBackPressure(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.dialWS(t, gatewaySecret)
	before := runtime.NumGoroutine()
	sent := make(chan int, 1)
	go func() {
		n := 0
		_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		for ; n < 20000; n++ {
			if err := c.conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"rpc.discover"}`, n))); err != nil {
				break
			}
		}
		sent <- n
	}()
	n := <-sent // (the kernel's socket buffers take them in)
	time.Sleep(200 * time.Millisecond)
	during := runtime.NumGoroutine()
	if during-before > 50 {
		t.Errorf("goroutines went from %d to %d with %d calls sent and none read", before, during, n)
	}
	t.Logf("%d calls sent, none read: goroutines %d -> %d", n, before, during)
	// Reading lets it go on.
	_ = c.conn.SetWriteDeadline(time.Time{})
	for range 10 {
		c.read(t)
	}
}

// TestWebSocketIdle: a client that answers no ping is cut off at the idle
// deadline; one that reads (so its library answers pings) stays.
func TestWebSocketIdle(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.Server.SocketIdleTimeout = 600 * time.Millisecond
	deaf := f.dialWS(t, gatewaySecret)
	alive := f.dialWS(t, gatewaySecret)
	readErr := make(chan error, 1)
	go func() {
		_ = alive.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := alive.conn.ReadMessage() // answers pings while it waits
		readErr <- err
	}()
	time.Sleep(2 * time.Second)
	// The deaf one never read, so never answered a ping: closed.
	_ = deaf.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := deaf.conn.ReadMessage(); err == nil {
		t.Error("the connection that answered no ping got a message")
	} else if ne, isNet := err.(interface{ Timeout() bool }); isNet && ne.Timeout() {
		t.Errorf("the connection that answered no ping is still open: %v", err)
	}
	select {
	case err := <-readErr:
		t.Fatalf("the connection that answered pings was closed: %v", err)
	default:
	}
	alive.send(t, `{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}`)
	if err := <-readErr; err != nil {
		t.Fatalf("the connection that answered pings: %v", err)
	}
}

// TestWebSocketConnectionCap: a user holds at most 16 sockets at once; the
// 17th is refused with 429 and -32029 until one closes.
func TestWebSocketConnectionCap(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	token := f.token(alice)
	var open []*wsClient
	for range 16 {
		open = append(open, f.dialWS(t, token))
	}
	conn, resp, err := websocket.DefaultDialer.Dial(f.wsURL(""), http.Header{"Authorization": {"Bearer " + token}})
	if err == nil {
		conn.Close()
		t.Fatal("a 17th socket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a 17th socket: %v %+v, want HTTP 429", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, parseResponse(t, body), rpc.CodeLimit)
	// Another user is not held back.
	ok(t, f.dialWS(t, f.token(bob)).call(t, "appPasswords.list", ""))
	// Closing one makes room (once the server has seen it close).
	open[0].conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, _, err := websocket.DefaultDialer.Dial(f.wsURL(""), http.Header{"Authorization": {"Bearer " + token}})
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a socket closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
