package jsonrpc

import (
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// JSON-RPC error codes. The first five are the spec's; the rest are ours,
// documented in README. This file is the only place codes are assigned;
// rpc/ox maps them on to OX's codes.
const (
	CodeParseError      = -32700
	CodeInvalidRequest  = -32600
	CodeMethodNotFound  = -32601
	CodeInvalidParams   = -32602
	CodeInternal        = -32603
	CodeUnauthenticated = -32001
	CodeForbidden       = -32003
	CodeNotFound        = -32004
	CodeRejected        = -32010
	CodeLimit           = -32029
	CodeUnavailable     = -32050
)

var codeOfKind = map[apppass.Kind]int64{
	apppass.KindInvalid:         CodeInvalidParams,
	apppass.KindUnauthenticated: CodeUnauthenticated,
	apppass.KindForbidden:       CodeForbidden,
	apppass.KindNotFound:        CodeNotFound,
	apppass.KindRejected:        CodeRejected,
	apppass.KindLimit:           CodeLimit,
	apppass.KindUnavailable:     CodeUnavailable,
}

// Error is a JSON-RPC error object, as sent.
type Error struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// ErrorData is the "data" member of our errors.
type ErrorData struct {
	Field      string `json:"field,omitempty"`
	Reason     string `json:"reason,omitempty"`
	OX         string `json:"ox,omitempty"`
	RetryAfter int    `json:"retryAfter,omitempty"` // seconds
	// Reauth: signing in again would allow the call; MaxAge (seconds) is
	// the oldest sign-in accepted, AMR the method it must have used.
	Reauth bool   `json:"reauth,omitempty"`
	MaxAge int64  `json:"maxAge,omitempty"`
	AMR    string `json:"amr,omitempty"`
}

// ToError maps any error to the JSON-RPC error the caller sees: this and
// codeOfKind are the one error table of every edge (rpc/ox maps on from the
// codes). Errors that are not *apppass.Error are internal: logged in full,
// shown as a bare "internal error".
func ToError(err error, logger *slog.Logger, method string) *Error {
	var rpcErr *Error
	if errors.As(err, &rpcErr) {
		return rpcErr
	}
	var e *apppass.Error
	code, ok := int64(CodeInternal), false
	if edge.LogFailure(logger, method, err) && errors.As(err, &e) {
		code, ok = codeOfKind[e.Kind]
		if !ok {
			logger.Error("internal error", "method", method, "err", err)
		}
	}
	if !ok {
		return &Error{Code: CodeInternal, Message: "internal error"}
	}
	out := &Error{Code: code, Message: e.Message}
	data := ErrorData{OX: e.OX}
	if e.Kind == apppass.KindLimit && e.RetryAfter > 0 {
		data.RetryAfter = edge.RetryAfterSeconds(e)
	}
	if e.Kind == apppass.KindForbidden && e.Reauth != nil {
		data.Reauth, data.MaxAge, data.AMR = true, int64(e.Reauth.MaxAge/time.Second), e.Reauth.AMR
	}
	if e.Kind == apppass.KindInvalid {
		out.Message = "invalid params: " + e.Field + " " + e.Message
		data.Field, data.Reason = e.Field, e.Message
	}
	if data != (ErrorData{}) {
		out.Data, _ = json.Marshal(data)
	}
	return out
}

func newError(code int64, message string) *Error {
	return &Error{Code: code, Message: message}
}

// newErrorData is newError with a data member.
func newErrorData(code int64, message string, data any) *Error {
	e := newError(code, message)
	e.Data, _ = json.Marshal(data)
	return e
}
