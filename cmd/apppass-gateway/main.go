// Command apppass-gateway is a reference gateway for app passwords: a
// small reverse proxy for DAV- and EAS-style HTTP services (CalDAV,
// CardDAV, WebDAV, Exchange ActiveSync, Drive sync).
//
// It authenticates each request's HTTP Basic app password through the
// sidecar (GET /auth/basic, or appPasswords.authenticate over JSON-RPC),
// keeps a session for it for --session-ttl (keyed by an HMAC of login and
// password, never the password), forwards the request to the upstream
// with the user's identity in X-AppPass-* headers and without the
// client's Authorization, and listens on NATS JetStream for revoked
// events: a revocation drops the password's sessions, cancels its
// requests in flight and closes its client connections at once, long
// polls included. While NATS is unreachable it uses no sessions: every
// request is checked with the sidecar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/consume"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// config is the gateway's configuration.
type config struct {
	Listen         string
	Upstream       string
	Sidecar        string
	GatewayKey     string
	Protocol       string
	Auth           string
	NATSURL        string
	SessionTTL     time.Duration
	Realm          string
	ClientIPHeader string
	TLSCert        string
	TLSKey         string
	LogLevel       slog.Level
}

// protocols the sidecar knows for HTTP services.
var protocols = []string{"caldav", "carddav", "webdav", "eas", "drive"}

type setting struct {
	env, flag, def, help string
	set                  func(*config, string) error
}

var settings = []setting{
	{"APPPASS_GATEWAY_LISTEN", "listen", "127.0.0.1:8443", "address to listen on", func(c *config, v string) error {
		c.Listen = v
		return nil
	}},
	{"APPPASS_GATEWAY_UPSTREAM", "upstream", "", "URL of the service behind the gateway (required)", func(c *config, v string) error {
		c.Upstream = v
		return nil
	}},
	{"APPPASS_GATEWAY_SIDECAR", "sidecar", "http://127.0.0.1:8080", "URL of apppassd", func(c *config, v string) error {
		c.Sidecar = v
		return nil
	}},
	{"APPPASS_GATEWAY_KEY", "gateway-key", "", "a gateway key of apppassd (required; prefer the environment to the command line)", func(c *config, v string) error {
		c.GatewayKey = v
		return nil
	}},
	{"APPPASS_GATEWAY_PROTOCOL", "protocol", "", "protocol the upstream speaks: " + strings.Join(protocols, ", ") + " (required)", func(c *config, v string) error {
		c.Protocol = v
		return nil
	}},
	{"APPPASS_GATEWAY_AUTH", "auth", "basic", "how to ask apppassd: basic (GET /auth/basic) or rpc (appPasswords.authenticate)", func(c *config, v string) error {
		c.Auth = v
		return nil
	}},
	{"APPPASS_GATEWAY_NATS_URL", "nats-url", "nats://127.0.0.1:4222", "NATS with the APPPASSWORDS stream (empty: no sessions)", func(c *config, v string) error {
		c.NATSURL = v
		return nil
	}},
	{"APPPASS_GATEWAY_SESSION_TTL", "session-ttl", "5m", "how long an authenticated password is not asked about again (0: never kept)", func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 24*time.Hour {
			return errors.New("must be a duration between 0 and 24h")
		}
		c.SessionTTL = d
		return nil
	}},
	{"APPPASS_GATEWAY_REALM", "realm", "App password", "realm of the HTTP Basic challenge", func(c *config, v string) error {
		if strings.ContainsAny(v, "\"\\\r\n") {
			return errors.New("must not contain quotes, backslashes or line breaks")
		}
		c.Realm = v
		return nil
	}},
	{"APPPASS_GATEWAY_CLIENT_IP_HEADER", "client-ip-header", "", "header a trusted proxy in front sets to the client address (X-Forwarded-For: its last entry); empty: the peer address", func(c *config, v string) error {
		c.ClientIPHeader = v
		return nil
	}},
	{"APPPASS_GATEWAY_TLS_CERT", "tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)", func(c *config, v string) error {
		c.TLSCert = v
		return nil
	}},
	{"APPPASS_GATEWAY_TLS_KEY", "tls-key", "", "TLS key file", func(c *config, v string) error {
		c.TLSKey = v
		return nil
	}},
	{"APPPASS_GATEWAY_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
}

