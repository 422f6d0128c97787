package rpc

// JSON-RPC 2.0 over WebSocket: GET /rpc with an upgrade, through
// sourcegraph/jsonrpc2, with the limits a connection lives by.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/apppass/apppass"
)

// serveWebSocket upgrades GET /rpc to a JSON-RPC 2.0 connection.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	bearer := bearerFrom(r.Header.Get("Authorization"))
	if bearer == "" {
		bearer = r.URL.Query().Get("access_token")
	}
	// One request id for the connection; each call adds its JSON-RPC id.
	log := s.logger(r.Context())
	c, err := s.Auth.Authenticate(bearer)
	if err != nil {
		writeJSON(w, authStatus(err), errorResponse(nil, toRPCError(err, log, "")))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeJSON(w, http.StatusBadRequest, errorResponse(nil, newError(CodeInvalidRequest, "GET /rpc needs a WebSocket upgrade; use POST for plain HTTP")))
		return
	}
	owner, limit := socketOwner(c)
	if !s.countSocket(owner, limit) {
		writeJSON(w, http.StatusTooManyRequests, errorResponse(nil, newErrorData(CodeLimit,
			fmt.Sprintf("limit reached: at most %d WebSocket connections at once", limit), map[string]int{"maxConnections": limit})))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, http.Header{RequestIDHeader: w.Header().Values(RequestIDHeader)})
	if err != nil {
		s.uncountSocket(owner)
		return // the upgrader has answered
	}
	ws.SetReadLimit(MaxBodyBytes)
	idle := cmp.Or(s.SocketIdleTimeout, defaultSocketIdle)
	_ = ws.SetReadDeadline(time.Now().Add(idle))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(idle)) })
	connCtx := withLogger(context.Background(), log)
	stream := &socketStream{ws: ws, server: s, caller: c, ctx: connCtx, idle: idle}
	handler := jsonrpc2.HandlerWithError(func(ctx context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		var params json.RawMessage
		if req.Params != nil {
			params = *req.Params
		}
		if !req.Notif {
			ctx = withLogger(ctx, log.With("rpc_id", req.ID.String()))
		}
		result, rpcErr := s.call(ctx, c, req.Method, params)
		if rpcErr != nil {
			return nil, rpcErr
		}
		return result, nil
	}).SuppressErrClosed()
	conn := jsonrpc2.NewConn(connCtx, stream, serveConcurrently(s, handler),
		jsonrpc2.SetLogger(slogLogger{log}))
	stop := stream.keepAlive(idle)
	if !c.expires.IsZero() {
		// When the token expires the connection ends, saying why: a
		// client must not stay connected on a credential that ended.
		expiry := time.AfterFunc(time.Until(c.expires), func() {
			stream.closeWith(closeTokenExpired, "the token expired")
			conn.Close()
		})
		stop = append(stop, func() { expiry.Stop() })
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return
	}
	if s.sockets == nil {
		s.sockets = map[*jsonrpc2.Conn]struct{}{}
	}
	s.sockets[conn] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-conn.DisconnectNotify()
		for _, f := range stop {
			f()
		}
		s.mu.Lock()
		delete(s.sockets, conn)
		s.mu.Unlock()
		s.uncountSocket(owner)
	}()
}

// WebSocket limits: what one connection, and one caller, may hold.
const (
	// maxSocketCalls are the calls of one connection run at once; the
	// next message is not read until one ends (back-pressure: a client
	// that sends faster than it reads waits, it holds no more).
	maxSocketCalls = 4
	// socketWriteWait bounds one write to a client.
	socketWriteWait = 10 * time.Second
	// defaultSocketIdle: a connection with no message and no pong for this
	// long is closed; pings go out at a third of it.
	defaultSocketIdle = 90 * time.Second
	// maxSocketsPerUser and maxSocketsPerKey bound the connections one
	// user, and one service key, hold at once.
	maxSocketsPerUser = 16
	maxSocketsPerKey  = 1024
)

// Close codes the server ends a connection with (RFC 6455 leaves 4000 to
// 4999 to applications).
const (
	closeTokenExpired = 4001 // the token the connection opened with expired
)

// socketOwner is whose connections a caller's count toward, and how many
// they may hold.
func socketOwner(c caller) (string, int) {
	if c.Role == apppass.RoleUser {
		return fmt.Sprintf("user:%d:%d", c.User.ContextID, c.User.UserID), maxSocketsPerUser
	}
	return "key:" + c.Name, maxSocketsPerKey
}

func (s *Server) countSocket(owner string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.socketsOf[owner] >= limit {
		return false
	}
	if s.socketsOf == nil {
		s.socketsOf = map[string]int{}
	}
	s.socketsOf[owner]++
	return true
}

func (s *Server) uncountSocket(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.socketsOf[owner]--; s.socketsOf[owner] <= 0 {
		delete(s.socketsOf, owner)
	}
}

