// Package rpc serves the apppass Service as JSON-RPC 2.0 over HTTP (one
// request or a batch per POST) and over WebSocket (sourcegraph/jsonrpc2),
// authenticates callers, and maps domain errors to JSON-RPC codes.
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/apppass/apppass"
)

// MaxBodyBytes bounds a request body (and a WebSocket message).
const MaxBodyBytes = 1 << 20

// MaxBatch is the most requests one batch may hold.
const MaxBatch = 100

// MaxReplyBytes bounds the replies to one batch, as MaxBodyBytes bounds
// the batch: requests past it are not run. (One rpc.discover reply is
// 20 kB; a list of 50 passwords 15 kB.)
const MaxReplyBytes = 1 << 20

// callTimeout bounds the storage work of one call.
const callTimeout = 10 * time.Second

// Server is the HTTP side of the sidecar.
type Server struct {
	Service *apppass.Service
	Auth    *Authenticator
	// Ready reports whether the backing services answer; nil error is ready.
	Ready  func(ctx context.Context) error
	Logger *slog.Logger
	// PendingEvents, if set, counts the events waiting in the outbox; /readyz
	// shows it as "pendingEvents" when the store answers.
	PendingEvents func(ctx context.Context) (int64, error)
	// MailBackends maps imap, pop3 and smtp to the servers nginx's mail
	// proxy hands accepted logins to; MailMaster optionally logs in there.
	MailBackends map[string]MailBackend
	MailMaster   *MailMaster
	// BasicRealm is the realm of the HTTP Basic challenge on /auth/basic.
	BasicRealm string
	// Webhooks shows admins the outbound webhooks; nil when none are configured.
	Webhooks WebhookAdmin
	// Provisioning configures POST /webhooks/provisioning; nil answers 404.
	Provisioning *Provisioning
	// Metrics, when set, counts calls and logins and is served at GET
	// /metrics (rpc/metrics.go).
	Metrics *Metrics
	// CORSOrigins may call /rpc and /appsuite/api/ from a browser
	// (rpc/middleware.go).
	CORSOrigins []string
	// UI, when set, serves the settings page at GET / and its assets under
	// GET /ui/ (package ui); nil leaves both 404.
	UI http.Handler

	upgrader websocket.Upgrader
	mu       sync.Mutex
	sockets  map[*jsonrpc2.Conn]struct{}
	closing  bool
	inflight sync.WaitGroup // WebSocket calls being served
}

// Handler routes /rpc, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc", s.serveHTTP)
	mux.HandleFunc("GET /rpc", s.serveWebSocket)
	mux.HandleFunc("GET /auth/basic", s.serveBasicAuth)
	mux.HandleFunc("GET /auth/mail", s.serveMailAuth)
	mux.HandleFunc("POST /webhooks/provisioning", s.serveProvisioning)
	mux.HandleFunc("GET /openrpc.json", serveOpenRPC) // public: see openrpc.go
	if s.UI != nil {
		mux.Handle("GET /{$}", s.UI)
		mux.Handle("GET /ui/", s.UI)
	}
	// The OX-compatible API (ox.go) checks the HTTP method per action.
	mux.HandleFunc("/appsuite/api/appPasswords", s.serveOX)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, body := http.StatusOK, map[string]any{"status": "ready"}
		if err := s.Ready(ctx); err != nil {
			status, body = http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": err.Error()}
		}
		if s.PendingEvents != nil && ctx.Err() == nil {
			if n, err := s.PendingEvents(ctx); err == nil {
				body["pendingEvents"] = n
			}
		}
		writeJSON(w, status, body)
	})
	s.upgrader.CheckOrigin = s.checkWebSocketOrigin
	return s.withRequestContext(mux) // request ids, CORS, access log: middleware.go
}

// response is a JSON-RPC response. The id is kept raw, so it goes back
// exactly as it came (a string, a number or null).
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *jsonrpc2.Error `json:"error,omitempty"`
}

func (r response) MarshalJSON() ([]byte, error) {
	type plain struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result,omitempty"`
		Error   *jsonrpc2.Error `json:"error,omitempty"`
	}
	p := plain{JSONRPC: "2.0", ID: r.ID, Result: r.Result, Error: r.Error}
	if p.ID == nil {
		p.ID = json.RawMessage("null")
	}
	if p.Error == nil && p.Result == nil {
		p.Result = json.RawMessage("null")
	}
	return json.Marshal(p)
}

