// Package gatewayauth answers nginx's login checks: GET /auth/basic, the
// auth_request subrequest for HTTP Basic logins, and GET /auth/mail, the
// mail proxy's auth_http protocol. Both check an app password through
// Service.Authenticate, as the JSON-RPC appPasswords.authenticate does.
package gatewayauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// KeyHeader carries the gateway's service key on these endpoints (nginx
// sets it with proxy_set_header or auth_http_header).
const KeyHeader = "X-AppPass-Gateway-Key"

// Handler answers /auth/basic and /auth/mail.
type Handler struct {
	Service *apppass.Service
	// Auth checks the gateway key: gateway and admin keys may ask.
	Auth   edge.Identifier
	Logger *slog.Logger
	// Metrics counts the logins; nil counts nothing.
	Metrics Observer
	// MailBackends maps imap, pop3 and smtp to the servers nginx's mail
	// proxy hands accepted logins to; MailMaster optionally logs in there.
	MailBackends map[string]MailBackend
	MailMaster   *MailMaster
	// BasicRealm is the realm of the HTTP Basic challenge on /auth/basic.
	BasicRealm string
}

// Observer counts login attempts (rpc.Metrics). err is what Authenticate
// returned, or for an attempt refused before it, one of the errors below
// or an *apppass.Error of KindInvalid (a malformed attempt).
type Observer interface {
	ObserveLogin(protocol string, err error)
}

// Attempts refused before they reach the service, as an Observer sees them.
var (
	// ErrNoGatewayKey: the request carries no valid gateway key.
	ErrNoGatewayKey = errors.New("missing or invalid " + KeyHeader)
	// ErrNoCredentials: /auth/basic without Basic credentials.
	ErrNoCredentials = errors.New("no Basic credentials")
	// errNoBackend: /auth/mail for a protocol with no mail backend (an
	// internal error, the configuration's).
	errNoBackend = errors.New("no mail backend for the protocol")
	// errBadMailLogin: nginx sent an authentication method app passwords
	// cannot use, or a login that does not decode.
	errBadMailLogin = apppass.Invalid("login", "cannot be checked")
)

func (h Handler) logger(r *http.Request) *slog.Logger { return edge.Logger(r.Context(), h.Logger) }

func (h Handler) observe(protocol string, err error) {
	if h.Metrics != nil {
		h.Metrics.ObserveLogin(protocol, err)
	}
}

// MailBackend is where nginx's mail proxy sends a client once its login
// is accepted. nginx requires an IP address here, not a host name.
type MailBackend struct {
	Addr netip.AddrPort
}

// MailMaster is an optional master login for the mail backend: nginx logs
// in to the backend as "<login><Separator><User>" with Password, so the
// backend need not know app passwords (Dovecot master users work this way).
type MailMaster struct {
	User, Password, Separator string
}

// DefaultMailBackends are the standard ports on 127.0.0.1.
func DefaultMailBackends() map[string]MailBackend {
	lo := netip.MustParseAddr("127.0.0.1")
	return map[string]MailBackend{
		"imap": {netip.AddrPortFrom(lo, 143)},
		"pop3": {netip.AddrPortFrom(lo, 110)},
		"smtp": {netip.AddrPortFrom(lo, 25)},
	}
}

// gatewayCaller checks the gateway key of a request.
func (h Handler) gatewayCaller(r *http.Request) bool {
	c, err := h.Auth.Identify(r.Header.Get(KeyHeader))
	if err != nil || (c.Role != apppass.RoleGateway && c.Role != apppass.RoleAdmin) {
		h.logger(r).Warn("adapter request without a valid gateway key", "path", r.URL.Path, "remote", r.RemoteAddr)
		return false
	}
	return true
}

// admitGateway answers 403 and counts the refusal unless the request
// carries a gateway key.
func (h Handler) admitGateway(w http.ResponseWriter, r *http.Request, protocol string) bool {
	if h.gatewayCaller(r) {
		return true
	}
	h.observe(protocol, ErrNoGatewayKey)
	http.Error(w, ErrNoGatewayKey.Error(), http.StatusForbidden)
	return false
}

