// Command apppassd is the app-password sidecar. This file only wires: it
// reads the configuration, starts the embedded store and NATS when none are
// configured, and hands the pieces to the HTTP server; each step is a
// function of its own (store.go, keys.go, events.go, http.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/dovecot"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/natsserver"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/rpc"
)

// gcPercent is apppassd's GOGC unless the environment sets one. Its live
// heap is small (tens of MB) and a call's garbage dies young, so
// collecting at 4x the live heap instead of 2x takes most of the
// collector's share off the hot path (BENCHMARKS.md, "Hot authenticate
// beside a bare net/http server") for some MB of memory.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
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

// daemon is a running apppassd's pieces, which serve's steps make in order.
type daemon struct {
	cfg    *config.Config
	logger *slog.Logger
	// closers are what the steps opened, closed in reverse order when serve
	// returns, as defers in one function would be.
	closers []func()

	apps  *apppass.Catalogue
	keys  *keys
	store apppass.Store
	shown storeShown

	nats        *natsserver.Server // nil on an external NATS
	natsURL     string             // the NATS apppassd publishes to, with its login
	gatewayNATS string             // the embedded server's URL for gateways, with their login
	publisher   *nats.Publisher
	hooks       *webhook.Webhooks // nil without endpoints
	kicks       *dovecot.Kicker   // nil without Dovecots
	relay       *nats.Relay
	jobs        *jobs

	svc     *apppass.Service
	backlog *nats.Backlog
	srv     *rpc.Server

	pprofAddr string // where /debug/pprof/ listens, if it does
	http      *http.Server
	addr      string     // where http listens
	served    chan error // http's end
}

// onClose registers f to run when serve returns.
func (d *daemon) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// serve runs apppassd until ctx ends: each step starts what the next ones
// need; shutdown stops them in the order that loses no event.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger, stdout io.Writer) error {
	d := &daemon{cfg: cfg, logger: logger}
	defer d.close()
	for _, step := range []func(context.Context) error{
		d.loadSettings, // the catalogue, the data dir, the keys
		d.openStore,
		d.startEvents, // NATS, the stream, webhooks, Dovecot kicks
		d.dropStaleReady,
		d.startJobs, // the outbox relay and what consumes the stream
		d.startService,
		d.newRPCServer,
		d.startPprof,
		d.startHTTP,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	d.announce(stdout)
	select {
	case err := <-d.served:
		return fmt.Errorf("HTTP server: %w", err)
	case <-ctx.Done():
	}
	d.shutdown()
	return nil
}

// loadSettings reads the app catalogue, makes the data dir when something
// is kept there, and loads the keys.
func (d *daemon) loadSettings(context.Context) error {
	var err error
	if d.apps, err = d.cfg.Catalogue(); err != nil {
		return err
	}
	if d.cfg.UsesDataDir() {
		if err := os.MkdirAll(d.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating the data dir: %w", err)
		}
	}
	d.keys, err = loadKeys(d.cfg)
	return err
}

// dropStaleReady removes a ready file a killed apppassd left behind. It
// waits until the store and NATS are open: had another apppassd this data
// dir, they would have refused, and its ready file is not ours to remove.
func (d *daemon) dropStaleReady(context.Context) error {
	if !d.cfg.UsesDataDir() {
		return nil
	}
	return datadir.RemoveReady(d.cfg.DataDir)
}

// shutdown stops apppassd without losing an event: calls in flight finish,
// the jobs stop, the outbox is flushed to NATS, and the embedded server's
// store is synced before the events it keeps leave the outbox.
func (d *daemon) shutdown() {
	d.removeReady()
	d.logger.Info("shutting down: finishing calls in flight and publishing pending events")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.http.Shutdown(ctx); err != nil {
		d.logger.Warn("HTTP shutdown", "err", err)
	}
	d.srv.CloseWebSockets(ctx)
	d.jobs.stop()
	if err := d.relay.Flush(ctx); err != nil {
		d.logger.Warn("events left in the outbox; they are published at the next start", "err", err)
	}
	if d.nats != nil {
		// The published events the outbox kept for a crash are on disk
		// once the stopped server's store is synced.
		d.publisher.Close()
		if err := d.nats.StopSynced(); err != nil {
			d.logger.Warn("syncing the embedded NATS store failed; the events of the last seconds are published again at the next start", "err", err)
		} else {
			d.relay.DropPublished(ctx)
		}
	}
	d.logger.Info("apppassd stopped")
}

func newLogger(cfg *config.Config, w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
