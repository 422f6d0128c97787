package rpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apppass/apppass"
)

// GatewayKeyHeader carries the gateway's service key on the adapter
// endpoints (nginx sets it with proxy_set_header or auth_http_header).
const GatewayKeyHeader = "X-AppPass-Gateway-Key"

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

// gatewayCaller checks the gateway key of an adapter request.
func (s *Server) gatewayCaller(r *http.Request) bool {
	c, err := s.Auth.Authenticate(r.Header.Get(GatewayKeyHeader))
	if err != nil || (c.Role != apppass.RoleGateway && c.Role != apppass.RoleAdmin) {
		s.logger(r.Context()).Warn("adapter request without a valid gateway key", "path", r.URL.Path, "remote", r.RemoteAddr)
		return false
	}
	return true
}

// serveBasicAuth answers nginx's auth_request subrequest for HTTP Basic
// logins (CalDAV, CardDAV, WebDAV, EAS, Drive behind nginx).
func (s *Server) serveBasicAuth(w http.ResponseWriter, r *http.Request) {
	protocol := r.Header.Get("X-AppPass-Protocol")
	if !s.gatewayCaller(r) {
		s.Metrics.observeLoginOutcome(protocol, outcomeForbidden)
		http.Error(w, "missing or invalid "+GatewayKeyHeader, http.StatusForbidden)
		return
	}
	challenge := func() {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", s.basicRealm()))
		w.WriteHeader(http.StatusUnauthorized)
	}
	login, password, ok := r.BasicAuth()
	if !ok {
		s.Metrics.observeLoginOutcome(protocol, outcomeNoCreds)
		challenge()
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	res, err := s.Service.Authenticate(ctx, apppass.LoginAttempt{
		Login: login, Password: password, Protocol: protocol,
		IP: r.Header.Get("X-Real-IP"), Device: r.Header.Get("X-AppPass-Device"), UserAgent: r.UserAgent(),
	})
	s.Metrics.observeLogin(protocol, err)
	if err != nil {
		switch kind, retry := errorKind(err); kind {
		case apppass.KindRejected, kindBadCredentials:
			challenge()
		case apppass.KindLimit:
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			w.WriteHeader(http.StatusTooManyRequests)
		case apppass.KindInvalid: // the gateway's configuration, not the user
			s.logger(r.Context()).Warn("auth_request refused", "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			toRPCError(err, s.logger(r.Context()), "auth/basic")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	h := w.Header()
	h.Set("X-AppPass-User", strconv.FormatInt(res.UserID, 10))
	h.Set("X-AppPass-Context", strconv.FormatInt(res.ContextID, 10))
	h.Set("X-AppPass-Login", res.Login)
	h.Set("X-AppPass-UUID", res.UUID)
	h.Set("X-AppPass-Scopes", strings.Join(res.Scopes, ","))
	if res.Expires != nil {
		h.Set("X-AppPass-Expires", res.Expires.UTC().Format(time.RFC3339))
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

// serveMailAuth speaks nginx's mail auth_http protocol for IMAP, POP3 and
// SMTP: the answer is always HTTP 200, with Auth-Status saying OK or why not.
func (s *Server) serveMailAuth(w http.ResponseWriter, r *http.Request) {
	protocol := r.Header.Get("Auth-Protocol")
	if !s.gatewayCaller(r) {
		s.Metrics.observeLoginOutcome(protocol, outcomeForbidden)
		http.Error(w, "missing or invalid "+GatewayKeyHeader, http.StatusForbidden)
		return
	}
	h := w.Header()
	attempt, _ := strconv.Atoi(r.Header.Get("Auth-Login-Attempt"))
	refuse := func(status string, wait int, smtpCode string) {
		h.Set("Auth-Status", status)
		if wait > 0 && attempt < maxMailAttempts {
			h.Set("Auth-Wait", strconv.Itoa(wait))
		}
		if protocol == "smtp" && smtpCode != "" {
			h.Set("Auth-Error-Code", smtpCode)
		}
		w.WriteHeader(http.StatusOK)
	}
	backend, ok := s.MailBackends[protocol]
	if !ok {
		s.logger(r.Context()).Warn("auth_http: no mail backend for protocol", "protocol", protocol)
		s.Metrics.observeLoginOutcome(protocol, outcomeError)
		refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		return
	}
	switch method := r.Header.Get("Auth-Method"); method {
	case "plain", "login":
	default: // app passwords need the password in the clear
		s.Metrics.observeLoginOutcome(protocol, outcomeInvalid)
		refuse("Unsupported authentication method", 0, "504 5.5.4")
		return
	}
	// nginx URL-encodes both (but never turns spaces into "+").
	login, err1 := url.PathUnescape(r.Header.Get("Auth-User"))
	password, err2 := url.PathUnescape(r.Header.Get("Auth-Pass"))
	if err1 != nil || err2 != nil {
		s.Metrics.observeLoginOutcome(protocol, outcomeInvalid)
		refuse("Invalid login or password", 2, "535 5.7.8")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	res, err := s.Service.Authenticate(ctx, apppass.LoginAttempt{
		Login: login, Password: password, Protocol: protocol, IP: r.Header.Get("Client-IP"),
	})
	s.Metrics.observeLogin(protocol, err)
	if err != nil {
		switch kind, retry := errorKind(err); kind {
		case apppass.KindRejected, kindBadCredentials:
			refuse("Invalid login or password", 2, "535 5.7.8")
		case apppass.KindLimit:
			// nginx holds the connection for Auth-Wait seconds: keep that
			// short, the block itself is enforced on every attempt.
			refuse("Too many failed logins, try again later", min(retry, maxMailWait), "454 4.7.0")
		case apppass.KindInvalid: // a Client-IP that is none: the proxy's configuration, not the user
			s.logger(r.Context()).Warn("auth_http refused", "err", err)
			refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		default:
			toRPCError(err, s.logger(r.Context()), "auth/mail")
			refuse("Temporary server problem, try again later", 3, "451 4.3.0")
		}
		return
	}
	h.Set("Auth-Status", "OK")
	h.Set("Auth-Server", backend.Addr.Addr().String())
	h.Set("Auth-Port", strconv.Itoa(int(backend.Addr.Port())))
	if m := s.MailMaster; m != nil {
		h.Set("Auth-User", res.Login+m.Separator+m.User)
		h.Set("Auth-Pass", m.Password)
	}
	h.Set("X-AppPass-UUID", res.UUID)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) basicRealm() string {
	if s.BasicRealm != "" {
		return s.BasicRealm
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
	return kind, retryAfterSeconds(err)
}

func retryAfterSeconds(err error) int {
	d := apppass.RetryAfterOf(err)
	if d <= 0 {
		return 1
	}
	return int(math.Ceil(d.Seconds()))
}
