package apppass

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an Error. Each kind maps to exactly one JSON-RPC code in
// rpc/errcode; that table is the only place codes are chosen.
type Kind int

const (
	KindInternal        Kind = iota // a bug or an unexpected failure; details are logged, never shown
	KindInvalid                     // a parameter has the wrong type or value
	KindUnauthenticated             // no valid credentials
	KindForbidden                   // authenticated, but not allowed to do this
	KindNotFound                    // no such app password for this caller
	KindRejected                    // an app password login was not accepted
	KindLimit                       // a configured limit was reached
	KindUnavailable                 // MongoDB (or another backing service) cannot be reached
)

// Error is the one error type the domain hands to its adapters.
type Error struct {
	Kind    Kind
	Message string // safe to show to the caller
	Field   string // for KindInvalid: the parameter at fault
	OX      string // the matching OX error code, e.g. ASP-0002, if OX has one
	Err     error  // the cause, for logs only
	// RetryAfter is, for KindLimit, how long until trying again can succeed.
	RetryAfter time.Duration
	// Reauth is set, for KindForbidden, when signing in again (recently
	// enough, with what is asked) would allow the call.
	Reauth *ReauthPolicy
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Invalid reports a bad parameter.
func Invalid(field, reason string) *Error {
	return &Error{Kind: KindInvalid, Field: field, Message: reason}
}

// Unavailable wraps a failure to reach a backing service.
func Unavailable(service string, cause error) *Error {
	return &Error{Kind: KindUnavailable, Message: service + " is unavailable", Err: cause}
}

// ErrRejected is the single answer to every failed app password login, so
// that a caller cannot tell a wrong password from an unknown login, a revoked
// password or a protocol the app may not use.
var ErrRejected = &Error{Kind: KindRejected, Message: "app password not accepted"}

// ErrNotFound is returned for an app password that does not exist or is not
// the caller's: both look the same from outside.
var ErrNotFound = &Error{Kind: KindNotFound, Message: "no such app password"}

// KindOf returns the kind of err; anything that is not an *Error is internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// RetryAfterOf returns how long err asks the caller to wait, or 0.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
