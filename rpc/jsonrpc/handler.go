// Package jsonrpc serves the apppass Service as JSON-RPC 2.0: over HTTP
// (one request or a batch per POST /rpc) and over WebSocket (GET /rpc, one
// message at a time), both through the same parser and dispatcher
// (handleMessage). It holds the method table, the strict params decoding,
// the error table that maps domain errors to JSON-RPC codes, and the
// OpenRPC document.
package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// MaxBodyBytes bounds a request body (and a WebSocket message).
const MaxBodyBytes = edge.MaxBodyBytes

// MaxBatch is the most requests one batch may hold.
const MaxBatch = 100

// MaxReplyBytes bounds the replies to one batch, as MaxBodyBytes bounds
// the batch: requests past it are not run. (One rpc.discover reply is
// 20 kB; a list of 50 passwords 15 kB.)
const MaxReplyBytes = 1 << 20

// Handler serves POST /rpc and GET /rpc. It is a plain value of
// dependencies, which the mux (rpc.Server) fills from its settings for
// each request; what outlives a request, the open WebSockets, is in
// Sockets.
type Handler struct {
	Service *apppass.Service
	Auth    edge.Identifier
	Logger  *slog.Logger
	// Metrics counts calls and logins; nil counts nothing.
	Metrics Observer
	// Webhooks shows admins the outbound webhooks; nil when none are configured.
	Webhooks WebhookAdmin
	// Doveadm shows admins the Dovecots kicked on revocations; nil when
	// none are configured.
	Doveadm DoveadmAdmin
	// Sockets holds the open WebSocket connections (GET /rpc needs it).
	Sockets *Sockets
	// SocketIdleTimeout closes a WebSocket connection that sent no message
	// and answered no ping for this long (default 90 s).
	SocketIdleTimeout time.Duration
	// CheckOrigin admits a WebSocket upgrade by its Origin header.
	CheckOrigin func(r *http.Request) bool
}

// Observer counts calls and logins (rpc.Metrics).
type Observer interface {
	// ObserveCall counts one call; method is a name of the method table
	// or "unknown", err nil for a result.
	ObserveCall(method string, err *Error, took time.Duration)
	// ObserveLogin counts one login attempt; err is what Authenticate (or
	// the checks before it) returned.
	ObserveLogin(protocol string, err error)
}

func (h Handler) logger(ctx context.Context) *slog.Logger { return edge.Logger(ctx, h.Logger) }

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

