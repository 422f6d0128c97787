// Package rpc serves the apppass Service as JSON-RPC 2.0 over HTTP (one
// request or a batch per POST) and over WebSocket (one message at a time,
// parsed and dispatched the same way), authenticates callers, and maps
// domain errors to JSON-RPC codes.
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
	// Doveadm shows admins the Dovecots kicked on revocations; nil when
	// none are configured.
	Doveadm DoveadmAdmin
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
	// SocketIdleTimeout closes a WebSocket connection that sent no message
	// and answered no ping for this long (default 90 s).
	SocketIdleTimeout time.Duration

	upgrader websocket.Upgrader
	mu       sync.Mutex
	sockets  map[*socket]struct{}
	// socketsOf counts each caller's open WebSocket connections.
	socketsOf map[string]int
	closing   bool
	inflight  sync.WaitGroup // WebSocket calls being served
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
	Error   *Error          `json:"error,omitempty"`
}

func (r response) MarshalJSON() ([]byte, error) {
	type plain struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result,omitempty"`
		Error   *Error          `json:"error,omitempty"`
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

func errorResponse(id json.RawMessage, err *Error) response {
	return response{ID: id, Error: err}
}

// serveHTTP answers POST /rpc: one request or a batch.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := s.Auth.Authenticate(bearerFrom(r.Header.Get("Authorization")))
	if err != nil {
		writeJSON(w, authStatus(err), errorResponse(nil, toRPCError(err, s.logger(r.Context()), "")))
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
	out, ok := s.handleMessage(r.Context(), c, body, false)
	if !ok {
		w.WriteHeader(http.StatusNoContent) // only notifications
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleMessage processes one JSON-RPC message, single or batch, and returns
// what to send back, or false when nothing is (notifications only). Both
// transports end here: a POST body and a WebSocket message are parsed and
// dispatched alike. With tagCalls (WebSocket, whose calls share one request
// id) each call's log lines carry its JSON-RPC id as rpc_id.
func (s *Server) handleMessage(ctx context.Context, c caller, body []byte, tagCalls bool) (any, bool) {
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
				if rep, ok = s.handleRequest(ctx, c, raw, tagCalls); !ok {
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
	return s.handleRequest(ctx, c, body, tagCalls)
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

func (s *Server) handleRequest(ctx context.Context, c caller, raw json.RawMessage, tagCalls bool) (response, bool) {
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
	if tagCalls && !notification {
		ctx = withLogger(ctx, s.logger(ctx).With("rpc_id", string(env.ID)))
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
func (s *Server) call(ctx context.Context, c caller, name string, params json.RawMessage) (any, *Error) {
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
func (s *Server) dispatch(ctx context.Context, log *slog.Logger, c caller, name string, params json.RawMessage) (any, *Error) {
	m, ok := methods[name]
	if !ok {
		return nil, newError(CodeMethodNotFound, "method not found: "+name)
	}
	if !s.Auth.stillValid(c) {
		return nil, toRPCError(&apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: user token has expired"}, log, name)
	}
	if err := m.who.allows(c.Caller); err != nil {
		return nil, toRPCError(err, log, name)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	result, err := m.handle(ctx, request{Server: s, Caller: c.Caller, Params: params})
	if err != nil {
		return nil, toRPCError(err, log, name)
	}
	return result, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
