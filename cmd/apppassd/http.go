package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/oidc"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/ui"
)

// startService makes the Service with its throttle, authenticate cache
// and last-login writer, and starts its background work.
func (d *daemon) startService(context.Context) error {
	cfg := d.cfg
	svc := &apppass.Service{Store: d.store, Apps: d.apps, Digester: d.keys.digester, Events: d.relay, MaxPerUser: cfg.MaxPerUser, Reauth: cfg.Reauth}
	if cfg.Throttle.PairLimit > 0 || cfg.Throttle.IPLimit > 0 {
		svc.Throttle = &apppass.Throttle{Store: d.store, Policy: cfg.Throttle}
	}
	if cfg.AuthCacheTTL > 0 {
		svc.Cache = apppass.NewAuthCache(cfg.AuthCacheTTL)
		watcher, err := nats.WatchRevocations(d.natsURL, svc.Cache)
		if err != nil {
			return err
		}
		d.onClose(watcher.Close)
		svc.Evictions = watcher
	}
	// Last-login updates that queue no event are written beside the
	// answers, at most 10,000 waiting (lastlogin.go).
	svc.LastLogins = apppass.NewLastLoginWriter(d.store, 10_000)
	d.jobs.wait(func(ctx context.Context) { svc.LastLogins.Run(ctx, 5*time.Second, d.logger) })
	d.jobs.spawn(func(ctx context.Context) { svc.RunSweeper(ctx, cfg.SweepInterval, d.logger) })
	// The outbox's size for /readyz and /metrics, counted once a second.
	d.backlog = nats.NewBacklog(d.store.PendingCount, time.Second)
	d.jobs.spawn(d.backlog.Run)
	d.svc = svc
	return nil
}

// newRPCServer makes the HTTP API on the Service: callers, readiness, the
// nginx and OX endpoints, metrics, the settings page and the webhooks.
func (d *daemon) newRPCServer(context.Context) error {
	cfg, store, publisher := d.cfg, d.store, d.publisher
	srv := &rpc.Server{
		Service: d.svc,
		Auth:    &rpc.Callers{Tokens: d.keys.tokens, ServiceKeys: d.keys.service},
		Logger:  d.logger,
		Ready: func(ctx context.Context) error {
			if err := store.Ping(ctx); err != nil {
				return errors.New(d.shown.name + " is unreachable")
			}
			if !publisher.Connected() {
				return errors.New("NATS is unreachable")
			}
			return nil
		},
		PendingEvents: d.backlog.Pending,
	}
	signIn, err := d.startIssuer(srv)
	if err != nil {
		return err
	}
	srv.MailBackends = rpc.DefaultMailBackends()
	for protocol, addr := range cfg.MailBackends {
		srv.MailBackends[protocol] = rpc.MailBackend{Addr: addr}
	}
	if cfg.MailMasterUser != "" {
		srv.MailMaster = &rpc.MailMaster{User: cfg.MailMasterUser, Password: cfg.MailMasterPassword, Separator: "*"}
	}
	srv.BasicRealm = cfg.BasicRealm
	srv.CORSOrigins = cfg.CORSOrigins
	if cfg.Metrics {
		srv.Metrics = d.newMetrics()
	}
	if cfg.ServeUI() {
		srv.UI = ui.Handler(signIn)
	}
	if d.hooks != nil {
		srv.Webhooks = d.hooks
	}
	if d.kicks != nil {
		srv.Doveadm = d.kicks
	}
	if len(cfg.ProvisioningSecrets) > 0 {
		srv.Provisioning = &rpc.Provisioning{Secrets: cfg.ProvisioningSecrets, IDs: store,
			RevokeOnPasswordChange: cfg.RevokeOnPasswordChange}
	}
	d.srv = srv
	return nil
}

// startIssuer lets srv take the OIDC issuer's tokens, if one is
// configured, and says how the settings page signs in with it. The
// issuer's keys are fetched in the background: apppassd starts while the
// issuer is away, and its tokens answer -32050 until then.
func (d *daemon) startIssuer(srv *rpc.Server) (ui.SignInSource, error) {
	cfg := d.cfg
	if cfg.OIDCIssuer == "" {
		return nil, nil
	}
	issuer, err := oidc.New(oidc.Config{Issuer: cfg.OIDCIssuer, Audience: cfg.OIDCAudience, ClientID: cfg.OIDCClientID,
		Claims: cfg.OIDCClaims, Logger: d.logger})
	if err != nil {
		return nil, fmt.Errorf("APPPASS_OIDC_ISSUER: %w", err)
	}
	d.jobs.spawn(issuer.Run)
	srv.Auth.Issuer = issuer
	if cfg.OIDCClientID == "" {
		return nil, nil
	}
	return pageSignIn(issuer, cfg), nil
}

func (d *daemon) newMetrics() *rpc.Metrics {
	src := rpc.MetricsSources{Cache: d.svc.Cache, PendingEvents: d.backlog.Pending,
		StorePing: d.store.Ping, NATSConnected: d.publisher.Connected}
	if d.hooks != nil {
		src.WebhookDeliveries = d.hooks.DeliveryCounts
	}
	if d.kicks != nil {
		src.Doveadm = d.kicks.Targets
	}
	return rpc.NewMetrics(src)
}