// loadConfig reads the environment, then the flags, which win.
func loadConfig(args []string, getenv func(string) string, output io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("apppass-gateway", flag.ContinueOnError)
	fs.SetOutput(output)
	values := map[string]*string{}
	for _, s := range settings {
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		values[s.flag] = fs.String(s.flag, v, s.help+" ($"+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range settings {
		if err := s.set(c, *values[s.flag]); err != nil {
			return nil, fmt.Errorf("%s (--%s): %w", s.env, s.flag, err)
		}
	}
	for _, u := range []struct{ env, v string }{{"APPPASS_GATEWAY_UPSTREAM", c.Upstream}, {"APPPASS_GATEWAY_SIDECAR", c.Sidecar}} {
		if u.v == "" {
			return nil, fmt.Errorf("%s is required", u.env)
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("%s: %q is not an http(s) URL", u.env, u.v)
		}
	}
	if c.GatewayKey == "" {
		return nil, errors.New("APPPASS_GATEWAY_KEY is required")
	}
	if !slices.Contains(protocols, c.Protocol) {
		return nil, fmt.Errorf("APPPASS_GATEWAY_PROTOCOL must be one of %s", strings.Join(protocols, ", "))
	}
	if c.Auth != "basic" && c.Auth != "rpc" {
		return nil, errors.New("APPPASS_GATEWAY_AUTH must be basic or rpc")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("APPPASS_GATEWAY_TLS_CERT and APPPASS_GATEWAY_TLS_KEY go together")
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "apppass-gateway:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err := serve(ctx, cfg, logger, nil); err != nil {
		logger.Error("apppass-gateway stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the gateway until ctx ends. ready, if set, is called once it
// listens.
func serve(ctx context.Context, cfg *config, logger *slog.Logger, ready func(addr string, g *Gateway)) error {
	upstream, _ := url.Parse(cfg.Upstream)
	sidecar, _ := url.Parse(cfg.Sidecar)
	auth, err := newAuthenticator(cfg.Auth, sidecar, cfg.GatewayKey)
	if err != nil {
		return err
	}
	g, err := newGateway(gatewayConfig{Upstream: upstream, Auth: auth, Protocol: cfg.Protocol, SessionTTL: cfg.SessionTTL,
		Realm: cfg.Realm, ClientIPHeader: cfg.ClientIPHeader, Logger: logger})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go g.runSweeper(runCtx)

	if cfg.NATSURL != "" && cfg.SessionTTL > 0 {
		nc, err := watchRevocations(runCtx, g, cfg.NATSURL, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
	} else {
		logger.Warn("no NATS URL or session TTL: every request is checked with the sidecar")
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("APPPASS_GATEWAY_LISTEN %s: %w", cfg.Listen, err)
	}
	srv := g.Server()
	srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	served := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			served <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			served <- srv.Serve(ln)
		}
	}()
	logger.Info("apppass-gateway listening", "addr", ln.Addr().String(), "upstream", cfg.Upstream,
		"sidecar", cfg.Sidecar, "auth", cfg.Auth, "protocol", cfg.Protocol, "nats", cfg.NATSURL, "sessionTTL", cfg.SessionTTL)
	if ready != nil {
		ready(ln.Addr().String(), g)
	}
	select {
	case err := <-served:
		return fmt.Errorf("HTTP server: %w", err)
	case <-ctx.Done():
	}
	// Long polls would hold Shutdown for their whole timeout: give them a
	// few seconds, then close what is left.
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	return nil
}

// watchRevocations connects to NATS and feeds revoked events to g from an
// ordered consumer starting now. Sessions are trusted only while the
// connection is up and the consumer runs.
func watchRevocations(ctx context.Context, g *Gateway, url string, logger *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name("apppass-gateway"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// Notice a silent network partition within seconds, not minutes.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(*nats.Conn) { g.setNATS(true) }),
		nats.ReconnectHandler(func(*nats.Conn) { g.setNATS(true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("NATS disconnected", "err", err)
			g.setNATS(false)
		}),
		nats.ClosedHandler(func(*nats.Conn) { g.setNATS(false) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	handle := func(_ context.Context, ev apppass.Event, _ consume.Delivery) error {
		if ev.Type == apppass.EventRevoked {
			g.Revoke(ev.Data.UUID, ev.Data.Reason)
		}
		return nil
	}
	go func() {
		var lastErr string
		for ctx.Err() == nil {
			cons, err := consume.Watch(ctx, js, consume.Options{Events: consume.Revocations, Logger: logger}, handle)
			if err != nil {
				if err.Error() != lastErr {
					logger.Warn("cannot watch revocations yet; retrying", "err", err)
					lastErr = err.Error()
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			lastErr = ""
			g.setWatching(true)
			<-cons.Done()
			g.setWatching(false)
		}
	}()
	return nc, nil
}
