// Package ox is the OX-compatible HTTP API: /appsuite/api/appPasswords
// answers the four
// actions of the Open-Xchange middleware's "appPasswords" module (getApps,
// list, add, remove) in OX's own response format, so the unmodified App Suite
// UI (io.ox/core/api/appPasswordApi) can be pointed at the sidecar by a
// proxy rule. Shapes and codes follow the OX sources recorded, with where
// each came from, in testdata/ox/.
//
// Every action goes through jsonrpc.Handler.Call, the same path as
// JSON-RPC, so who
// may do what and what a valid parameter is are decided in one place; this
// package only translates requests in and results and errors out.
package ox

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/rpc/internal/edge"
	"github.com/apppass/apppass/rpc/jsonrpc"
)

const (
	oxModule = "appPasswords"
	// oxMaxBody bounds a request body: the forms are a few short fields.
	oxMaxBody = 16 << 10
	// oxMaxValue bounds one field before it reaches the service (which
	// applies the exact limits), so error_params never echo a huge input.
	oxMaxValue = 1024
)

// oxAction is one action of the OX module and the JSON-RPC method behind it.
type oxAction struct {
	httpMethod string
	rpcMethod  string
	fields     []string // form fields, each required exactly once
	// data turns the JSON-RPC result into OX's "data".
	data func(result json.RawMessage) (any, error)
}

// The OX UI GETs getApps and list and POSTs add and remove
// (io.ox/core/api/appPasswordApi.js); the mutating actions refuse GET.
var oxActions = map[string]oxAction{
	"getApps": {http.MethodGet, "appPasswords.getApps", nil, oxApps},
	"list":    {http.MethodGet, "appPasswords.list", nil, oxList},
	"add":     {http.MethodPost, "appPasswords.add", []string{"appScope", "appName"}, oxAdded},
	"remove":  {http.MethodPost, "appPasswords.remove", []string{"uuid"}, oxRemoved},
}

// oxIgnored are parameters OX clients send that the sidecar does not use:
// App Suite's HTTP layer adds the OX session id to every request. Its value
// is never read or logged; the caller is the bearer token.
var oxIgnored = map[string]bool{"session": true}

// Handler answers /appsuite/api/appPasswords through the JSON-RPC
// methods of RPC.
type Handler struct {
	RPC jsonrpc.Handler
}

// ServeHTTP answers /appsuite/api/appPasswords; it checks the HTTP method
// per action.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := h.RPC.Auth.Identify(edge.BearerFrom(r.Header.Get("Authorization")))
	if err != nil {
		h.writeOXError(w, r, "", oxFromRPC(jsonrpc.ToError(err, h.logger(r), ""), nil))
		return
	}
	form, oxErr := oxForm(w, r)
	if oxErr != nil {
		h.writeOXError(w, r, "", oxErr)
		return
	}
	name, oxErr := oxSingle(form, "action")
	if oxErr != nil {
		h.writeOXError(w, r, "", oxErr)
		return
	}
	a, ok := oxActions[name]
	if !ok {
		h.writeOXError(w, r, name, oxErrorf(oxUnknownAction, fmt.Sprintf("unknown action %q in module %s", name, oxModule), name, oxModule))
		return
	}
	if r.Method != a.httpMethod {
		h.writeOXError(w, r, name, oxErrorf(oxBadRequest, fmt.Sprintf("action %s requires HTTP %s", name, a.httpMethod),
			fmt.Sprintf("Action %s requires HTTP %s.", name, a.httpMethod)))
		return
	}
	// Unknown names first: appScope[$ne]= is refused as what it is.
	for key := range form {
		if key != "action" && !oxIgnored[key] && !slices.Contains(a.fields, key) {
			h.writeOXError(w, r, name, oxErrorf(oxNotAllowedParam, fmt.Sprintf("%q is not a parameter of action %s", key, name), key))
			return
		}
	}
	params := map[string]string{}
	for _, f := range a.fields {
		if params[f], oxErr = oxSingle(form, f); oxErr != nil {
			h.writeOXError(w, r, name, oxErr)
			return
		}
	}
	var raw json.RawMessage
	if len(params) > 0 {
		raw, _ = json.Marshal(params) // a map of strings always marshals
	}
	result, rpcErr := h.RPC.Call(r.Context(), c, a.rpcMethod, raw)
	if rpcErr != nil {
		h.writeOXError(w, r, name, oxFromRPC(rpcErr, params))
		return
	}
	// The result is mapped through its JSON-RPC form, the documented one,
	// rather than the Go types behind it.
	out, err := json.Marshal(result)
	var data any
	if err == nil {
		data, err = a.data(out)
	}
	if err != nil {
		h.writeOXError(w, r, name, oxFromRPC(jsonrpc.ToError(err, h.logger(r), a.rpcMethod), nil))
		return
	}
	writeOX(w, map[string]any{"data": data})
}