// startPprof serves Go's profiles on APPPASS_PPROF_LISTEN, if set.
func (d *daemon) startPprof(context.Context) error {
	if d.cfg.PprofListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", d.cfg.PprofListen)
	if err != nil {
		return fmt.Errorf("APPPASS_PPROF_LISTEN %s: %w", d.cfg.PprofListen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(ln, mux) }()
	d.onClose(func() { ln.Close() })
	d.pprofAddr = ln.Addr().String()
	return nil
}

// startHTTP listens on APPPASS_LISTEN and serves the API there.
func (d *daemon) startHTTP(context.Context) error {
	cfg := d.cfg
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("APPPASS_LISTEN %s: %w", cfg.Listen, err)
	}
	// The server's own complaints (bad TLS, panics) go through our logger,
	// so JSON logs stay JSON.
	// (gorilla/websocket clears the connection's deadlines when it takes
	// it over, so the read and write timeouts do not cut WebSockets.)
	d.http = &http.Server{Handler: d.srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: cfg.HTTPReadTimeout, WriteTimeout: cfg.HTTPWriteTimeout, IdleTimeout: cfg.HTTPIdleTimeout,
		ErrorLog: slog.NewLogLogger(d.logger.Handler(), slog.LevelWarn)}
	d.addr = ln.Addr().String()
	d.served = make(chan error, 1)
	go func() { d.served <- d.http.Serve(ln) }()
	return nil
}

// announce says where apppassd listens: in the log, in the ready file of
// the data dir, and, on the embedded default, in a welcome text on stdout.
func (d *daemon) announce(stdout io.Writer) {
	cfg := d.cfg
	d.logger.Info("apppassd listening", "http", "http://"+d.addr, "store", d.shown.detail, "nats", apppass.RedactURL(d.natsURL),
		"stream", events.StreamName, "apps", len(d.apps.Apps()), "maxPerUser", cfg.MaxPerUser)
	if cfg.UsesDataDir() {
		d.writeReady()
	}
	if cfg.EmbeddedStore() && cfg.UserTokenKey == "" {
		printWelcome(stdout, d.addr, cmp.Or(d.gatewayNATS, d.natsURL), d.keys.tokens, d.keys.service, cfg.ServeUI())
	}
}

// writeReady writes the ready file (datadir.Ready: addresses, no secret),
// removed when apppassd stops. A data dir it cannot be written in costs
// the file, not the service.
func (d *daemon) writeReady() {
	r := datadir.Ready{PID: os.Getpid(), HTTP: "http://" + d.addr, NATS: d.natsURL}
	if d.cfg.Metrics {
		r.Metrics = r.HTTP + "/metrics"
	}
	if d.pprofAddr != "" {
		r.Pprof = "http://" + d.pprofAddr + "/debug/pprof/"
	}
	if err := datadir.WriteReady(d.cfg.DataDir, r); err != nil {
		d.logger.Warn("the ready file cannot be written", "file", d.cfg.DataFile(datadir.ReadyFile), "err", err)
		return
	}
	d.onClose(d.removeReady)
}

func (d *daemon) removeReady() {
	if !d.cfg.UsesDataDir() {
		return
	}
	if err := datadir.RemoveReady(d.cfg.DataDir); err != nil {
		d.logger.Warn("the ready file cannot be removed", "err", err)
	}
}

func printWelcome(w io.Writer, addr, natsURL string, tokens *apppass.UserTokens, keys []apppass.ServiceKey, withUI bool) {
	user := apppass.User{ContextID: 1, UserID: 3, Login: "demo@example.com"}
	token := tokens.Mint(user, 24*time.Hour, time.Now(), "pwd")
	fmt.Fprint(w, "\napppassd is running on the embedded default.\n\n")
	if withUI {
		// The token goes in the fragment, which the browser never sends.
		fmt.Fprintf(w, "Open the settings page (signed in as %s):\n  http://%s/#token=%s\n\n", user.Login, addr, token)
	}
	fmt.Fprintf(w, `Example user token for %s (context 1, user 3), valid 24 h:
  export TOKEN=%s

Try it:
  curl -s http://%s/rpc -H "Authorization: Bearer $TOKEN" \
    -d '{"jsonrpc":"2.0","id":1,"method":"appPasswords.add","params":{"appScope":"mail","appName":"My phone"}}'

Watch the events:  nats sub 'apppasswords.>' --server %s
`, user.Login, token, addr, natsURL)
	for _, k := range keys {
		if k.Role == apppass.RoleGateway {
			fmt.Fprintf(w, "Gateway key %q (for appPasswords.authenticate):\n  export GATEWAY_KEY=%s\n", k.Name, k.Secret)
			break
		}
	}
	for _, k := range keys {
		if k.Name == "demo-admin" {
			fmt.Fprintln(w, "Admin CLI (reads the keys in the data dir): go run ./cmd/apppass list --context 1 --user 3 --login demo@example.com")
		}
	}
	fmt.Fprintln(w)
}

// pageSignIn tells the settings page how to sign in with the issuer, once
// its discovery has named the endpoints.
func pageSignIn(issuer *oidc.Issuer, cfg *config.Config) ui.SignInSource {
	return func() (ui.SignIn, bool) {
		e, ok := issuer.Endpoints()
		return ui.SignIn{Issuer: cfg.OIDCIssuer, ClientID: cfg.OIDCClientID, Scope: cfg.OIDCScope,
			AuthorizationEndpoint: e.Authorization, TokenEndpoint: e.Token}, ok
	}
}
