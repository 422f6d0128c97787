package jsonrpc

// JSON-RPC 2.0 over WebSocket: GET /rpc with an upgrade. Each message is
// parsed and dispatched as a POST /rpc body is (handleMessage); this file
// adds the limits a connection lives by.

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/rpc/internal/edge"
)

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

// Sockets are the open WebSocket connections of one server, each caller's
// count of them, and the calls they are serving: what shutdown waits for
// and then closes. The zero value is ready.
type Sockets struct {
	mu   sync.Mutex
	open map[*socket]struct{}
	// of counts each caller's open connections.
	of       map[string]int
	closing  bool
	inflight sync.WaitGroup // calls being served
}

// ServeWebSocket upgrades GET /rpc to a JSON-RPC 2.0 connection.
func (h Handler) ServeWebSocket(w http.ResponseWriter, r *http.Request) {
	bearer := edge.BearerFrom(r.Header.Get("Authorization"))
	if bearer == "" {
		bearer = r.URL.Query().Get("access_token")
	}
	// One request id for the connection; each call adds its JSON-RPC id.
	log := h.logger(r.Context())
	c, err := h.Auth.Identify(bearer)
	if err != nil {
		edge.WriteJSON(w, edge.AuthStatus(err), errorResponse(nil, ToError(err, log, "")))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		edge.WriteJSON(w, http.StatusBadRequest, errorResponse(nil, newError(errcode.InvalidRequest, "GET /rpc needs a WebSocket upgrade; use POST for plain HTTP")))
		return
	}
	ss := h.Sockets
	owner, limit := socketOwner(c)
	if !ss.count(owner, limit) {
		edge.WriteJSON(w, http.StatusTooManyRequests, errorResponse(nil, newErrorData(errcode.Limit,
			fmt.Sprintf("limit reached: at most %d WebSocket connections at once", limit), map[string]int{"maxConnections": limit})))
		return
	}
	upgrader := websocket.Upgrader{CheckOrigin: h.CheckOrigin}
	ws, err := upgrader.Upgrade(w, r, http.Header{edge.RequestIDHeader: w.Header().Values(edge.RequestIDHeader)})
	if err != nil {
		ss.uncount(owner)
		return // the upgrader has answered
	}
	ws.SetReadLimit(MaxBodyBytes)
	idle := cmp.Or(h.SocketIdleTimeout, defaultSocketIdle)
	_ = ws.SetReadDeadline(time.Now().Add(idle))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(idle)) })
	sock := &socket{ws: ws, handler: h, caller: c, ctx: edge.WithLogger(context.Background(), log), idle: idle}
	stop := sock.keepAlive(idle)
	if !c.Expires.IsZero() {
		// When the token expires the connection ends, saying why: a
		// client must not stay connected on a credential that ended.
		expiry := time.AfterFunc(time.Until(c.Expires), func() {
			sock.closeWith(closeTokenExpired, "the token expired")
			_ = sock.Close()
		})
		stop = append(stop, func() { expiry.Stop() })
	}
	end := func() {
		for _, f := range stop {
			f()
		}
		ss.mu.Lock()
		delete(ss.open, sock)
		ss.mu.Unlock()
		ss.uncount(owner)
	}
	ss.mu.Lock()
	if ss.closing {
		ss.mu.Unlock()
		_ = sock.Close()
		end()
		return
	}
	if ss.open == nil {
		ss.open = map[*socket]struct{}{}
	}
	ss.open[sock] = struct{}{}
	ss.mu.Unlock()
	// The connection is served on a goroutine of its own, so this handler
	// returns (and the upgrade's access line is logged) at once.
	go func() {
		sock.serve()
		end()
	}()
}

// socketOwner is whose connections a caller's count toward, and how many
// they may hold.
func socketOwner(c edge.Caller) (string, int) {
	if c.Role == apppass.RoleUser {
		return fmt.Sprintf("user:%d:%d", c.User.ContextID, c.User.UserID), maxSocketsPerUser
	}
	return "key:" + c.Name, maxSocketsPerKey
}

func (ss *Sockets) count(owner string, limit int) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.of[owner] >= limit {
		return false
	}
	if ss.of == nil {
		ss.of = map[string]int{}
	}
	ss.of[owner]++
	return true
}

func (ss *Sockets) uncount(owner string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.of[owner]--; ss.of[owner] <= 0 {
		delete(ss.of, owner)
	}
}

// Close waits for WebSocket calls in flight, then closes every WebSocket
// connection. http.Server.Shutdown does not see hijacked connections, so
// SIGTERM handling calls this after it.
func (ss *Sockets) Close(ctx context.Context) {
	ss.mu.Lock()
	ss.closing = true
	conns := make([]*socket, 0, len(ss.open))
	for c := range ss.open {
		conns = append(conns, c)
	}
	ss.mu.Unlock()
	done := make(chan struct{})
	go func() { ss.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// startCall counts a WebSocket call in, unless shutdown began (then Close
// is waiting for the count to drain, and may not see it grow).
func (ss *Sockets) startCall() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return false
	}
	ss.inflight.Add(1)
	return true
}

// socket is one WebSocket connection: it reads one message at a time and
// hands it to handleMessage, the same parser and dispatcher POST /rpc
// uses, at most maxSocketCalls at once.
type socket struct {
	ws      *websocket.Conn
	handler Handler
	caller  edge.Caller
	ctx     context.Context // carries the connection's logger
	idle    time.Duration
	writeMu sync.Mutex
}

// serve reads messages until the connection ends. Each message is
// served on a goroutine of its own, holding one of maxSocketCalls slots:
// with all taken, the next message is not read until a call ends. Each
// call is counted from the moment it is read, so shutdown can wait for
// it; once shutdown began, a call is answered that the server is going
// away.
func (t *socket) serve() {
	defer t.Close()
	ss := t.handler.Sockets
	slots := make(chan struct{}, maxSocketCalls)
	for {
		_, msg, err := t.ws.ReadMessage()
		if err != nil {
			return
		}
		_ = t.ws.SetReadDeadline(time.Now().Add(t.idle))
		slots <- struct{}{}
		if !ss.startCall() {
			<-slots
			if id, notification := requestID(msg); !notification {
				t.reply(errorResponse(id, newError(errcode.Unavailable, "the server is shutting down")))
			}
			continue
		}
		go func() {
			defer func() { <-slots }()
			defer ss.inflight.Done()
			if reply, ok := t.handler.handleMessage(t.ctx, t.caller, msg, true); ok {
				t.reply(reply)
			}
		}()
	}
}

// reply writes one answer; a connection that cannot take it is closed,
// which ends serve.
func (t *socket) reply(v any) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	_ = t.ws.SetWriteDeadline(time.Now().Add(socketWriteWait))
	if err := t.ws.WriteJSON(v); err != nil {
		_ = t.ws.Close()
	}
}

// keepAlive pings the client every third of idle, so a connection whose
// peer went away ends at its read deadline; it returns what stops it.
func (t *socket) keepAlive(idle time.Duration) []func() {
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
func (t *socket) closeWith(code int, reason string) {
	_ = t.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(socketWriteWait))
}

func (t *socket) Close() error { return t.ws.Close() }
