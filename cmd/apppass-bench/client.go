package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// rpcError is a JSON-RPC error answer.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

type reply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpcError       `json:"error"`
}

// caller makes JSON-RPC calls with one bearer over one transport.
type caller interface {
	call(ctx context.Context, method string, params any, out any) error
	close()
}

// httpCaller posts each call on a shared keep-alive client.
type httpCaller struct {
	url    string
	bearer string
	client *http.Client
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2}}
}

func (c *httpCaller) call(ctx context.Context, method string, params any, out any) error {
	raw, err := c.raw(ctx, method, params)
	if err != nil {
		return err
	}
	return decodeReply(raw, out)
}

// raw posts one call and returns the answer's body as it came.
func (c *httpCaller) raw(ctx context.Context, method string, params any) ([]byte, error) {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.url+"/rpc", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func (c *httpCaller) close() {}

// wsCaller makes calls one at a time over its own WebSocket.
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
	return &wsCaller{conn: conn}, nil
}

func (c *wsCaller) call(ctx context.Context, method string, params any, out any) error {
	id := c.id.Add(1)
	if err := c.conn.WriteJSON(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params}); err != nil {
		return err
	}
	_, raw, err := c.conn.ReadMessage()
	if err != nil {
		return err
	}
	return decodeReply(raw, out)
}

func (c *wsCaller) close() { c.conn.Close() }

func decodeReply(raw []byte, out any) error {
	var r reply
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("bad reply %q: %w", raw, err)
	}
	if r.Error != nil {
		return r.Error
	}
	if out != nil {
		return json.Unmarshal(r.Result, out)
	}
	return nil
}