// oxForm reads the request's parameters, from the query and, for a form
// POST, the body: OX takes either (HTTP API introduction, "some or all
// parameters may be sent in the request body").
func oxForm(w http.ResponseWriter, r *http.Request) (url.Values, *oxError) {
	r.Body = http.MaxBytesReader(w, r.Body, oxMaxBody)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, oxErrorf(oxBadRequest, "request body exceeds 16 KiB", "Request body exceeds 16 KiB.")
		}
		return nil, oxErrorf(oxBadRequest, "malformed request parameters", "Malformed request parameters.")
	}
	return r.Form, nil
}

// oxSingle returns the one value of a required parameter: missing, given
// twice (in the query, the body or both), over oxMaxValue bytes or not
// UTF-8 is an error.
func oxSingle(form url.Values, key string) (string, *oxError) {
	vs := form[key]
	switch {
	case len(vs) == 0:
		return "", oxErrorf(oxMissingParam, "missing the request parameter "+key, key)
	case len(vs) > 1:
		return "", oxInvalid(key, "is given more than once")
	case len(vs[0]) > oxMaxValue:
		return "", oxInvalid(key, fmt.Sprintf("must be at most %d bytes", oxMaxValue))
	case !utf8.ValidString(vs[0]):
		return "", oxInvalid(key, "is not valid UTF-8")
	}
	return vs[0], nil
}

// Results. Keys are written as OX writes them (AppPasswordApplicationsConverter,
// ApplicationPasswordResultConverter, AddAppPassword, RemoveAppPassword).

func oxApps(result json.RawMessage) (any, error) {
	var apps []struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		Sort        int    `json:"sort"`
	}
	if err := json.Unmarshal(result, &apps); err != nil {
		return nil, err
	}
	return apps, nil
}

// oxListed is one row of OX's list. OX writes LastDevice, LastLogin and IP
// only for a password that has been used (and omits null values), so a
// never-used one has UUID, Scope and Name only. GeoData needs OX's
// geolocation service; the sidecar has none, as OX without it.
type oxListed struct {
	UUID       string `json:"UUID"`
	Scope      string `json:"Scope"`
	Name       string `json:"Name"`
	LastDevice string `json:"LastDevice,omitempty"`
	LastLogin  *int64 `json:"LastLogin,omitempty"` // ms since the epoch
	IP         string `json:"IP,omitempty"`
}

func oxList(result json.RawMessage) (any, error) {
	var rows []struct {
		UUID      string `json:"uuid"`
		Name      string `json:"name"`
		AppScope  string `json:"appScope"`
		LastLogin *struct {
			Time   time.Time `json:"time"`
			IP     string    `json:"ip"`
			Device string    `json:"device"`
		} `json:"lastLogin"`
	}
	if err := json.Unmarshal(result, &rows); err != nil {
		return nil, err
	}
	out := make([]oxListed, 0, len(rows))
	for _, p := range rows {
		row := oxListed{UUID: p.UUID, Scope: p.AppScope, Name: p.Name}
		if l := p.LastLogin; l != nil {
			ms := l.Time.UnixMilli()
			row.LastLogin, row.IP, row.LastDevice = &ms, l.IP, l.Device
		}
		out = append(out, row)
	}
	return out, nil
}

func oxAdded(result json.RawMessage) (any, error) {
	var added struct {
		Password string `json:"password"`
		Login    string `json:"login"`
		NewLogin bool   `json:"newLogin"`
	}
	err := json.Unmarshal(result, &added)
	return added, err
}

func oxRemoved(result json.RawMessage) (any, error) {
	var removed struct {
		Result string `json:"result"`
	}
	err := json.Unmarshal(result, &removed)
	return removed, err
}

// Errors.

// oxCode is an OX error code as OX defines it: its category (name and the
// legacy number of Categories.getFormerCategoryNumber) and the message OX
// shows the user, with %s for the error params where it has them.
type oxCode struct {
	code, category string
	categoryNumber int
	display        string
}

// OX's default text for codes without a display message
// (OXExceptionStrings.MESSAGE).
const oxGenericMessage = "An error occurred inside the server which prevented it from fulfilling the request."

