package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/dovecot"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/natsserver"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/storage/mongo"
)

// startEvents connects to NATS (an embedded server unless a URL is
// configured) and makes the consumers of the stream, which the jobs run.
func (d *daemon) startEvents(ctx context.Context) error {
	d.natsURL = d.cfg.NATSURL
	if d.cfg.EmbeddedNATS() {
		ns, err := startNATS(d.cfg)
		if err != nil {
			return err
		}
		d.onClose(ns.Stop)
		d.nats, d.natsURL, d.gatewayNATS = ns, ns.ServiceURL(), ns.GatewayURL()
	}
	publisher, err := nats.Connect(d.natsURL, "apppassd")
	if err != nil {
		return err
	}
	publisher.StreamMaxAge = d.cfg.StreamMaxAge
	d.onClose(publisher.Close)
	d.publisher = publisher
	// Webhooks: made before the relay publishes anything, so a consumer
	// created now starts early enough to see leftovers from the outbox.
	if len(d.cfg.Webhooks) > 0 {
		if d.hooks, err = newWebhooks(d.cfg, d.store, publisher, d.logger); err != nil {
			return err
		}
	}
	go ensureStream(ctx, publisher)
	// Dovecot kicks: consumers of their own on the stream, which start at
	// this start (so events the relay publishes now are theirs too).
	if len(d.cfg.DoveadmURLs) > 0 {
		if d.kicks, err = newDoveadm(d.cfg, d.apps, d.logger); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates the stream now, not at the first event, so gateways
// can start consuming at once; retried in the background while NATS is
// away.
func ensureStream(ctx context.Context, publisher *nats.Publisher) {
	for ctx.Err() == nil {
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := publisher.EnsureStream(ectx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
}

func newWebhooks(cfg *config.Config, store apppass.Store, publisher *nats.Publisher, logger *slog.Logger) (*webhook.Webhooks, error) {
	return webhook.New(store, publisher, webhook.Config{
		Endpoints: cfg.Webhooks, Timeout: cfg.WebhookTimeout, RetryBase: cfg.WebhookRetryBase,
		RetryMaxDelay: cfg.WebhookRetryMaxDelay, RetryFor: cfg.WebhookRetryFor,
		AllowPrivate: cfg.WebhookAllowPrivate, Retention: cfg.WebhookRetention, Logger: logger,
	})
}

// jobs is apppassd's background work, under one context that shutdown
// cancels before it flushes the outbox. It waits for the jobs that write
// to the store or the stream (wait), not for the others (spawn).
type jobs struct {
	ctx     context.Context
	cancel  context.CancelFunc
	writers sync.WaitGroup
}

func (j *jobs) wait(run func(context.Context)) {
	j.writers.Add(1)
	go func() {
		defer j.writers.Done()
		run(j.ctx)
	}()
}

func (j *jobs) spawn(run func(context.Context)) { go run(j.ctx) }

// stop cancels the jobs and waits for the writers.
func (j *jobs) stop() {
	j.cancel()
	j.writers.Wait()
}

// startJobs starts the outbox relay, the heartbeat on MongoDB, and the
// webhook and Dovecot consumers.
func (d *daemon) startJobs(context.Context) error {
	d.relay = nats.NewRelay(d.store, d.publisher, d.logger)
	if d.nats != nil {
		d.relay.KeepPublished = natsserver.KeepPublished
	}
	d.jobs = &jobs{}
	d.jobs.ctx, d.jobs.cancel = context.WithCancel(context.Background())
	d.onClose(d.jobs.cancel)
	if m, ok := d.store.(*mongo.Store); ok {
		d.jobs.spawn(func(ctx context.Context) { heartbeat(ctx, m, d.relay.ID(), d.logger) })
	}
	d.jobs.wait(d.relay.Run)
	if d.hooks != nil {
		d.jobs.wait(d.hooks.Run)
	}
	if d.kicks != nil {
		d.jobs.wait(func(ctx context.Context) { d.kicks.Run(ctx, d.publisher.JetStream()) })
	}
	return nil
}

// startNATS starts the embedded NATS server, which requires a login: the
// passwords of apppassd's user and of the gateway user are kept in the
// data dir (generated on first start), and the gateway's URL, as a
// subscriber uses it, is written there at every start.
func startNATS(cfg *config.Config) (*natsserver.Server, error) {
	service, err := secretFromConfigOrFile("", cfg.DataFile(datadir.NATSServiceKeyFile), true)
	if err != nil {
		return nil, err
	}
	gateway, err := secretFromConfigOrFile("", cfg.DataFile(datadir.NATSGatewayKeyFile), true)
	if err != nil {
		return nil, err
	}
	var own []string
	for _, u := range cfg.DoveadmURLs {
		own = append(own, events.DoveadmConsumer(u))
	}
	ns, err := natsserver.Start(cfg.EmbeddedNATSListen, cfg.DataFile(datadir.NATSDir),
		&natsserver.Auth{ServicePassword: service, GatewayPassword: gateway, OwnConsumers: own})
	if err != nil {
		return nil, err
	}
	path := cfg.DataFile(datadir.NATSGatewayURLFile)
	if err := os.WriteFile(path, []byte(ns.GatewayURL()+"\n"), 0o600); err != nil {
		ns.Stop()
		return nil, fmt.Errorf("%s cannot be written (%v): make the data dir writable by this user, or set APPPASS_DATA_DIR to one that is", path, err)
	}
	return ns, nil
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