func errorResponse(id json.RawMessage, err *jsonrpc2.Error) response {
	return response{ID: id, Error: err}
}

// serveHTTP answers POST /rpc: one request or a batch.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := s.Auth.Authenticate(bearerFrom(r.Header.Get("Authorization")))
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, errorResponse(nil, toRPCError(err, s.logger(r.Context()), "")))
		return
	}
	if r.ContentLength > MaxBodyBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorResponse(nil, newError(CodeInvalidRequest, "request body exceeds 1 MiB")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorResponse(nil, newError(CodeInvalidRequest, "request body exceeds 1 MiB")))
			return
		}
		writeJSON(w, http.StatusBadRequest, errorResponse(nil, newError(CodeParseError, "could not read the request body")))
		return
	}
	out, ok := s.handleMessage(r.Context(), c, body)
	if !ok {
		w.WriteHeader(http.StatusNoContent) // only notifications
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleMessage processes one JSON-RPC message, single or batch, and returns
// what to send back, or false when nothing is (notifications only).
func (s *Server) handleMessage(ctx context.Context, c caller, body []byte) (any, bool) {
	body = bytes.TrimSpace(body)
	if !json.Valid(body) {
		return errorResponse(nil, newError(CodeParseError, "parse error: the body is not valid JSON")), true
	}
	if len(body) > 0 && body[0] == '[' {
		var batch []json.RawMessage
		_ = json.Unmarshal(body, &batch)
		if len(batch) == 0 {
			return errorResponse(nil, newError(CodeInvalidRequest, "invalid request: empty batch")), true
		}
		if len(batch) > MaxBatch {
			return errorResponse(nil, newErrorData(CodeInvalidRequest,
				fmt.Sprintf("invalid request: a batch holds at most %d requests, this one %d", MaxBatch, len(batch)),
				map[string]int{"maxBatch": MaxBatch})), true
		}
		// The replies are encoded as they come, and once they pass
		// MaxReplyBytes the rest of the batch is not run: each is
		// answered that it was not, so a caller knows what happened.
		replies := make([]json.RawMessage, 0, len(batch))
		size := 0
		for _, raw := range batch {
			var rep response
			if size > MaxReplyBytes {
				id, notification := requestID(raw)
				if notification {
					continue
				}
				rep = errorResponse(id, newErrorData(CodeInvalidRequest,
					fmt.Sprintf("not run: the batch's replies passed %d bytes; send fewer requests at once", MaxReplyBytes),
					map[string]int{"maxReplyBytes": MaxReplyBytes}))
			} else {
				var ok bool
				if rep, ok = s.handleRequest(ctx, c, raw); !ok {
					continue
				}
			}
			enc, err := json.Marshal(rep)
			if err != nil {
				enc, _ = json.Marshal(errorResponse(rep.ID, newError(CodeInternal, "internal error")))
			}
			size += len(enc)
			replies = append(replies, enc)
		}
		return replies, len(replies) > 0
	}
	return s.handleRequest(ctx, c, body)
}

// requestID returns the id of a request in a batch, and whether it is a
// notification (no id) or not a request at all.
func requestID(raw json.RawMessage) (json.RawMessage, bool) {
	var env struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &env) != nil {
		return nil, false
	}
	if env.ID == nil {
		return nil, true
	}
	if !validID(env.ID) {
		return nil, false
	}
	return env.ID, false
}

