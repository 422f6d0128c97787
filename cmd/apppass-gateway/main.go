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
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/consume"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := config.LoadGateway(args, getenv, stderr)
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
func serve(ctx context.Context, cfg *config.Gateway, logger *slog.Logger, ready func(addr string, g *Gateway)) error {
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
	nc, js, err := events.DialJetStream(url, "apppass-gateway", func(up bool, err error) {
		if !up && err != nil {
			logger.Warn("NATS disconnected", "err", err)
		}
		g.setNATS(up)
	})
	if err != nil {
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
