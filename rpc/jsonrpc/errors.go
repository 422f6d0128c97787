package jsonrpc

import (
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// Error is a JSON-RPC error object, as sent.
type Error struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// ToError maps any error to the JSON-RPC error the caller sees: this and
// rpc/errcode are the one error table of every edge (rpc/ox maps on from the
// codes). Errors that are not *apppass.Error are internal: logged in full,
// shown as a bare "internal error".
func ToError(err error, logger *slog.Logger, method string) *Error {
	var rpcErr *Error
	if errors.As(err, &rpcErr) {
		return rpcErr
	}
	var e *apppass.Error
	code, ok := int64(errcode.Internal), false
	if edge.LogFailure(logger, method, err) && errors.As(err, &e) {
		code, ok = errcode.Of(e.Kind)
		if !ok {
			logger.Error("internal error", "method", method, "err", err)
		}
	}
	if !ok {
		return &Error{Code: errcode.Internal, Message: "internal error"}
	}
	out := &Error{Code: code, Message: e.Message}
	data := errcode.Data{OX: e.OX}
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
	if data != (errcode.Data{}) {
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