// envelope is a request as it arrives, checked field by field.
type envelope struct {
	JSONRPC json.RawMessage `json:"jsonrpc"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

func (s *Server) handleRequest(ctx context.Context, c caller, raw json.RawMessage) (response, bool) {
	var env envelope
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &env) != nil {
		return errorResponse(nil, newError(CodeInvalidRequest, "invalid request: not a JSON-RPC request object")), true
	}
	notification := env.ID == nil
	if !notification && !validID(env.ID) {
		return errorResponse(nil, newError(CodeInvalidRequest, "invalid request: id must be a string, a number or null")), true
	}
	// An invalid request is answered even without an id: it is not a
	// notification, and JSON-RPC 2.0 answers it with a null id.
	var version, name string
	if json.Unmarshal(env.JSONRPC, &version) != nil || version != "2.0" {
		return errorResponse(env.ID, newError(CodeInvalidRequest, `invalid request: "jsonrpc" must be "2.0"`)), true
	}
	if len(env.Method) == 0 || env.Method[0] != '"' || json.Unmarshal(env.Method, &name) != nil {
		return errorResponse(env.ID, newError(CodeInvalidRequest, `invalid request: "method" must be a string`)), true
	}
	result, rpcErr := s.call(ctx, c, name, env.Params)
	if notification {
		return response{}, false
	}
	if rpcErr != nil {
		return errorResponse(env.ID, rpcErr), true
	}
	return response{ID: env.ID, Result: result}, true
}

func validID(id json.RawMessage) bool {
	switch {
	case string(id) == "null":
		return true
	case id[0] == '"':
		return true
	case id[0] == '-' || (id[0] >= '0' && id[0] <= '9'):
		return true
	}
	return false
}

// call runs one method for c; both transports end here. It logs the call
// at debug with the request's logger (so with its request id) and counts
// it in the metrics. An unknown method is logged and counted as "unknown",
// so a caller cannot make up label values.
func (s *Server) call(ctx context.Context, c caller, name string, params json.RawMessage) (any, *jsonrpc2.Error) {
	start := time.Now()
	log := s.logger(ctx)
	result, rpcErr := s.dispatch(ctx, log, c, name, params)
	took := time.Since(start)
	s.Metrics.observeCall(name, rpcErr, took)
	if rpcErr != nil {
		log.Debug("call", "method", methodLabel(name), "caller", c.Name, "code", rpcErr.Code, "took", took)
		return nil, rpcErr
	}
	log.Debug("call", "method", name, "caller", c.Name, "took", took)
	return result, nil
}

// dispatch finds the method, checks that c may call it and runs it.
func (s *Server) dispatch(ctx context.Context, log *slog.Logger, c caller, name string, params json.RawMessage) (any, *jsonrpc2.Error) {
	m, ok := methods[name]
	if !ok {
		return nil, newError(CodeMethodNotFound, "method not found: "+name)
	}
	if !s.Auth.stillValid(c) {
		return nil, toRPCError(&apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: user token has expired"}, log, name)
	}
	if err := m.allowed(c.Caller); err != nil {
		return nil, toRPCError(err, log, name)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var result any
	var err error
	if m.server != nil {
		result, err = m.server(ctx, s, c.Caller, params)
	} else {
		result, err = m.call(ctx, s.Service, c.Caller, params)
	}
	if err != nil {
		return nil, toRPCError(err, log, name)
	}
	return result, nil
}

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
		writeJSON(w, http.StatusUnauthorized, errorResponse(nil, toRPCError(err, log, "")))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeJSON(w, http.StatusBadRequest, errorResponse(nil, newError(CodeInvalidRequest, "GET /rpc needs a WebSocket upgrade; use POST for plain HTTP")))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, http.Header{RequestIDHeader: w.Header().Values(RequestIDHeader)})
	if err != nil {
		return // the upgrader has answered
	}
	ws.SetReadLimit(MaxBodyBytes)
	connCtx := withLogger(context.Background(), log)
	stream := &socketStream{ws: ws, server: s, caller: c, ctx: connCtx}
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
	conn := jsonrpc2.NewConn(connCtx, stream, serveConcurrently(&s.inflight, handler),
		jsonrpc2.SetLogger(slogLogger{log}))
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
		s.mu.Lock()
		delete(s.sockets, conn)
		s.mu.Unlock()
	}()
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
	wg   *sync.WaitGroup
	next jsonrpc2.Handler
}

// serveConcurrently runs each call in its own goroutine, as
// jsonrpc2.AsyncHandler does, and counts it from the moment it is read, so
// shutdown can wait for it.
func serveConcurrently(wg *sync.WaitGroup, next jsonrpc2.Handler) jsonrpc2.Handler {
	return inflightHandler{wg: wg, next: next}
}

func (h inflightHandler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.next.Handle(ctx, conn, req)
	}()
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
	writeMu sync.Mutex
}

func (t *socketStream) WriteObject(obj any) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	return t.ws.WriteJSON(obj)
}

func (t *socketStream) ReadObject(v any) error {
	for {
		_, msg, err := t.ws.ReadMessage()
		if err != nil {
			return err
		}
		if t.isPlainRequest(msg) {
			return json.Unmarshal(msg, v)
		}
		t.server.inflight.Add(1)
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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
