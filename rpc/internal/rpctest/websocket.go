package rpctest

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc/errcode"
)

// wsClient is a raw WebSocket client: it sends the exact bytes a test
// chooses and reads the exact bytes the server answers.
type WSClient struct {
	Conn   *websocket.Conn
	NextID int
}

func (f *Fixture) WSURL(query string) string {
	return "ws" + strings.TrimPrefix(f.URL, "http") + "/rpc" + query
}

// dialWS opens a socket with "Authorization: Bearer <bearer>".
func (f *Fixture) DialWS(t testing.TB, bearer string) *WSClient {
	t.Helper()
	return f.DialWSAt(t, f.WSURL(""), http.Header{"Authorization": {"Bearer " + bearer}})
}

// dialWSQuery opens a socket with ?access_token=<token>.
func (f *Fixture) DialWSQuery(t testing.TB, token string) *WSClient {
	t.Helper()
	return f.DialWSAt(t, f.WSURL("?access_token="+token), nil)
}

func (f *Fixture) DialWSAt(t testing.TB, url string, header http.Header) *WSClient {
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
	return &WSClient{Conn: conn, NextID: 100}
}

// refusedWS dials and expects the upgrade to be refused with HTTP 401 and
// a JSON-RPC -32001 body.
func (f *Fixture) RefusedWS(t testing.TB, url string, header http.Header) {
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
	WantError(t, ParseResponse(t, body), errcode.Unauthenticated)
}

func (c *WSClient) Send(t testing.TB, msg string) {
	t.Helper()
	if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read waits for the next message. The deadline only keeps a broken
// server from hanging the test; it is not a speed requirement.
func (c *WSClient) Read(t testing.TB) []byte {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, msg, err := c.Conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return msg
}

// call sends one request with a fresh numeric id and reads its answer.
func (c *WSClient) Call(t testing.TB, method, params string) Response {
	t.Helper()
	c.NextID++
	id := strconv.Itoa(c.NextID)
	m, _ := json.Marshal(method)
	msg := `{"jsonrpc":"2.0","id":` + id + `,"method":` + string(m)
	if params != "" {
		msg += `,"params":` + params
	}
	c.Send(t, msg+"}")
	r := ParseResponse(t, c.Read(t))
	if string(r.ID) != id {
		t.Fatalf("%s: answer has id %s, want %s", method, r.ID, id)
	}
	return r
}
