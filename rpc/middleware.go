package rpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apppass/apppass/rpc/internal/edge"
)

// RequestIDHeader carries a request's id: taken from the caller when it
// is sane, generated otherwise, and always sent back.
const RequestIDHeader = edge.RequestIDHeader

// maxRequestIDLen bounds an id taken from a caller, so log lines stay small.
const maxRequestIDLen = 128

// corsMaxAge is how long (seconds) a browser may reuse a preflight answer.
const corsMaxAge = "600"

// validRequestID accepts what proxies and tracers send (UUIDs, hex, nginx's
// $request_id, "Root=1-…" trace ids) and nothing that could forge a log
// line or a header: letters, digits and - _ . : + / = @, at most 128.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-_.:+/=@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// newRequestID returns 32 lowercase hex digits from math/rand/v2's
// generator (ChaCha8, one per thread, seeded by the runtime from the
// system): an id has to be unique and not guessable in advance, but it
// guards nothing, so it needs no crypto/rand.
func newRequestID() string {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
	var id [32]byte
	hex.Encode(id[:], raw[:])
	return string(id[:])
}

// requestState is what the middleware keeps for one request, in one
// allocation: the request's logger and its handler, the writer that
// remembers the status, and the X-Request-Id header's value.
type requestState struct {
	log    slog.Logger
	lazy   lazyRequestHandler
	sw     statusWriter
	idHead [1]string
}

// newRequestState starts the state of the request with id answered on w,
// and sends the id back. It is a function of its own so that the Logger
// is built inside the state: the middleware's closure is compiled as part
// of Handler, too big a function to inline slog.New into.
func newRequestState(base *slog.Logger, w http.ResponseWriter, id string) *requestState {
	st := &requestState{lazy: lazyRequestHandler{base: base.Handler(), id: id}, idHead: [1]string{id}}
	st.log = *slog.New(&st.lazy)
	st.sw.ResponseWriter = w
	w.Header()[RequestIDHeader] = st.idHead[:]
	return st
}

// lazyRequestHandler is the handler of a request's logger: the server's
// handler with the request id added, as Logger.With("request_id", id)
// makes, but made only when a line is actually written. At the default
// level most requests write none, and With formats the id at once.
type lazyRequestHandler struct {
	base slog.Handler
	id   string
	once sync.Once
	with slog.Handler
}

func (h *lazyRequestHandler) handler() slog.Handler {
	h.once.Do(func() { h.with = h.base.WithAttrs([]slog.Attr{slog.String("request_id", h.id)}) })
	return h.with
}

func (h *lazyRequestHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base.Enabled(ctx, l)
}

func (h *lazyRequestHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.handler().Handle(ctx, r)
}

func (h *lazyRequestHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.handler().WithAttrs(attrs)
}

func (h *lazyRequestHandler) WithGroup(name string) slog.Handler {
	return h.handler().WithGroup(name)
}

// withRequestContext wraps every route: it gives the request an id and a
// logger carrying it, answers CORS, and logs the request at debug once
// answered. Only the path is logged: a query string may carry a token
// (?access_token= on the WebSocket).
func (s *Server) withRequestContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		debug := s.Logger.Enabled(ctx, slog.LevelDebug)
		var start time.Time
		if debug {
			start = time.Now()
		}
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		st := newRequestState(s.Logger, w, id)
		r = r.WithContext(edge.WithLogger(ctx, &st.log))
		s.serveCORS(&st.sw, r, next)
		if debug {
			st.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "status", st.sw.statusCode(),
				"took", time.Since(start))
		}
	})
}

// corsMethods returns the methods a browser may use cross-origin on path,
// or "" for paths CORS does not apply to.
func corsMethods(path string) string {
	switch {
	case path == "/rpc":
		return "POST"
	case strings.HasPrefix(path, "/appsuite/api/"):
		return "GET, POST"
	}
	return ""
}

// serveCORS lets pages from the configured origins call /rpc and the
// OX-compatible API. Callers authenticate with bearer headers, never
// cookies, so credentials are not allowed. Other origins get no CORS
// headers, and their preflights a 403.
func (s *Server) serveCORS(w http.ResponseWriter, r *http.Request, next http.Handler) {
	methods := corsMethods(r.URL.Path)
	if methods == "" {
		next.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	allowed := origin != "" && s.corsAllowed(origin)
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		if !allowed {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", methods)
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, "+RequestIDHeader)
		h.Set("Access-Control-Max-Age", corsMaxAge)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if allowed {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", RequestIDHeader)
	}
	next.ServeHTTP(w, r)
}

// corsAllowed reports whether origin is configured (config lower-cases
// them; scheme and host are case-insensitive).
func (s *Server) corsAllowed(origin string) bool {
	return slices.Contains(s.CORSOrigins, strings.ToLower(origin))
}

// checkWebSocketOrigin admits WebSocket upgrades from non-browser clients
// (no Origin), from the page's own host, and from the CORS origins.
func (s *Server) checkWebSocketOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || s.corsAllowed(origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// statusWriter remembers the status sent, for the access log. It passes
// Hijack through (the WebSocket upgrade needs it) and Flush.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	if code == http.StatusRequestEntityTooLarge {
		// http.MaxBytesReader tells the server to drop the connection
		// rather than read the rest of the body, through a method of the
		// server's own writer that this wrapper cannot pass on; closing
		// does the same. Otherwise the server would wait for the rest of
		// a body it refused.
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be hijacked")
	}
	conn, rw, err := h.Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusCode is the status sent; a handler that wrote nothing sent 200.
func (w *statusWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