// ServePOST answers POST /rpc: one request or a batch.
func (h Handler) ServePOST(w http.ResponseWriter, r *http.Request) {
	c, err := h.Auth.Identify(edge.BearerFrom(r.Header.Get("Authorization")))
	if err != nil {
		edge.WriteJSON(w, edge.AuthStatus(err), errorResponse(nil, ToError(err, h.logger(r.Context()), "")))
		return
	}
	if r.ContentLength > MaxBodyBytes {
		edge.WriteJSON(w, http.StatusRequestEntityTooLarge, errorResponse(nil, newError(errcode.InvalidRequest, "request body exceeds 1 MiB")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			edge.WriteJSON(w, http.StatusRequestEntityTooLarge, errorResponse(nil, newError(errcode.InvalidRequest, "request body exceeds 1 MiB")))
			return
		}
		edge.WriteJSON(w, http.StatusBadRequest, errorResponse(nil, newError(errcode.ParseError, "could not read the request body")))
		return
	}
	out, ok := h.handleMessage(r.Context(), c, body, false)
	if !ok {
		w.WriteHeader(http.StatusNoContent) // only notifications
		return
	}
	if single, isSingle := out.(response); isSingle {
		// What edge.WriteJSON's encoder would write, without compacting
		// again what MarshalJSON has just written compact.
		enc, err := single.MarshalJSON()
		if err != nil {
			enc, _ = errorResponse(single.ID, newError(errcode.Internal, "internal error")).MarshalJSON()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(enc, '\n'))
		return
	}
	edge.WriteJSON(w, http.StatusOK, out)
}

// handleMessage processes one JSON-RPC message, single or batch, and returns
// what to send back, or false when nothing is (notifications only). Both
// transports end here: a POST body and a WebSocket message are parsed and
// dispatched alike. With tagCalls (WebSocket, whose calls share one request
// id) each call's log lines carry its JSON-RPC id as rpc_id.
func (h Handler) handleMessage(ctx context.Context, c edge.Caller, body []byte, tagCalls bool) (any, bool) {
	body = bytes.TrimSpace(body)
	if env, ok := scanEnvelope(body); ok {
		return h.handleEnvelope(ctx, c, env, tagCalls)
	}
	if !json.Valid(body) {
		return errorResponse(nil, newError(errcode.ParseError, "parse error: the body is not valid JSON")), true
	}
	if len(body) > 0 && body[0] == '[' {
		var batch []json.RawMessage
		_ = json.Unmarshal(body, &batch)
		if len(batch) == 0 {
			return errorResponse(nil, newError(errcode.InvalidRequest, "invalid request: empty batch")), true
		}
		if len(batch) > MaxBatch {
			return errorResponse(nil, newErrorData(errcode.InvalidRequest,
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
				rep = errorResponse(id, newErrorData(errcode.InvalidRequest,
					fmt.Sprintf("not run: the batch's replies passed %d bytes; send fewer requests at once", MaxReplyBytes),
					map[string]int{"maxReplyBytes": MaxReplyBytes}))
			} else {
				var ok bool
				if rep, ok = h.handleRequest(ctx, c, raw, tagCalls); !ok {
					continue
				}
			}
			enc, err := json.Marshal(rep)
			if err != nil {
				enc, _ = json.Marshal(errorResponse(rep.ID, newError(errcode.Internal, "internal error")))
			}
			size += len(enc)
			replies = append(replies, enc)
		}
		return replies, len(replies) > 0
	}
	return h.handleRequest(ctx, c, body, tagCalls)
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

// scanEnvelope reads a request object in one pass (scan.go). ok is false
// for anything else, a batch or JSON it does not take, which then goes
// through encoding/json. Names match the envelope's fields exactly; a
// name that encoding/json could match case-insensitively leaves it to
// encoding/json too (a name past ASCII, which it could match by Unicode
// folding, is not taken by objectMembers), so both ways agree.
func scanEnvelope(raw []byte) (env envelope, ok bool) {
	var buf [8]member
	members, ok := objectMembers(raw, buf[:0])
	if !ok {
		return env, false
	}
	for _, m := range members {
		switch string(m.name) {
		case "jsonrpc":
			env.JSONRPC = m.value
		case "method":
			env.Method = m.value
		case "params":
			env.Params = m.value
		case "id":
			env.ID = m.value
		default:
			if mayFold(m.name) {
				return env, false
			}
		}
	}
	return env, true
}

// mayFold reports whether encoding/json could take name, which is ASCII,
// for one of the envelope's fields: the same letters in another case.
func mayFold(name []byte) bool {
	for _, f := range [...]string{"jsonrpc", "method", "params", "id"} {
		if strings.EqualFold(string(name), f) {
			return true
		}
	}
	return false
}

func (h Handler) handleRequest(ctx context.Context, c edge.Caller, raw json.RawMessage, tagCalls bool) (response, bool) {
	var env envelope
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &env) != nil {
		return errorResponse(nil, newError(errcode.InvalidRequest, "invalid request: not a JSON-RPC request object")), true
	}
	return h.handleEnvelope(ctx, c, env, tagCalls)
}

// handleEnvelope checks a request's members and runs it.
func (h Handler) handleEnvelope(ctx context.Context, c edge.Caller, env envelope, tagCalls bool) (response, bool) {
	notification := env.ID == nil
	if !notification && !validID(env.ID) {
		return errorResponse(nil, newError(errcode.InvalidRequest, "invalid request: id must be a string, a number or null")), true
	}
	// An invalid request is answered even without an id: it is not a
	// notification, and JSON-RPC 2.0 answers it with a null id.
	var version, name string
	if string(env.JSONRPC) != `"2.0"` && (json.Unmarshal(env.JSONRPC, &version) != nil || version != "2.0") {
		return errorResponse(env.ID, newError(errcode.InvalidRequest, `invalid request: "jsonrpc" must be "2.0"`)), true
	}
	if len(env.Method) == 0 || env.Method[0] != '"' || unquote(env.Method, &name) != nil {
		return errorResponse(env.ID, newError(errcode.InvalidRequest, `invalid request: "method" must be a string`)), true
	}
	if tagCalls && !notification {
		ctx = edge.WithLogger(ctx, h.logger(ctx).With("rpc_id", string(env.ID)))
	}
	result, rpcErr := h.Call(ctx, c, name, env.Params)
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

// Call runs one method for c; both transports end here, and so does the
// OX API (rpc/ox). It logs the call at debug with the request's logger (so
// with its request id) and counts it in the metrics. An unknown method is logged and counted as "unknown",
// so a caller cannot make up label values.
func (h Handler) Call(ctx context.Context, c edge.Caller, name string, params json.RawMessage) (any, *Error) {
	start := time.Now()
	log := h.logger(ctx)
	result, rpcErr := h.dispatch(ctx, log, c, name, params)
	took := time.Since(start)
	label := methodLabel(name)
	if h.Metrics != nil {
		h.Metrics.ObserveCall(label, rpcErr, took)
	}
	if !log.Enabled(ctx, slog.LevelDebug) { // the arguments below cost allocations
		return result, rpcErr
	}
	if rpcErr != nil {
		log.Debug("call", "method", label, "caller", c.Name, "code", rpcErr.Code, "took", took)
		return nil, rpcErr
	}
	log.Debug("call", "method", name, "caller", c.Name, "took", took)
	return result, nil
}

// dispatch finds the method, checks that c may call it and runs it.
func (h Handler) dispatch(ctx context.Context, log *slog.Logger, c edge.Caller, name string, params json.RawMessage) (any, *Error) {
	m, ok := methods[name]
	if !ok {
		return nil, newError(errcode.MethodNotFound, "method not found: "+name)
	}
	if !h.Auth.StillValid(c) {
		return nil, ToError(&apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: user token has expired"}, log, name)
	}
	if err := m.who.allows(c.Caller); err != nil {
		return nil, ToError(err, log, name)
	}
	ctx, cancel := context.WithTimeout(ctx, edge.CallTimeout)
	defer cancel()
	result, err := m.handle(ctx, request{Handler: h, Caller: c.Caller, Params: params})
	if err != nil {
		return nil, ToError(err, log, name)
	}
	return result, nil
}