// CloseWebSockets waits for WebSocket calls in flight, then closes every
// WebSocket connection. http.Server.Shutdown does not see hijacked
// connections, so SIGTERM handling calls this after it.
func (s *Server) CloseWebSockets(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	conns := make([]*jsonrpc2.Conn, 0, len(s.sockets))
	for c := range s.sockets {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

type inflightHandler struct {
	s     *Server
	slots chan struct{}
	next  jsonrpc2.Handler
}

// serveConcurrently runs the calls of one connection in goroutines of
// their own, at most maxSocketCalls at once: past that, Handle waits, and
// with it the library's reading of the connection. Each call is counted
// from the moment it is read, so shutdown can wait for it; once shutdown
// began, a call is answered that the server is going away.
func serveConcurrently(s *Server, next jsonrpc2.Handler) jsonrpc2.Handler {
	return inflightHandler{s: s, slots: make(chan struct{}, maxSocketCalls), next: next}
}

func (h inflightHandler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	h.slots <- struct{}{}
	if !h.s.startCall() {
		<-h.slots
		if !req.Notif {
			_ = conn.ReplyWithError(ctx, req.ID, newError(CodeUnavailable, "the server is shutting down"))
		}
		return
	}
	go func() {
		defer func() { <-h.slots }()
		defer h.s.inflight.Done()
		h.next.Handle(ctx, conn, req)
	}()
}

// startCall counts a WebSocket call in, unless shutdown began (then
// CloseWebSockets is waiting for the count to drain, and may not see it
// grow).
func (s *Server) startCall() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.inflight.Add(1)
	return true
}

// socketStream is the WebSocket transport under jsonrpc2.Conn. The library
// cannot answer malformed messages or batches (it drops the connection), so
// the stream answers those itself, the same way POST /rpc does, and hands
// only well-formed single requests to the library.
type socketStream struct {
	ws      *websocket.Conn
	server  *Server
	caller  caller
	ctx     context.Context // carries the connection's logger
	idle    time.Duration
	writeMu sync.Mutex
}

func (t *socketStream) WriteObject(obj any) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	_ = t.ws.SetWriteDeadline(time.Now().Add(socketWriteWait))
	return t.ws.WriteJSON(obj)
}

// keepAlive pings the client every third of idle, so a connection whose
// peer went away ends at its read deadline; it returns what stops it.
func (t *socketStream) keepAlive(idle time.Duration) []func() {
	tick := time.NewTicker(idle / 3)
	done := make(chan struct{})
	go func() {
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := t.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(socketWriteWait)); err != nil {
					return
				}
			}
		}
	}()
	return []func(){func() { close(done) }}
}

// closeWith sends a close frame with code and reason.
func (t *socketStream) closeWith(code int, reason string) {
	_ = t.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(socketWriteWait))
}

func (t *socketStream) ReadObject(v any) error {
	for {
		_, msg, err := t.ws.ReadMessage()
		if err != nil {
			return err
		}
		_ = t.ws.SetReadDeadline(time.Now().Add(t.idle))
		if t.isPlainRequest(msg) {
			return json.Unmarshal(msg, v)
		}
		if !t.server.startCall() {
			return errors.New("the server is shutting down")
		}
		reply, ok := t.server.handleMessage(t.ctx, t.caller, msg)
		t.server.inflight.Done()
		if ok {
			if err := t.WriteObject(reply); err != nil {
				return err
			}
		}
	}
}

// isPlainRequest reports whether msg is a single request jsonrpc2 handles
// faithfully: valid envelope, "jsonrpc":"2.0", string method, no "result"
// or "error" member (jsonrpc2 drops the connection on those), a string id,
// an integer id jsonrpc2 can hold (0 to MaxInt64) or none (a null id is not
// a notification, but jsonrpc2 takes it for one), and params without a
// duplicate member name (jsonrpc2 decodes params into a map, which hides
// duplicates that POST /rpc refuses).
func (t *socketStream) isPlainRequest(msg []byte) bool {
	var env struct {
		envelope
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || msg[0] != '{' || json.Unmarshal(msg, &env) != nil {
		return false
	}
	var version, name string
	if json.Unmarshal(env.JSONRPC, &version) != nil || version != "2.0" ||
		len(env.Method) == 0 || env.Method[0] != '"' || json.Unmarshal(env.Method, &name) != nil {
		return false
	}
	if env.Result != nil || env.Error != nil || hasDuplicateKeys(env.Params) {
		return false
	}
	if env.ID == nil {
		return true
	}
	var n int64
	return env.ID[0] == '"' || (env.ID[0] >= '0' && env.ID[0] <= '9' && json.Unmarshal(env.ID, &n) == nil)
}

// hasDuplicateKeys reports whether an object anywhere in raw, which is
// valid JSON, names a member twice. It reads raw once, token by token.
func hasDuplicateKeys(raw json.RawMessage) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var objects []map[string]bool // one per open object or array (nil)
	inObject := func() bool { return len(objects) > 0 && objects[len(objects)-1] != nil }
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if expectKey {
			if tok == json.Delim('}') {
				objects = objects[:len(objects)-1]
				expectKey = inObject()
				continue
			}
			key, _ := tok.(string)
			if objects[len(objects)-1][key] {
				return true
			}
			objects[len(objects)-1][key] = true
			expectKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			objects = append(objects, map[string]bool{})
			expectKey = true
		case json.Delim('['):
			objects = append(objects, nil)
		case json.Delim(']'):
			objects = objects[:len(objects)-1]
			expectKey = inObject()
		default: // a scalar value
			expectKey = inObject()
		}
	}
}

func (t *socketStream) Close() error { return t.ws.Close() }

type slogLogger struct{ l *slog.Logger }

// Printf logs the library's message under "format" (a "msg" attribute
// would clash with slog's own message key in JSON).
func (l slogLogger) Printf(format string, v ...any) {
	l.l.Debug("jsonrpc2", "format", format, "args", v)
}
