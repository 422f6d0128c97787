package main

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass/rpc/client"
)

// caller makes JSON-RPC calls with one bearer over one transport: a
// *client.Client over HTTP, or a *wsCaller.
type caller interface {
	Call(ctx context.Context, method string, params, out any) error
}

// newHTTPClient returns keep-alive connections enough for conns workers,
// shared by the callers of one load.
func newHTTPClient(conns int) *http.Client {
	return client.HTTPClient(&http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2}, 0)
}

// httpCaller calls the /rpc of the server at url with bearer over hc.
func httpCaller(url, bearer string, hc *http.Client) *client.Client {
	return &client.Client{URL: url + "/rpc", Bearer: bearer, HTTP: hc}
}

// wsCaller makes calls one at a time over its own WebSocket. Only the
// bench speaks WebSocket, so the client package links no WebSocket code
// into the CLI and the gateway.
type wsCaller struct {
	conn *websocket.Conn
	id   atomic.Int64
}

func dialWS(url, bearer string) (*wsCaller, error) {
	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(url, "http", "ws", 1)+"/rpc",
		http.Header{"Authorization": {"Bearer " + bearer}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(client.DefaultMaxReply)
	return &wsCaller{conn: conn}, nil
}

func (c *wsCaller) Call(ctx context.Context, method string, params, out any) error {
	id := c.id.Add(1)
	req, err := client.MarshalRequest(id, method, params)
	if err != nil {
		return err
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, req); err != nil {
		return err
	}
	_, raw, err := c.conn.ReadMessage()
	if err != nil {
		return err
	}
	return client.DecodeReply(raw, id, method, out)
}

func (c *wsCaller) Close() error { return c.conn.Close() }

// closeAll closes the callers that hold a connection of their own.
func closeAll(cs []caller) {
	for _, c := range cs {
		if ws, ok := c.(*wsCaller); ok {
			ws.Close()
		}
	}
}
