// Package rpc is apppassd's HTTP side: the mux that routes to the edges
// (rpc/jsonrpc: JSON-RPC 2.0 on POST and WebSocket /rpc; rpc/ox: the
// OX-compatible API; rpc/gatewayauth: nginx's /auth/basic and /auth/mail;
// rpc/provisioning: the provisioning webhook), the middleware every
// request passes (request ids, CORS, the access log), the metrics, and the
// authentication of callers.
package rpc

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/gatewayauth"
	"github.com/apppass/apppass/rpc/internal/edge"
	"github.com/apppass/apppass/rpc/jsonrpc"
	"github.com/apppass/apppass/rpc/ox"
	"github.com/apppass/apppass/rpc/provisioning"
)

// The types of Server's settings, declared by the edges that use them.
type (
	// MailBackend is where nginx's mail proxy sends an accepted login.
	MailBackend = gatewayauth.MailBackend
	// MailMaster is an optional master login for the mail backend.
	MailMaster = gatewayauth.MailMaster
	// Provisioning configures POST /webhooks/provisioning.
	Provisioning = provisioning.Config
	// WebhookAdmin is what admins see and do of the outbound webhooks.
	WebhookAdmin = jsonrpc.WebhookAdmin
	// DoveadmAdmin is what admins see of the Dovecots kicked on revocations.
	DoveadmAdmin = jsonrpc.DoveadmAdmin
)

// DefaultMailBackends are the standard ports on 127.0.0.1.
func DefaultMailBackends() map[string]MailBackend { return gatewayauth.DefaultMailBackends() }

// Server is the HTTP side of the sidecar. Its settings are read on every
// request, so they may be changed until it serves.
type Server struct {
	Service *apppass.Service
	Auth    *Callers
	// Ready reports whether the backing services answer; nil error is ready.
	Ready  func(ctx context.Context) error
	Logger *slog.Logger
	// PendingEvents, if set, counts the events waiting in the outbox; /readyz
	// shows it as "pendingEvents" when the store answers.
	PendingEvents func(ctx context.Context) (int64, error)
	// MailBackends maps imap, pop3 and smtp to the servers nginx's mail
	// proxy hands accepted logins to; MailMaster optionally logs in there.
	MailBackends map[string]MailBackend
	MailMaster   *MailMaster
	// BasicRealm is the realm of the HTTP Basic challenge on /auth/basic.
	BasicRealm string
	// Webhooks shows admins the outbound webhooks; nil when none are configured.
	Webhooks WebhookAdmin
	// Doveadm shows admins the Dovecots kicked on revocations; nil when
	// none are configured.
	Doveadm DoveadmAdmin
	// Provisioning configures POST /webhooks/provisioning; nil answers 404.
	Provisioning *Provisioning
	// Metrics, when set, counts calls and logins and is served at GET
	// /metrics (rpc/metrics.go).
	Metrics *Metrics
	// CORSOrigins may call /rpc and /appsuite/api/ from a browser
	// (rpc/middleware.go).
	CORSOrigins []string
	// UI, when set, serves the settings page at GET / and its assets under
	// GET /ui/ (package ui); nil leaves both 404.
	UI http.Handler
	// SocketIdleTimeout closes a WebSocket connection that sent no message
	// and answered no ping for this long (default 90 s).
	SocketIdleTimeout time.Duration

	sockets jsonrpc.Sockets
	// checkOrigin is checkWebSocketOrigin, bound once (a method value made
	// per request would cost an allocation on every call).
	checkOrigin func(r *http.Request) bool
}

// Handler routes every endpoint, each to the edge that answers it.
func (s *Server) Handler() http.Handler {
	s.checkOrigin = s.checkWebSocketOrigin
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc", func(w http.ResponseWriter, r *http.Request) { s.jsonrpc().ServePOST(w, r) })
	mux.HandleFunc("GET /rpc", func(w http.ResponseWriter, r *http.Request) { s.jsonrpc().ServeWebSocket(w, r) })
	mux.HandleFunc("GET /auth/basic", func(w http.ResponseWriter, r *http.Request) { s.gatewayAuth().ServeBasic(w, r) })
	mux.HandleFunc("GET /auth/mail", func(w http.ResponseWriter, r *http.Request) { s.gatewayAuth().ServeMail(w, r) })
	mux.HandleFunc("POST /webhooks/provisioning", func(w http.ResponseWriter, r *http.Request) {
		provisioning.Handler{Service: s.Service, Config: s.Provisioning, Logger: s.Logger}.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /openrpc.json", jsonrpc.ServeOpenRPC) // public: see rpc/jsonrpc/openrpc.go
	mux.HandleFunc("GET /asyncapi.yaml", serveAsyncAPI)       // public: see asyncapi.go
	if s.UI != nil {
		mux.Handle("GET /{$}", s.UI)
		mux.Handle("GET /ui/", s.UI)
	}
	// The OX-compatible API checks the HTTP method per action.
	mux.HandleFunc("/appsuite/api/appPasswords", func(w http.ResponseWriter, r *http.Request) {
		ox.Handler{RPC: s.jsonrpc()}.ServeHTTP(w, r)
	})
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		edge.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, body := http.StatusOK, map[string]any{"status": "ready"}
		if err := s.Ready(ctx); err != nil {
			status, body = http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": err.Error()}
		}
		if s.PendingEvents != nil && ctx.Err() == nil {
			if n, err := s.PendingEvents(ctx); err == nil {
				body["pendingEvents"] = n
			}
		}
		edge.WriteJSON(w, status, body)
	})
	return s.withRequestContext(mux) // request ids, CORS, access log: middleware.go
}

// jsonrpc is the JSON-RPC stack with the server's settings as they are now.
func (s *Server) jsonrpc() jsonrpc.Handler {
	return jsonrpc.Handler{
		Service: s.Service, Auth: s.Auth, Logger: s.Logger, Metrics: s.Metrics,
		Webhooks: s.Webhooks, Doveadm: s.Doveadm,
		Sockets: &s.sockets, SocketIdleTimeout: s.SocketIdleTimeout, CheckOrigin: s.checkOrigin,
	}
}

func (s *Server) gatewayAuth() gatewayauth.Handler {
	return gatewayauth.Handler{
		Service: s.Service, Auth: s.Auth, Logger: s.Logger, Metrics: s.Metrics,
		MailBackends: s.MailBackends, MailMaster: s.MailMaster, BasicRealm: s.BasicRealm,
	}
}

// CloseWebSockets waits for WebSocket calls in flight, then closes every
// WebSocket connection. http.Server.Shutdown does not see hijacked
// connections, so SIGTERM handling calls this after it.
func (s *Server) CloseWebSockets(ctx context.Context) { s.sockets.Close(ctx) }
