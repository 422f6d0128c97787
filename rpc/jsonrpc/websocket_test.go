package jsonrpc_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/rpc/jsonrpc"
)

func TestWebSocket(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := f.DialWS(t, f.Token(Alice))
	userByQuery := f.DialWSQuery(t, f.Token(Alice))
	gateway := f.DialWS(t, GatewaySecret)
	gatewayByQuery := f.DialWSQuery(t, GatewaySecret)

	t.Run("UI flow", func(t *testing.T) {
		if apps := Decode[[]map[string]any](t, OK(t, user.Call(t, "appPasswords.getApps", ""))); len(apps) != 7 {
			t.Fatalf("getApps: %d apps", len(apps))
		}
		rawC := OK(t, user.Call(t, "appPasswords.add", `{"appScope":"mail","appName":"phone"}`))
		WantKeys(t, rawC, "uuid", "login", "password", "newLogin", "appScope", "name", "created", "expires", "idleExpiry", "allowedIPs", "settings")
		c := Decode[Created](t, rawC)
		if !PasswordRE.MatchString(c.Password) || c.Login != Alice.Login || c.NewLogin || len(c.Settings) == 0 {
			t.Fatalf("add = %+v", c)
		}
		// The other socket, authenticated by ?access_token=, sees it.
		rawList := OK(t, userByQuery.Call(t, "appPasswords.list", ""))
		if strings.Contains(string(rawList), c.Password) {
			t.Fatalf("list reveals the password: %s", rawList)
		}
		list := Decode[[]Listed](t, rawList)
		if len(list) != 1 || list[0].UUID != c.UUID || list[0].LastLogin != nil {
			t.Fatalf("list = %+v", list)
		}
		// The gateway logs in with it.
		for _, g := range []*WSClient{gateway, gatewayByQuery} {
			a := Decode[Authenticated](t, OK(t, g.Call(t, "appPasswords.authenticate",
				`{"login":"ALICE@example.com","password":"`+strings.ToUpper(c.Password)+`","protocol":"imap","ip":"198.51.100.1"}`)))
			if a.UUID != c.UUID || a.ContextID != 1 || a.UserID != 5 || a.Login != Alice.Login || a.AppScope != "mail" || len(a.Scopes) == 0 {
				t.Fatalf("authenticate = %+v", a)
			}
		}
		list = Decode[[]Listed](t, OK(t, user.Call(t, "appPasswords.list", "")))
		if list[0].LastLogin == nil || list[0].LastLogin.IP != "198.51.100.1" {
			t.Fatalf("lastLogin = %+v", list[0].LastLogin)
		}
		if got := OK(t, user.Call(t, "appPasswords.remove", `{"uuid":"`+c.UUID+`"}`)); string(got) != `{"result":"OK"}` {
			t.Fatalf("remove = %s", got)
		}
		WantError(t, gateway.Call(t, "appPasswords.authenticate",
			`{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`), errcode.Rejected)
		f.Add(t, f.Token(Alice), "eas", "a")
		f.Add(t, f.Token(Alice), "eas", "b")
		if got := OK(t, userByQuery.Call(t, "appPasswords.removeAll", `{"appScope":"eas"}`)); string(got) != `{"removed":2}` {
			t.Fatalf("removeAll = %s", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		d := WantInvalid(t, user.Call(t, "appPasswords.add", `{"appScope":"telnet","appName":"x"}`), "appScope")
		if d.OX != "ASP-0002" {
			t.Fatalf("data.ox = %q", d.OX)
		}
		WantInvalid(t, user.Call(t, "appPasswords.add", `{"appScope":"mail","appName":{"$ne":""}}`), "appName")
		WantInvalid(t, user.Call(t, "appPasswords.add", `{"appScope":"mail","appName":"x","extra":1}`), "extra")
		WantInvalid(t, user.Call(t, "appPasswords.add", `["mail","x"]`), "params")
		WantInvalid(t, user.Call(t, "appPasswords.add", `{"appScope":"mail","appScope":"telnet","appName":"x"}`), "appScope")
		WantInvalid(t, user.Call(t, "appPasswords.add", `{"appScope":"telnet","appScope":"mail","appName":"x"}`), "appScope")
		WantInvalid(t, user.Call(t, "appPasswords.remove", `{"uuid":"nope"}`), "uuid")
		WantError(t, user.Call(t, "appPasswords.remove", `{"uuid":"00000000-0000-4000-8000-000000000000"}`), errcode.NotFound)
		WantError(t, user.Call(t, "appPasswords.nope", ""), errcode.MethodNotFound)
		WantError(t, user.Call(t, "appPasswords.authenticate", `{"login":"a","password":"b","protocol":"imap"}`), errcode.Forbidden)
		WantError(t, user.Call(t, "appPasswords.list", `{"user":{"contextId":1,"userId":6,"login":"bob@example.com"}}`), errcode.Forbidden)
		WantError(t, gateway.Call(t, "appPasswords.add", `{"appScope":"mail","appName":"x"}`), errcode.Forbidden)
		WantError(t, gateway.Call(t, "appPasswords.list", ""), errcode.Forbidden)
		WantError(t, gateway.Call(t, "appPasswords.authenticate", `{"login":"alice@example.com","password":"aaaa-bbbb-cccc-dddd","protocol":"imap"}`), errcode.Rejected)
		WantInvalid(t, gateway.Call(t, "appPasswords.authenticate",
			`{"login":"alice@example.com","login":"bob@example.com","password":"aaaa-bbbb-cccc-dddd","protocol":"imap"}`), "login")
		admin := f.DialWS(t, AdminSecret)
		WantInvalid(t, admin.Call(t, "appPasswords.add",
			`{"appScope":"mail","appName":"x","user":{"contextId":1,"userId":6,"contextId":1,"login":"bob@example.com"}}`), "user.contextId")
		WantInvalid(t, admin.Call(t, "appPasswords.list", ""), "user")
		viaApp := f.DialWS(t, f.Token(Alice, "app_password"))
		WantError(t, viaApp.Call(t, "appPasswords.add", `{"appScope":"mail","appName":"x"}`), errcode.Forbidden)
		WantError(t, viaApp.Call(t, "appPasswords.list", ""), errcode.Forbidden)
		// None of the refused adds added anything.
		if got := string(OK(t, user.Call(t, "appPasswords.list", ""))); got != "[]" {
			t.Fatalf("list after refused calls = %s", got)
		}
		if got := string(OK(t, admin.Call(t, "appPasswords.list", `{"user":{"contextId":1,"userId":6,"login":"bob@example.com"}}`))); got != "[]" {
			t.Fatalf("bob's list after refused calls = %s", got)
		}
	})

	t.Run("malformed messages keep the socket open", func(t *testing.T) {
		sock := f.DialWS(t, f.Token(Alice))
		for _, tc := range []struct{ msg, id string }{
			{`{"jsonrpc":"2.0","id":1,"method":`, "null"},
			{`not json`, "null"},
			{`[{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"},]`, "null"},
		} {
			sock.Send(t, tc.msg)
			r := ParseResponse(t, sock.Read(t))
			WantError(t, r, errcode.ParseError)
			if string(r.ID) != tc.id {
				t.Fatalf("%s: id %s", tc.msg, r.ID)
			}
			OK(t, sock.Call(t, "appPasswords.list", ""))
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
			sock.Send(t, tc.msg)
			r := ParseResponse(t, sock.Read(t))
			WantError(t, r, errcode.InvalidRequest)
			if string(r.ID) != tc.id {
				t.Fatalf("%s: id %s, want %s", tc.msg, r.ID, tc.id)
			}
			OK(t, sock.Call(t, "appPasswords.list", ""))
		}
		// A request carrying a "result" or "error" member is still a
		// request, answered as over HTTP.
		for _, extra := range []string{`"result":null`, `"error":{"code":1,"message":"x"}`} {
			sock.Send(t, `{"jsonrpc":"2.0","id":"x","method":"appPasswords.getApps",`+extra+`}`)
			r := ParseResponse(t, sock.Read(t))
			if string(r.ID) != `"x"` {
				t.Fatalf("id %s", r.ID)
			}
			OK(t, r)
			OK(t, sock.Call(t, "appPasswords.list", ""))
		}
	})

	t.Run("ids echoed", func(t *testing.T) {
		sock := f.DialWS(t, f.Token(Alice))
		for _, id := range []string{`"abc"`, `""`, `0`, `7`, `-7`, `1.5`, `2e3`, `null`,
			`9223372036854775807`, `9223372036854775808`, `18446744073709551615`, `18446744073709551616`} {
			sock.Send(t, `{"jsonrpc":"2.0","id":`+id+`,"method":"appPasswords.getApps"}`)
			r := ParseResponse(t, sock.Read(t))
			OK(t, r)
			if string(r.ID) != id {
				t.Fatalf("id %s came back as %s", id, r.ID)
			}
			OK(t, sock.Call(t, "appPasswords.list", ""))
		}
	})

	t.Run("batch", func(t *testing.T) {
		sock := f.DialWS(t, f.Token(Alice))
		sock.Send(t, `[
			{"jsonrpc":"2.0","id":"a","method":"appPasswords.add","params":{"appScope":"caldav","appName":"batched"}},
			{"jsonrpc":"2.0","method":"appPasswords.getApps"},
			{"jsonrpc":"2.0","id":"b","method":"appPasswords.list"},
			{"jsonrpc":"2.0","id":"c","method":"appPasswords.nope"},
			1]`)
		rs := ParseBatch(t, sock.Read(t))
		var ids []string
		for _, r := range rs {
			ids = append(ids, string(r.ID))
			switch string(r.ID) {
			case `"a"`, `"b"`:
				OK(t, r)
			case `"c"`:
				WantError(t, r, errcode.MethodNotFound)
			default:
				WantError(t, r, errcode.InvalidRequest)
			}
		}
		slices.Sort(ids)
		if want := []string{`"a"`, `"b"`, `"c"`, "null"}; !slices.Equal(ids, want) {
			t.Fatalf("batch answer ids %v, want %v", ids, want)
		}
		if list := Decode[[]Listed](t, OK(t, sock.Call(t, "appPasswords.list", ""))); len(list) != 1 || list[0].Name != "batched" {
			t.Fatalf("list after batch = %+v", list)
		}
	})

	t.Run("notifications are not answered", func(t *testing.T) {
		sock := f.DialWS(t, f.Token(Alice))
		for _, n := range []string{
			`{"jsonrpc":"2.0","method":"appPasswords.getApps"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.nope"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.add","params":{"appScope":"telnet","appName":"x"}}`,
			`[{"jsonrpc":"2.0","method":"appPasswords.list"},{"jsonrpc":"2.0","method":"appPasswords.nope"}]`,
		} {
			sock.Send(t, n)
		}
		// Every message that comes back now must answer a call: an answer
		// to a notification would arrive first, and fail the id check.
		for range 3 {
			OK(t, sock.Call(t, "appPasswords.list", ""))
		}
	})

	t.Run("concurrent calls on one socket", func(t *testing.T) {
		sock := f.DialWS(t, f.Token(Alice))
		const n = 8
		for i := range n {
			sock.Send(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":"add-%d","method":"appPasswords.add","params":{"appScope":"webdav","appName":"w%d"}}`, i, i))
		}
		seen := map[string]bool{}
		for range n {
			r := ParseResponse(t, sock.Read(t))
			c := Decode[Created](t, OK(t, r))
			id := string(r.ID)
			if seen[id] || c.Name != "w"+strings.TrimSuffix(strings.TrimPrefix(id, `"add-`), `"`) {
				t.Fatalf("answer %s for %+v (seen %v)", id, c, seen)
			}
			seen[id] = true
		}
		if got := OK(t, sock.Call(t, "appPasswords.removeAll", `{"appScope":"webdav"}`)); string(got) != fmt.Sprintf(`{"removed":%d}`, n) {
			t.Fatalf("removeAll = %s", got)
		}
	})

	t.Run("message over 1 MiB closes the socket", func(t *testing.T) {
		big := f.DialWS(t, f.Token(Alice))
		call := `{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"}`
		big.Send(t, call+strings.Repeat(" ", jsonrpc.MaxBodyBytes-len(call)+1))
		_ = big.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, msg, err := big.Conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("after an oversized message: %q, %v; want close 1009", msg, err)
		}
		// Exactly 1 MiB is fine, and other sockets are unaffected.
		edge := f.DialWS(t, f.Token(Alice))
		edge.Send(t, call+strings.Repeat(" ", jsonrpc.MaxBodyBytes-len(call)))
		OK(t, ParseResponse(t, edge.Read(t)))
		OK(t, user.Call(t, "appPasswords.list", ""))
	})
}

func TestWebSocketUpgradeRefused(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	expired := f.Tokens.Mint(Alice, time.Hour, time.Now().Add(-2*time.Hour))
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
		"token of another key":    {"?access_token=" + NewFixture(t, FixtureOptions{}).Token(Alice), nil},
		"basic auth":              {"", http.Header{"Authorization": {"Basic Z3c6Z2F0ZXdheS1zZWNyZXQtMTIzNDU2"}}},
		"bad header, good query":  {"?access_token=" + f.Token(Alice), http.Header{"Authorization": {"Bearer garbage"}}},
		"gateway secret mistyped": {"?access_token=" + GatewaySecret + "x", nil},
	} {
		t.Run(name, func(t *testing.T) {
			f.RefusedWS(t, f.WSURL(tc.query), tc.header)
		})
	}
}

// TestWebSocketTokenExpiry: a user token is checked on every call, so a
// socket outlives its token only as a dead line.
func TestWebSocketTokenExpiry(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := f.DialWS(t, f.Token(Alice)) // valid for an hour
	gateway := f.DialWS(t, GatewaySecret)
	c := Decode[Created](t, OK(t, user.Call(t, "appPasswords.add", `{"appScope":"mail","appName":"phone"}`)))
	OK(t, user.Call(t, "appPasswords.list", ""))

	f.AuthOffset.Store(int64(59 * time.Minute)) // not yet
	OK(t, user.Call(t, "appPasswords.list", ""))

	f.AuthOffset.Store(int64(61 * time.Minute))
	for _, m := range []struct{ method, params string }{
		{"appPasswords.list", ""},
		{"appPasswords.getApps", ""},
		{"appPasswords.add", `{"appScope":"mail","appName":"too late"}`},
		{"appPasswords.remove", `{"uuid":"` + c.UUID + `"}`},
		{"appPasswords.removeAll", ""},
	} {
		WantError(t, user.Call(t, m.method, m.params), errcode.Unauthenticated)
	}
	// Batches on the socket too.
	user.Send(t, `[{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"},{"jsonrpc":"2.0","id":2,"method":"appPasswords.remove","params":{"uuid":"`+c.UUID+`"}}]`)
	for _, r := range ParseBatch(t, user.Read(t)) {
		WantError(t, r, errcode.Unauthenticated)
	}
	// Nothing happened: the password is still there and still works, for a
	// gateway, whose key does not expire.
	OK(t, gateway.Call(t, "appPasswords.authenticate", `{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`))
	// The same token cannot open a new socket or make an HTTP call now.
	stale := f.Tokens.Mint(Alice, time.Hour, time.Now())
	f.RefusedWS(t, f.WSURL(""), http.Header{"Authorization": {"Bearer " + stale}})
	status, _ := f.Post(t, "Bearer "+stale, Request("appPasswords.list", ""))
	if status != http.StatusUnauthorized {
		t.Fatalf("HTTP call with the expired token: %d", status)
	}
	// A fresh token for the moved clock works.
	fresh := f.DialWS(t, f.Tokens.Mint(Alice, time.Hour, time.Now().Add(61*time.Minute)))
	if list := Decode[[]Listed](t, OK(t, fresh.Call(t, "appPasswords.list", ""))); len(list) != 1 || list[0].UUID != c.UUID {
		t.Fatalf("list = %+v", list)
	}
}

// TestWebSocketClosesAtTokenExpiry: the server ends a user's connection
// when its token expires, with close code 4001.
func TestWebSocketClosesAtTokenExpiry(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	c := f.DialWS(t, f.Tokens.Mint(Alice, 2*time.Second, time.Now()))
	OK(t, c.Call(t, "appPasswords.list", ""))
	_ = c.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _, err := c.Conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "the token expired" {
		t.Fatalf("read after the token expired: %v, want close 4001 \"the token expired\"", err)
	}
	// A gateway's socket has no token to expire.
	g := f.DialWS(t, GatewaySecret)
	OK(t, g.Call(t, "rpc.discover", ""))
}

// TestWebSocketBackPressure: a client sending thousands of calls without
// reading the answers holds a few calls in flight, not thousands: the
// server stops reading until it may write again.
func TestWebSocketBackPressure(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	c := f.DialWS(t, GatewaySecret)
	before := runtime.NumGoroutine()
	sent := make(chan int, 1)
	go func() {
		n := 0
		_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		for ; n < 20000; n++ {
			if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"rpc.discover"}`, n))); err != nil {
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
	_ = c.Conn.SetWriteDeadline(time.Time{})
	for range 10 {
		c.Read(t)
	}
}

// TestWebSocketIdle: a client that answers no ping is cut off at the idle
// deadline; one that reads (so its library answers pings) stays.
func TestWebSocketIdle(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	f.Server.SocketIdleTimeout = 600 * time.Millisecond
	deaf := f.DialWS(t, GatewaySecret)
	alive := f.DialWS(t, GatewaySecret)
	readErr := make(chan error, 1)
	go func() {
		_ = alive.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := alive.Conn.ReadMessage() // answers pings while it waits
		readErr <- err
	}()
	time.Sleep(2 * time.Second)
	// The deaf one never read, so never answered a ping: closed.
	_ = deaf.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := deaf.Conn.ReadMessage(); err == nil {
		t.Error("the connection that answered no ping got a message")
	} else if ne, isNet := err.(interface{ Timeout() bool }); isNet && ne.Timeout() {
		t.Errorf("the connection that answered no ping is still open: %v", err)
	}
	select {
	case err := <-readErr:
		t.Fatalf("the connection that answered pings was closed: %v", err)
	default:
	}
	alive.Send(t, `{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}`)
	if err := <-readErr; err != nil {
		t.Fatalf("the connection that answered pings: %v", err)
	}
}

// TestWebSocketConnectionCap: a user holds at most 16 sockets at once; the
// 17th is refused with 429 and -32029 until one closes.
func TestWebSocketConnectionCap(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	token := f.Token(Alice)
	var open []*WSClient
	for range 16 {
		open = append(open, f.DialWS(t, token))
	}
	conn, resp, err := websocket.DefaultDialer.Dial(f.WSURL(""), http.Header{"Authorization": {"Bearer " + token}})
	if err == nil {
		conn.Close()
		t.Fatal("a 17th socket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a 17th socket: %v %+v, want HTTP 429", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	WantError(t, ParseResponse(t, body), errcode.Limit)
	// Another user is not held back.
	OK(t, f.DialWS(t, f.Token(Bob)).Call(t, "appPasswords.list", ""))
	// Closing one makes room (once the server has seen it close).
	open[0].Conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, _, err := websocket.DefaultDialer.Dial(f.WSURL(""), http.Header{"Authorization": {"Bearer " + token}})
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
