// Command apppassd is the app-password sidecar. This file only wires: it
// reads the configuration, starts the embedded store and NATS when none are
// configured, and hands the pieces to the HTTP server.
package main

import (
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
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/storage"
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
	// The embedded FerretDB logs every connection at info and every error
	// reply at warn; our own logs say what matters.
	storeLogger := newLogger(cfg, stderr, max(cfg.LogLevel, slog.LevelError)).With("component", "ferretdb")
	if err := serve(ctx, cfg, logger, storeLogger, stdout); err != nil {
		logger.Error("apppassd stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg *config.Config, logger, storeLogger *slog.Logger, stdout io.Writer) error {
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
	pepper, err := secretFromConfigOrFile(cfg.Pepper, cfg.DataDir, "pepper", cfg.EmbeddedStore())
	if err != nil {
		return err
	}
	digester, err := apppass.NewDigester([]byte(pepper))
	if err != nil {
		return err
	}
	tokenKey, err := secretFromConfigOrFile(cfg.UserTokenKey, cfg.DataDir, "user-token.key", cfg.EmbeddedStore())
	if err != nil {
		return err
	}
	tokens, err := apppass.NewUserTokens([]byte(tokenKey))
	if err != nil {
		return err
	}
	serviceKeys := cfg.ServiceKeys
	if len(serviceKeys) == 0 && cfg.EmbeddedStore() {
		// A newcomer gets a gateway key too, to try authenticate with curl,
		// and an admin key, which the admin CLI (cmd/apppass) reads from
		// the same data dir.
		secret, err := secretFromConfigOrFile("", cfg.DataDir, "gateway.key", true)
		if err != nil {
			return err
		}
		adminSecret, err := secretFromConfigOrFile("", cfg.DataDir, "admin.key", true)
		if err != nil {
			return err
		}
		serviceKeys = []apppass.ServiceKey{
			{Name: "demo-gateway", Role: apppass.RoleGateway, Secret: secret},
			{Name: "demo-admin", Role: apppass.RoleAdmin, Secret: adminSecret},
		}
	}

	// MongoDB: the embedded FerretDB unless a URI is configured.
	mongoURI := cfg.MongoURI
	if cfg.EmbeddedStore() {
		fdb, err := storage.StartEmbedded(filepath.Join(cfg.DataDir, "ferretdb"), storeLogger)
		if err != nil {
			return err
		}
		defer fdb.Stop()
		mongoURI = fdb.URI
	}
	store, err := openStore(ctx, mongoURI, cfg.MongoDatabase, logger)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())

	// NATS: an embedded server unless a URL is configured.
	natsURL := cfg.NATSURL
	if cfg.EmbeddedNATS() {
		ns, err := events.StartEmbeddedNATS(cfg.EmbeddedNATSListen, filepath.Join(cfg.DataDir, "nats"))
		if err != nil {
			return err
		}
		defer ns.Stop()
		natsURL = ns.URL()
	}
	publisher, err := events.Connect(natsURL, "apppassd")
	if err != nil {
		return err
	}
	defer publisher.Close()
	// Webhooks: made before the relay publishes anything, so a consumer
	// created now starts early enough to see leftovers from the outbox.
	var hooks *events.Webhooks
	if len(cfg.Webhooks) > 0 || len(cfg.ProvisioningSecrets) > 0 {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := store.EnsureWebhookIndexes(ictx)
		cancel()
		if err != nil {
			return err
		}
	}
	if len(cfg.Webhooks) > 0 {
		hooks, err = events.NewWebhooks(store, publisher, events.WebhookConfig{
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
	relay := events.NewRelay(store, publisher, logger)
	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	relayDone := make(chan struct{})
	go func() { relay.Run(relayCtx); close(relayDone) }()
	hooksDone := make(chan struct{})
	if hooks != nil {
		go func() { hooks.Run(relayCtx); close(hooksDone) }()
	} else {
		close(hooksDone)
	}

	svc := &apppass.Service{Store: store, Apps: apps, Digester: digester, Events: relay, MaxPerUser: cfg.MaxPerUser}
	if cfg.Throttle.PairLimit > 0 || cfg.Throttle.IPLimit > 0 {
		svc.Throttle = &apppass.Throttle{Store: store, Policy: cfg.Throttle}
	}
	if cfg.AuthCacheTTL > 0 {
		svc.Cache = apppass.NewAuthCache(cfg.AuthCacheTTL)
		watcher, err := events.WatchRevocations(natsURL, svc.Cache)
		if err != nil {
			return err
		}
		defer watcher.Close()
		svc.Evictions = watcher
	}
	go svc.RunSweeper(relayCtx, cfg.SweepInterval, logger)
	srv := &rpc.Server{
		Service: svc,
		Auth:    &rpc.Authenticator{Tokens: tokens, ServiceKeys: serviceKeys},
		Logger:  logger,
		Ready: func(ctx context.Context) error {
			if err := store.Ping(ctx); err != nil {
				return errors.New("MongoDB is unreachable")
			}
			if !publisher.Connected() {
				return errors.New("NATS is unreachable")
			}
			return nil
		},
		PendingEvents: store.PendingCount,
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
		src := rpc.MetricsSources{Cache: svc.Cache, PendingEvents: store.PendingCount,
			MongoPing: store.Ping, NATSConnected: publisher.Connected}
		if hooks != nil {
			src.WebhookDeliveries = hooks.DeliveryCounts
		}
		srv.Metrics = rpc.NewMetrics(src)
	}
	if cfg.ServeUI() {
		srv.UI = ui.Handler()
	}
	if hooks != nil {
		srv.Webhooks = hooks
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
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()

	mongoShown := "external MongoDB"
	if cfg.EmbeddedStore() {
		mongoShown = "embedded FerretDB " + mongoURI + " (data in " + filepath.Join(cfg.DataDir, "ferretdb") + ")"
	}
	logger.Info("apppassd listening", "http", "http://"+ln.Addr().String(), "mongodb", mongoShown, "nats", natsURL,
		"stream", events.StreamName, "apps", len(apps.Apps()), "maxPerUser", cfg.MaxPerUser)
	if cfg.EmbeddedStore() && cfg.UserTokenKey == "" {
		printWelcome(stdout, ln.Addr().String(), natsURL, tokens, serviceKeys, cfg.ServeUI())
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
	if err := relay.Flush(shutdownCtx); err != nil {
		logger.Warn("events left in the outbox; they are published at the next start", "err", err)
	}
	logger.Info("apppassd stopped")
	return nil
}

// openStore connects to MongoDB, retrying for a while: in a compose file
// the database may come up after us.
func openStore(ctx context.Context, uri, db string, logger *slog.Logger) (*storage.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		store, err := storage.Open(octx, uri, db)
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

// secretFromConfigOrFile returns the configured secret or, when allowed,
// one kept in dir/name, generated there (mode 0600) on first start so it
// survives restarts.
func secretFromConfigOrFile(configured, dir, name string, allowFile bool) (string, error) {
	if configured != "" || !allowFile {
		return configured, nil
	}
	path := filepath.Join(dir, name)
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
		return "", fmt.Errorf("writing %s: %w", path, err)
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
