// Command apppassd is the app-password sidecar. This file only wires: it
// reads the configuration, starts the embedded store and NATS when none are
// configured, and hands the pieces to the HTTP server.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/dovecot"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/natsserver"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/oidc"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/storage/mongo"
	"github.com/apppass/apppass/storage/sqlite"
	"github.com/apppass/apppass/ui"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "apppassd:", err)
		return 2
	}
	logger := newLogger(cfg, stderr, cfg.LogLevel)
	if err := serve(ctx, cfg, logger, stdout); err != nil {
		logger.Error("apppassd stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger, stdout io.Writer) error {
	apps, err := cfg.Catalogue()
	if err != nil {
		return err
	}
	embedded := cfg.EmbeddedStore() || cfg.EmbeddedNATS()
	if embedded {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating the data dir: %w", err)
		}
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return err
	}
	digester, tokens, serviceKeys := keys.digester, keys.tokens, keys.service
	store, shown, err := openStore(ctx, cfg, digester, logger)
	if err != nil {
		return err
	}
	defer store.Close()

	// NATS: an embedded server unless a URL is configured.
	natsURL, gatewayNATS := cfg.NATSURL, ""
	var ns *natsserver.Server
	if cfg.EmbeddedNATS() {
		if ns, err = startNATS(cfg); err != nil {
			return err
		}
		defer ns.Stop()
		natsURL, gatewayNATS = ns.ServiceURL(), ns.GatewayURL()
	}
	publisher, err := nats.Connect(natsURL, "apppassd")
	if err != nil {
		return err
	}
	publisher.StreamMaxAge = cfg.StreamMaxAge
	defer publisher.Close()
	// Webhooks: made before the relay publishes anything, so a consumer
	// created now starts early enough to see leftovers from the outbox.
	var hooks *webhook.Webhooks
	if len(cfg.Webhooks) > 0 {
		hooks, err = webhook.New(store, publisher, webhook.Config{
			Endpoints: cfg.Webhooks, Timeout: cfg.WebhookTimeout, RetryBase: cfg.WebhookRetryBase,
			RetryMaxDelay: cfg.WebhookRetryMaxDelay, RetryFor: cfg.WebhookRetryFor,
			AllowPrivate: cfg.WebhookAllowPrivate, Retention: cfg.WebhookRetention, Logger: logger,
		})
		if err != nil {
			return err
		}
	}
	// Create the stream now, not at the first event, so gateways can start
	// consuming at once; retried in the background while NATS is away.
	go func() {
		for ctx.Err() == nil {
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := publisher.EnsureStream(ectx)
			cancel()
			if err == nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	// Dovecot kicks: consumers of their own on the stream, which start at
	// this start (so events the relay publishes now are theirs too).
	var kicks *dovecot.Kicker
	if len(cfg.DoveadmURLs) > 0 {
		if kicks, err = newDoveadm(cfg, apps, logger); err != nil {
			return err
		}
	}
	relay := nats.NewRelay(store, publisher, logger)
	if ns != nil {
		relay.KeepPublished = natsserver.KeepPublished
	}
	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	if m, ok := store.(*mongo.Store); ok {
		go heartbeat(relayCtx, m, relay.ID(), logger)
	}
	relayDone := make(chan struct{})
	go func() { relay.Run(relayCtx); close(relayDone) }()
	hooksDone := make(chan struct{})
	if hooks != nil {
		go func() { hooks.Run(relayCtx); close(hooksDone) }()
	} else {
		close(hooksDone)
	}

	kicksDone := make(chan struct{})
	if kicks != nil {
		go func() { kicks.Run(relayCtx, publisher.JetStream()); close(kicksDone) }()
	} else {
		close(kicksDone)
	}

	svc := &apppass.Service{Store: store, Apps: apps, Digester: digester, Events: relay, MaxPerUser: cfg.MaxPerUser, Reauth: cfg.Reauth}
	if cfg.Throttle.PairLimit > 0 || cfg.Throttle.IPLimit > 0 {
		svc.Throttle = &apppass.Throttle{Store: store, Policy: cfg.Throttle}
	}
	if cfg.AuthCacheTTL > 0 {
		svc.Cache = apppass.NewAuthCache(cfg.AuthCacheTTL)
		watcher, err := nats.WatchRevocations(natsURL, svc.Cache)
		if err != nil {
			return err
		}
		defer watcher.Close()
		svc.Evictions = watcher
	}
	// Last-login updates that queue no event are written beside the
	// answers, at most 10,000 waiting (lastlogin.go).
	svc.LastLogins = apppass.NewLastLoginWriter(store, 10_000)
	lastLoginsDone := make(chan struct{})
	go func() { svc.LastLogins.Run(relayCtx, 5*time.Second, logger); close(lastLoginsDone) }()
	go svc.RunSweeper(relayCtx, cfg.SweepInterval, logger)
	// The outbox's size for /readyz and /metrics, counted once a second.
	backlog := nats.NewBacklog(store.PendingCount, time.Second)
	go backlog.Run(relayCtx)
	srv := &rpc.Server{
		Service: svc,
		Auth:    &rpc.Authenticator{Tokens: tokens, ServiceKeys: serviceKeys},
		Logger:  logger,
		Ready: func(ctx context.Context) error {
			if err := store.Ping(ctx); err != nil {
				return errors.New(shown.name + " is unreachable")
			}
			if !publisher.Connected() {
				return errors.New("NATS is unreachable")
			}
			return nil
		},
		PendingEvents: backlog.Pending,
	}
	var signIn ui.SignInSource
	if cfg.OIDCIssuer != "" {
		// The issuer's keys are fetched in the background: apppassd starts
		// while the issuer is away, and its tokens answer -32050 until then.
		issuer, err := oidc.New(oidc.Config{Issuer: cfg.OIDCIssuer, Audience: cfg.OIDCAudience, ClientID: cfg.OIDCClientID,
			Claims: cfg.OIDCClaims, Logger: logger})
		if err != nil {
			return fmt.Errorf("APPPASS_OIDC_ISSUER: %w", err)
		}
		go issuer.Run(relayCtx)
		srv.Auth.Issuer = issuer
		if cfg.OIDCClientID != "" {
			signIn = pageSignIn(issuer, cfg)
		}
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
		src := rpc.MetricsSources{Cache: svc.Cache, PendingEvents: backlog.Pending,
			StorePing: store.Ping, NATSConnected: publisher.Connected}
		if hooks != nil {
			src.WebhookDeliveries = hooks.DeliveryCounts
		}
		if kicks != nil {
			src.Doveadm = kicks.Targets
		}
		srv.Metrics = rpc.NewMetrics(src)
	}
	if cfg.ServeUI() {
		srv.UI = ui.Handler(signIn)
	}
	if hooks != nil {
		srv.Webhooks = hooks
	}
	if kicks != nil {
		srv.Doveadm = kicks
	}
	if len(cfg.ProvisioningSecrets) > 0 {
		srv.Provisioning = &rpc.Provisioning{Secrets: cfg.ProvisioningSecrets, IDs: store,
			RevokeOnPasswordChange: cfg.RevokeOnPasswordChange}
	}
	if cfg.PprofListen != "" {
		pprofLn, err := net.Listen("tcp", cfg.PprofListen)
		if err != nil {
			return fmt.Errorf("APPPASS_PPROF_LISTEN %s: %w", cfg.PprofListen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go func() { _ = http.Serve(pprofLn, mux) }()
		defer pprofLn.Close()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("APPPASS_LISTEN %s: %w", cfg.Listen, err)
	}
	// The server's own complaints (bad TLS, panics) go through our logger,
	// so JSON logs stay JSON.
	// (gorilla/websocket clears the connection's deadlines when it takes
	// it over, so the read and write timeouts do not cut WebSockets.)
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: cfg.HTTPReadTimeout, WriteTimeout: cfg.HTTPWriteTimeout, IdleTimeout: cfg.HTTPIdleTimeout,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()

	logger.Info("apppassd listening", "http", "http://"+ln.Addr().String(), "store", shown.detail, "nats", apppass.RedactURL(natsURL),
		"stream", events.StreamName, "apps", len(apps.Apps()), "maxPerUser", cfg.MaxPerUser)
	if cfg.EmbeddedStore() && cfg.UserTokenKey == "" {
		printWelcome(stdout, ln.Addr().String(), cmp.Or(gatewayNATS, natsURL), tokens, serviceKeys, cfg.ServeUI())
	}

	select {
	case err := <-served:
		return fmt.Errorf("HTTP server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing calls in flight and publishing pending events")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		logger.Warn("HTTP shutdown", "err", err)
	}
	srv.CloseWebSockets(shutdownCtx)
	stopRelay()
	<-relayDone
	<-hooksDone
	<-kicksDone
	<-lastLoginsDone
	if err := relay.Flush(shutdownCtx); err != nil {
		logger.Warn("events left in the outbox; they are published at the next start", "err", err)
	}
	if ns != nil {
		// The published events the outbox kept for a crash are on disk
		// once the stopped server's store is synced.
		publisher.Close()
		if err := ns.StopSynced(); err != nil {
			logger.Warn("syncing the embedded NATS store failed; the events of the last seconds are published again at the next start", "err", err)
		} else {
			relay.DropPublished(shutdownCtx)
		}
	}
	logger.Info("apppassd stopped")
	return nil
}

// newDoveadm makes the Dovecot kicks of APPPASS_DOVEADM_URLS: only
// passwords of apps that may log in over IMAP, POP3 or SMTP can have
// Dovecot sessions.
func newDoveadm(cfg *config.Config, apps *apppass.Catalogue, logger *slog.Logger) (*dovecot.Kicker, error) {
	hc := &http.Client{Timeout: cfg.DoveadmTimeout}
	var clients []*dovecot.Client
	for _, u := range cfg.DoveadmURLs {
		c, err := dovecot.NewClient(u, cfg.DoveadmAPIKey, hc)
		if err != nil {
			return nil, fmt.Errorf("APPPASS_DOVEADM_URLS: %w", err)
		}
		clients = append(clients, c)
	}
	mailApp := func(scope string) bool {
		app, ok := apps.App(scope)
		return !ok || slices.ContainsFunc(app.Protocols, func(p string) bool { return p == "imap" || p == "pop3" || p == "smtp" })
	}
	return dovecot.NewKicker(dovecot.KickerConfig{Clients: clients, MailApp: mailApp, Since: time.Now(), Logger: logger})
}

// keys are the secrets apppassd works with.
type keys struct {
	digester *apppass.Digester
	tokens   *apppass.UserTokens
	service  []apppass.ServiceKey
}

// loadKeys reads the configured keys or, on the embedded default, the
// ones kept in the data dir (generated on first start).
func loadKeys(cfg *config.Config) (*keys, error) {
	embedded := cfg.EmbeddedStore()
	pepper, err := secretFromConfigOrFile(cfg.Pepper, cfg.DataFile(config.PepperFile), embedded)
	if err != nil {
		return nil, err
	}
	k := &keys{service: cfg.ServiceKeys}
	if k.digester, err = apppass.NewDigester([]byte(pepper)); err != nil {
		return nil, err
	}
	tokenKey, err := secretFromConfigOrFile(cfg.UserTokenKey, cfg.DataFile(config.UserTokenKeyFile), embedded)
	if err != nil {
		return nil, err
	}
	if k.tokens, err = apppass.NewUserTokens([]byte(tokenKey)); err != nil {
		return nil, err
	}
	if len(k.service) == 0 && embedded {
		// A newcomer gets a gateway key too, to try authenticate with curl,
		// and an admin key, which the admin CLI (cmd/apppass) reads from
		// the same data dir.
		gateway, err := secretFromConfigOrFile("", cfg.DataFile(config.GatewayKeyFile), true)
		if err != nil {
			return nil, err
		}
		admin, err := secretFromConfigOrFile("", cfg.DataFile(config.AdminKeyFile), true)
		if err != nil {
			return nil, err
		}
		k.service = []apppass.ServiceKey{
			{Name: "demo-gateway", Role: apppass.RoleGateway, Secret: gateway},
			{Name: "demo-admin", Role: apppass.RoleAdmin, Secret: admin},
		}
	}
	return k, nil
}

// startNATS starts the embedded NATS server, which requires a login: the
// passwords of apppassd's user and of the gateway user are kept in the
// data dir (generated on first start), and the gateway's URL, as a
// subscriber uses it, is written there at every start.
func startNATS(cfg *config.Config) (*natsserver.Server, error) {
	service, err := secretFromConfigOrFile("", cfg.DataFile(config.NATSServiceKeyFile), true)
	if err != nil {
		return nil, err
	}
	gateway, err := secretFromConfigOrFile("", cfg.DataFile(config.NATSGatewayKeyFile), true)
	if err != nil {
		return nil, err
	}
	var own []string
	for _, u := range cfg.DoveadmURLs {
		own = append(own, events.DoveadmConsumer(u))
	}
	ns, err := natsserver.Start(cfg.EmbeddedNATSListen, cfg.DataFile(config.NATSDir),
		&natsserver.Auth{ServicePassword: service, GatewayPassword: gateway, OwnConsumers: own})
	if err != nil {
		return nil, err
	}
	path := cfg.DataFile(config.NATSGatewayURLFile)
	if err := os.WriteFile(path, []byte(ns.GatewayURL()+"\n"), 0o600); err != nil {
		ns.Stop()
		return nil, fmt.Errorf("%s cannot be written (%v): make the data dir writable by this user, or set APPPASS_DATA_DIR to one that is", path, err)
	}
	return ns, nil
}

// storeShown names the store in messages.
type storeShown struct{ name, detail string }

// openStore opens the embedded SQLite store in the data dir, or the
// configured MongoDB, and checks that its passwords were digested with
// this pepper.
func openStore(ctx context.Context, cfg *config.Config, digester *apppass.Digester, logger *slog.Logger) (apppass.Store, storeShown, error) {
	var store apppass.Store
	var shown storeShown
	if cfg.EmbeddedStore() {
		path := cfg.DataFile(config.StoreFile)
		s, err := sqlite.Open(path, sqlite.Options{Exclusive: true, Synchronous: cfg.SQLiteSynchronous})
		if err != nil {
			return nil, shown, err
		}
		store, shown = s, storeShown{name: "the SQLite store", detail: "sqlite " + path}
	} else {
		s, err := openMongo(ctx, cfg.MongoURI, cfg.MongoDatabase, logger)
		if err != nil {
			return nil, shown, err
		}
		store, shown = s, storeShown{name: "MongoDB", detail: "MongoDB database " + cfg.MongoDatabase}
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := store.BindDigestKey(bctx, digester.KeyID()); err != nil {
		store.Close()
		if errors.Is(err, apppass.ErrDigestKeyMismatch) {
			stored, _ := store.DigestKeyID(bctx)
			return nil, shown, fmt.Errorf("%s holds passwords digested with another pepper (key id %s; this pepper's is %s): set APPPASS_PEPPER to the pepper it was created with", shown.detail, stored, digester.KeyID())
		}
		return nil, shown, err
	}
	return store, shown, nil
}

// openMongo connects to MongoDB, retrying for a while: in a compose file
// the database may come up after us.
func openMongo(ctx context.Context, uri, db string, logger *slog.Logger) (*mongo.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		store, err := mongo.Open(octx, uri, db)
		cancel()
		if err == nil {
			return store, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		logger.Warn("MongoDB not reachable yet, retrying", "err", err)
		time.Sleep(time.Second)
	}
}

// heartbeatEvery is how often an apppassd on MongoDB says it is there,
// for `apppass store copy`, which refuses to write into a live database.
const heartbeatEvery = 10 * time.Second

func heartbeat(ctx context.Context, s *mongo.Store, id string, logger *slog.Logger) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
		if err := s.Heartbeat(hctx, id, 3*heartbeatEvery); err != nil && ctx.Err() == nil {
			logger.Debug("heartbeat to MongoDB failed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.Leave(lctx, id)
			cancel()
			return
		case <-t.C:
		}
	}
}

// secretFromConfigOrFile returns the configured secret or, when allowed,
// one kept in the file at path, generated there (mode 0600) on first start
// so it survives restarts.
func secretFromConfigOrFile(configured, path string, allowFile bool) (string, error) {
	if configured != "" || !allowFile {
		return configured, nil
	}
	if raw, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(raw)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("%s cannot be written (%v): make the data dir writable by this user, or set APPPASS_DATA_DIR to one that is", path, err)
	}
	return secret, nil
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

func newLogger(cfg *config.Config, w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
