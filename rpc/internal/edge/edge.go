// Package edge holds what the HTTP edges of apppassd share: the JSON-RPC
// stack (rpc/jsonrpc), the OX API (rpc/ox), the gateway endpoints
// (rpc/gatewayauth), the provisioning webhook (rpc/provisioning) and the
// mux that routes to them (rpc). They get an authenticated caller, the
// request's logger and the limits on a call from here, not from the mux,
// which imports them.
package edge

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/apppass/apppass"
)

// MaxBodyBytes bounds a request body (and a WebSocket message).
const MaxBodyBytes = 1 << 20

// CallTimeout bounds the storage work of one call.
const CallTimeout = 10 * time.Second

// RequestIDHeader carries a request's id: taken from the caller when it
// is sane, generated otherwise, and always sent back (rpc's middleware).
const RequestIDHeader = "X-Request-Id"

// A Caller is an authenticated caller and until when it stays valid.
type Caller struct {
	apppass.Caller
	Expires time.Time // zero for service keys
}

// An Identifier turns a bearer token into a Caller (rpc.Callers).
type Identifier interface {
	Identify(bearer string) (Caller, error)
	// StillValid reports whether a caller identified earlier (on a
	// WebSocket) may still call: a user token's expiry applies to every
	// call.
	StillValid(c Caller) bool
}

// BearerFrom extracts the token of an "Authorization: Bearer …" header.
func BearerFrom(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// AuthStatus is the HTTP status of a refused bearer: 503 while the issuer's
// keys cannot be had (the token may be fine), else 401.
func AuthStatus(err error) int {
	if apppass.KindOf(err) == apppass.KindUnavailable {
		return http.StatusServiceUnavailable
	}
	return http.StatusUnauthorized
}

type loggerKey struct{}

// WithLogger returns ctx carrying l, the logger of one request.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger of the request ctx belongs to (it carries the
// request id), or fallback when there is none.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// LogFailure logs an error a caller is not shown in full: anything but an
// *apppass.Error of a kind other than KindInternal is internal, logged as
// an error; a backing service that is unavailable is a warning. where
// names the method or endpoint. It reports whether err is not internal
// (the caller may see its message).
func LogFailure(log *slog.Logger, where string, err error) bool {
	var e *apppass.Error
	if !errors.As(err, &e) || e.Kind == apppass.KindInternal {
		log.Error("internal error", "method", where, "err", err)
		return false
	}
	if e.Kind == apppass.KindUnavailable {
		log.Warn("backing service unavailable", "method", where, "err", err)
	}
	return true
}

// RetryAfterSeconds is how long a caller refused for a limit should wait,
// in whole seconds, at least 1.
func RetryAfterSeconds(err error) int {
	d := apppass.RetryAfterOf(err)
	if d <= 0 {
		return 1
	}
	return int(math.Ceil(d.Seconds()))
}

// WriteJSON writes v as the JSON body of a reply with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