var (
	// AppPasswordExceptionCodes (prefix ASP).
	oxNotAuthorized = oxCode{"ASP-0001", "PERMISSION_DENIED", 3, "This account isn't authorized to perform this action."}
	oxUnknownApp    = oxCode{"ASP-0002", "ERROR", 8, "Unknown application type %s"}
	oxGeneric       = oxCode{"ASP-0005", "ERROR", 8, oxGenericMessage}
	oxNoDatabase    = oxCode{"ASP-0010", "ERROR", 8, oxGenericMessage}
	// AjaxExceptionCodes (prefix SVL).
	oxMissingParam    = oxCode{"SVL-0002", "ERROR", 8, oxGenericMessage}
	oxInvalidParam    = oxCode{"SVL-0010", "ERROR", 8, oxGenericMessage}
	oxUnexpected      = oxCode{"SVL-0011", "ERROR", 8, oxGenericMessage}
	oxBadRequest      = oxCode{"SVL-0020", "ERROR", 8, oxGenericMessage}
	oxUnknownAction   = oxCode{"SVL-0021", "ERROR", 8, oxGenericMessage}
	oxNotAllowedParam = oxCode{"SVL-0030", "ERROR", 8, oxGenericMessage}
	// SessionExceptionCodes.SESSION_EXPIRED: any SES- code makes App Suite
	// ask the user to log in again, after which the proxy can mint a token.
	oxSessionExpired = oxCode{"SES-0203", "TRY_AGAIN", 4, "Your session expired. Please login again."}
)

// oxOfRPC is the one table from JSON-RPC error codes (rpc/jsonrpc/errors.go) to OX
// codes. -32602 becomes ASP-0002 where the service names that OX code (an
// unknown appScope), SVL-0010 otherwise. Codes not listed (they cannot
// arise from these four methods) are SVL-0011.
var oxOfRPC = map[int64]oxCode{
	errcode.Unauthenticated: oxSessionExpired,
	errcode.Forbidden:       oxNotAuthorized,
	errcode.InvalidParams:   oxInvalidParam,
	// OX's remove answers OK for a uuid it does not find; the sidecar keeps
	// its error, so a stale list in the UI shows instead of hiding.
	errcode.NotFound:    oxInvalidParam,
	errcode.Limit:       oxGeneric,
	errcode.Unavailable: oxNoDatabase,
	errcode.Internal:    oxUnexpected,
}

// oxError is an error in the making: its code, OX's error_params, and the
// technical English message that goes into error_desc.
type oxError struct {
	code   oxCode
	desc   string
	params []any
}

func oxErrorf(code oxCode, desc string, params ...any) *oxError {
	if params == nil {
		params = []any{}
	}
	return &oxError{code: code, desc: desc, params: params}
}

func oxInvalid(field, reason string) *oxError {
	return oxErrorf(oxInvalidParam, "invalid parameter "+field+": "+reason, field, reason)
}

// oxFromRPC translates a JSON-RPC error through oxOfRPC; given are the
// parameters the call was made with.
func oxFromRPC(e *jsonrpc.Error, given map[string]string) *oxError {
	var data errcode.Data
	if e.Data != nil {
		_ = json.Unmarshal(e.Data, &data)
	}
	code, ok := oxOfRPC[e.Code]
	if !ok {
		code = oxUnexpected
	}
	switch {
	case data.OX == oxUnknownApp.code:
		// OX's only param is the unknown application type as given.
		return oxErrorf(oxUnknownApp, e.Message, given[data.Field])
	case e.Code == errcode.InvalidParams && data.Field != "":
		return oxErrorf(code, e.Message, data.Field, data.Reason)
	case e.Code == errcode.NotFound:
		return oxErrorf(code, e.Message, "uuid", e.Message)
	case code == oxSessionExpired:
		return oxErrorf(code, e.Message)
	}
	return oxErrorf(code, e.Message, e.Message)
}

// oxErrorIDs make error_id the way OX does: this process's random id, a
// dash, a counter (OXException.getExceptionId).
var (
	oxServerID = func() uint32 {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return binary.BigEndian.Uint32(b[:]) >> 1
	}()
	oxErrorCount atomic.Uint64
)

// writeOXError writes OX's error envelope (ResponseWriter.addException)
// with HTTP 200, as OX answers application errors; the UI reads the body.
func (h Handler) writeOXError(w http.ResponseWriter, r *http.Request, action string, e *oxError) {
	id := strconv.FormatUint(uint64(oxServerID), 10) + "-" + strconv.FormatUint(oxErrorCount.Add(1), 10)
	display := e.code.display
	if e.code == oxUnknownApp && len(e.params) == 1 {
		display = fmt.Sprintf(display, e.params[0])
	}
	// The error_id is logged so an error a user reports can be found; the
	// params are not (they may hold what the user typed).
	h.logger(r).Debug("ox api error", "action", action, "code", e.code.code, "error_id", id, "desc", e.desc)
	writeOX(w, map[string]any{
		"error":        display,
		"error_params": e.params,
		"categories":   e.code.category,
		"category":     e.code.categoryNumber,
		"code":         e.code.code,
		"error_id":     id,
		"error_desc":   e.desc,
	})
}

func (h Handler) logger(r *http.Request) *slog.Logger { return edge.Logger(r.Context(), h.RPC.Logger) }

// writeOX writes an OX response body. A new password is in an add answer,
// so nothing is cached.
func writeOX(w http.ResponseWriter, body any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(body)
}