// ServeBasic answers nginx's auth_request subrequest for HTTP Basic
// logins (CalDAV, CardDAV, WebDAV, EAS, Drive behind nginx).
func (h Handler) ServeBasic(w http.ResponseWriter, r *http.Request) {
	protocol := r.Header.Get("X-AppPass-Protocol")
	if !h.admitGateway(w, r, protocol) {
		return
	}
	challenge := func() {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", h.basicRealm()))
		w.WriteHeader(http.StatusUnauthorized)
	}
	login, password, ok := r.BasicAuth()
	if !ok {
		h.observe(protocol, ErrNoCredentials)
		challenge()
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), edge.CallTimeout)
	defer cancel()
	res, err := h.Service.Authenticate(ctx, apppass.LoginAttempt{
		Login: login, Password: password, Protocol: protocol,
		IP: r.Header.Get("X-Real-IP"), Device: r.Header.Get("X-AppPass-Device"), UserAgent: r.UserAgent(),
	})
	h.observe(protocol, err)
	if err != nil {
		switch kind, retry := errorKind(err); kind {
		case apppass.KindRejected, kindBadCredentials:
			challenge()
		case apppass.KindLimit:
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			w.WriteHeader(http.StatusTooManyRequests)
		case apppass.KindInvalid: // the gateway's configuration, not the user
			h.logger(r).Warn("auth_request refused", "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			edge.LogFailure(h.logger(r), "auth/basic", err)
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	hdr := w.Header()
	hdr.Set("X-AppPass-User", strconv.FormatInt(res.UserID, 10))
	hdr.Set("X-AppPass-Context", strconv.FormatInt(res.ContextID, 10))
	hdr.Set("X-AppPass-Login", res.Login)
	hdr.Set("X-AppPass-UUID", res.UUID)
	hdr.Set("X-AppPass-Scopes", strings.Join(res.Scopes, ","))
	if res.Expires != nil {
		hdr.Set("X-AppPass-Expires", res.Expires.UTC().Format(time.RFC3339))
	}
	w.WriteHeader(http.StatusOK)
}

// maxMailAttempts ends a mail session after this many failed logins: nginx
// keeps every attempt's memory until the session ends, and its protocol asks
// the auth server to answer without Auth-Wait (which closes the connection)
// after 10 to 20 attempts, numbered in Auth-Login-Attempt.
const maxMailAttempts = 10

// maxMailWait caps Auth-Wait for throttled logins, in seconds.
const maxMailWait = 5

// ServeMail speaks nginx's mail auth_http protocol for IMAP, POP3 and
// SMTP: the answer is always HTTP 200, with Auth-Status saying OK or why not.
func (h Handler) ServeMail(w http.ResponseWriter, r *http.Request) {
	protocol := r.Header.Get("Auth-Protocol")
	if !h.admitGateway(w, r, protocol) {
		return
	}
	hdr := w.Header()
	attempt, _ := strconv.Atoi(r.Header.Get("Auth-Login-Attempt"))
	refuse := func(status string, wait int, smtpCode string) {
		hdr.Set("Auth-Status", status)
		if wait > 0 && attempt < maxMailAttempts {
			hdr.Set("Auth-Wait", strconv.Itoa(wait))
		}
		if protocol == "smtp" && smtpCode != "" {
			hdr.Set("Auth-Error-Code", smtpCode)
		}
		w.WriteHeader(http.StatusOK)
	}
	backend, ok := h.MailBackends[protocol]
	if !ok {
		h.logger(r).Warn("auth_http: no mail backend for protocol", "protocol", protocol)
		h.observe(protocol, errNoBackend)
		refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		return
	}
	switch method := r.Header.Get("Auth-Method"); method {
	case "plain", "login":
	default: // app passwords need the password in the clear
		h.observe(protocol, errBadMailLogin)
		refuse("Unsupported authentication method", 0, "504 5.5.4")
		return
	}
	// nginx URL-encodes both (but never turns spaces into "+").
	login, err1 := url.PathUnescape(r.Header.Get("Auth-User"))
	password, err2 := url.PathUnescape(r.Header.Get("Auth-Pass"))
	if err1 != nil || err2 != nil {
		h.observe(protocol, errBadMailLogin)
		refuse("Invalid login or password", 2, "535 5.7.8")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), edge.CallTimeout)
	defer cancel()
	res, err := h.Service.Authenticate(ctx, apppass.LoginAttempt{
		Login: login, Password: password, Protocol: protocol, IP: r.Header.Get("Client-IP"),
	})
	h.observe(protocol, err)
	if err != nil {
		switch kind, retry := errorKind(err); kind {
		case apppass.KindRejected, kindBadCredentials:
			refuse("Invalid login or password", 2, "535 5.7.8")
		case apppass.KindLimit:
			// nginx holds the connection for Auth-Wait seconds: keep that
			// short, the block itself is enforced on every attempt.
			refuse("Too many failed logins, try again later", min(retry, maxMailWait), "454 4.7.0")
		case apppass.KindInvalid: // a Client-IP that is none: the proxy's configuration, not the user
			h.logger(r).Warn("auth_http refused", "err", err)
			refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		default:
			edge.LogFailure(h.logger(r), "auth/mail", err)
			refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		}
		return
	}
	hdr.Set("Auth-Status", "OK")
	hdr.Set("Auth-Server", backend.Addr.Addr().String())
	hdr.Set("Auth-Port", strconv.Itoa(int(backend.Addr.Port())))
	if m := h.MailMaster; m != nil {
		hdr.Set("Auth-User", res.Login+m.Separator+m.User)
		hdr.Set("Auth-Pass", m.Password)
	}
	hdr.Set("X-AppPass-UUID", res.UUID)
	w.WriteHeader(http.StatusOK)
}

func (h Handler) basicRealm() string {
	if h.BasicRealm != "" {
		return h.BasicRealm
	}
	return "App password"
}

// errorKind returns err's kind and, for limits, the seconds to wait.
// kindBadCredentials is, for the gateway endpoints, a login or password
// refused for its form (such as longer than 256 bytes): the user's input,
// answered like a wrong password, not the gateway's configuration.
const kindBadCredentials apppass.Kind = -1

func errorKind(err error) (apppass.Kind, int) {
	kind := apppass.KindOf(err)
	var e *apppass.Error
	if kind == apppass.KindInvalid && errors.As(err, &e) && (e.Field == "login" || e.Field == "password") {
		kind = kindBadCredentials
	}
	return kind, edge.RetryAfterSeconds(err)
}
