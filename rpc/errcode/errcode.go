// Package errcode holds the JSON-RPC error codes of apppassd's API, the one
// table from the domain's error kinds to them and the "data" member of its
// errors: the server answers with them, the client (rpc/client) reads them
// back. It imports nothing but the domain, so a client links no server.
package errcode

import "github.com/apppass/apppass"

// The codes. The first five are the JSON-RPC spec's; the rest are ours,
// documented in docs/methods.md ("Errors"). This is the only place codes are
// assigned.
const (
	ParseError      = -32700
	InvalidRequest  = -32600
	MethodNotFound  = -32601
	InvalidParams   = -32602
	Internal        = -32603
	Unauthenticated = -32001
	Forbidden       = -32003
	NotFound        = -32004
	Rejected        = -32010
	Limit           = -32029
	Unavailable     = -32050
)

// ofKind is the table: every kind but KindInternal has exactly one code.
var ofKind = map[apppass.Kind]int64{
	apppass.KindInvalid:         InvalidParams,
	apppass.KindUnauthenticated: Unauthenticated,
	apppass.KindForbidden:       Forbidden,
	apppass.KindNotFound:        NotFound,
	apppass.KindRejected:        Rejected,
	apppass.KindLimit:           Limit,
	apppass.KindUnavailable:     Unavailable,
}

// Of returns the code of kind; ok is false for KindInternal (and a kind the
// table lacks), which the server answers as Internal after logging it.
func Of(kind apppass.Kind) (code int64, ok bool) {
	code, ok = ofKind[kind]
	return code, ok
}

// KindOf returns the kind whose code is code, or KindInternal for a code no
// kind has (the spec's other codes, or one this version does not know).
func KindOf(code int64) apppass.Kind {
	for kind, c := range ofKind {
		if c == code {
			return kind
		}
	}
	return apppass.KindInternal
}

// Data is the "data" member of our errors.
type Data struct {
	Field      string `json:"field,omitempty"`
	Reason     string `json:"reason,omitempty"`
	OX         string `json:"ox,omitempty"`
	RetryAfter int    `json:"retryAfter,omitempty"` // seconds, for Limit
	// Reauth: signing in again would allow the call; MaxAge (seconds) is
	// the oldest sign-in accepted, AMR the method it must have used.
	Reauth bool   `json:"reauth,omitempty"`
	MaxAge int64  `json:"maxAge,omitempty"`
	AMR    string `json:"amr,omitempty"`
}
