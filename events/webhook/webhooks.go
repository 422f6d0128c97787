// Package webhook delivers the stream's events to the configured webhook
// endpoints, signed the Standard Webhooks way, retried with back-off, and
// never to internal addresses unless an endpoint allows it (ssrf.go).
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/stdwebhook"
)

// Config configures outbound webhooks. Zero values take the defaults.
type Config struct {
	Endpoints []apppass.WebhookEndpoint
	// Timeout bounds one request, connecting included (default 10s).
	Timeout time.Duration
	// RetryBase is the ceiling of the first retry's delay; each further
	// retry doubles it, up to RetryMaxDelay; the delay itself is drawn
	// uniformly below the ceiling (full jitter). Defaults 5s and 1h.
	RetryBase     time.Duration
	RetryMaxDelay time.Duration
	// RetryFor is how long after it was queued a delivery is retried
	// before it is given up as failed (default 72h).
	RetryFor time.Duration
	// AllowPrivate lets every endpoint reach internal addresses.
	AllowPrivate bool
	// Retention is how long delivered and failed deliveries stay visible
	// (default 7 days).
	Retention time.Duration
	// PollInterval is how often the queue is checked for due retries
	// (default 1s); new events are dispatched at once anyway.
	PollInterval time.Duration
	// Workers is how many requests may be in flight at once (default 4).
	Workers int
	// Consumer names the durable JetStream consumer (default events.WebhookConsumer).
	Consumer string
	Logger   *slog.Logger
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 10*time.Second)
	def(&c.RetryBase, 5*time.Second)
	def(&c.RetryMaxDelay, time.Hour)
	def(&c.RetryFor, 72*time.Hour)
	def(&c.Retention, 7*24*time.Hour)
	def(&c.PollInterval, time.Second)
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Consumer == "" {
		c.Consumer = events.WebhookConsumer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Webhooks delivers the events of the JetStream stream to HTTP endpoints,
// signed the Standard Webhooks way.
//
// A durable JetStream consumer reads the stream; for each event it stores
// one delivery per endpoint that wants the event in MongoDB (idempotently,
// keyed by event and endpoint) and only then acks the message, so an event
// is neither lost nor queued twice when the daemon dies in between. A
// dispatcher leases due deliveries from MongoDB and POSTs them; 2xx counts
// as delivered, anything else is retried with exponential back-off and
// full jitter until RetryFor has passed. A 410 Gone disables the endpoint.
type Webhooks struct {
	store     apppass.WebhookStore
	publisher *nats.Publisher
	cfg       Config
	endpoints []*endpoint
	byName    map[string]*endpoint
	logger    *slog.Logger
	started   time.Time
	token     string
	seq       atomic.Uint64
	wake      chan struct{}

	// counts are the attempts' outcomes per endpoint (DeliveryCounts),
	// made for every configured endpoint up front, so the map is read-only.
	counts map[deliveryKey]*atomic.Uint64

	mu        sync.Mutex
	disabled  map[string]apppass.WebhookEndpointState // by name, as stored
	refreshed time.Time
	storeDown bool
}

type endpoint struct {
	apppass.WebhookEndpoint
	secret stdwebhook.Secret
	client *http.Client
}

// New validates the endpoints and returns the webhooks; call Run.
func New(store apppass.WebhookStore, publisher *nats.Publisher, cfg Config) (*Webhooks, error) {
	cfg.defaults()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	w := &Webhooks{store: store, publisher: publisher, cfg: cfg, byName: map[string]*endpoint{}, logger: cfg.Logger,
		started: time.Now(), token: hex.EncodeToString(b), wake: make(chan struct{}, 1)}
	clients := map[bool]*http.Client{}
	for _, e := range cfg.Endpoints {
		if err := e.Validate(); err != nil {
			return nil, err
		}
		if w.byName[e.Name] != nil {
			return nil, fmt.Errorf("endpoint %q is configured twice", e.Name)
		}
		secret, _ := stdwebhook.ParseSecret(e.Secret)
		allow := e.AllowPrivate || cfg.AllowPrivate
		if clients[allow] == nil {
			clients[allow] = newWebhookClient(cfg.Timeout, allow)
		}
		ep := &endpoint{WebhookEndpoint: e, secret: secret, client: clients[allow]}
		ep.AllowPrivate = allow
		w.endpoints = append(w.endpoints, ep)
		w.byName[e.Name] = ep
	}
	w.counts = map[deliveryKey]*atomic.Uint64{}
	for _, name := range append(slices.Collect(maps.Keys(w.byName)), UnconfiguredEndpoint) {
		for _, o := range deliveryOutcomes {
			w.counts[deliveryKey{name, o}] = new(atomic.Uint64)
		}
	}
	return w, nil
}

// Outcomes of delivery attempts, as DeliveryCounts names them.
const (
	DeliveryOutcomeDelivered = "delivered" // a 2xx answer
	DeliveryOutcomeRetry     = "retry"     // failed, tried again later
	DeliveryOutcomeFailed    = "failed"    // failed for the last time: given up
	DeliveryOutcomeGone      = "gone"      // 410 Gone: the endpoint is disabled
)

var deliveryOutcomes = []string{DeliveryOutcomeDelivered, DeliveryOutcomeRetry, DeliveryOutcomeFailed, DeliveryOutcomeGone}

// UnconfiguredEndpoint stands, in DeliveryCounts, for deliveries queued
// for an endpoint that is no longer configured (no endpoint can be named
// so), which keeps the names a bounded set.
const UnconfiguredEndpoint = "(unconfigured)"

type deliveryKey struct{ endpoint, outcome string }

// DeliveryCount is how many attempts to Endpoint ended with Outcome since
// this process started.
type DeliveryCount struct {
	Endpoint, Outcome string
	N                 uint64
}

// DeliveryCounts returns the attempt outcomes per endpoint, for metrics:
// every configured endpoint and outcome, zeros included.
func (w *Webhooks) DeliveryCounts() []DeliveryCount {
	out := make([]DeliveryCount, 0, len(w.counts))
	for k, n := range w.counts {
		out = append(out, DeliveryCount{Endpoint: k.endpoint, Outcome: k.outcome, N: n.Load()})
	}
	slices.SortFunc(out, func(a, b DeliveryCount) int {
		return cmp.Or(cmp.Compare(a.Endpoint, b.Endpoint), cmp.Compare(a.Outcome, b.Outcome))
	})
	return out
}

func (w *Webhooks) count(endpoint, outcome string) {
	if n := w.counts[deliveryKey{endpoint, outcome}]; n != nil {
		n.Add(1)
	}
}

// newWebhookClient returns the HTTP client of the endpoints: no proxy (a
// proxy would dial for us, past the guard), no redirects followed (a 3xx
// is a failed attempt), internal addresses refused at dial time unless
// allowed.
func newWebhookClient(timeout time.Duration, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = refuseInternal
	}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: timeout,
	}
	return &http.Client{Transport: transport, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (w *Webhooks) now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// poke makes the dispatcher look at the queue now.
func (w *Webhooks) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run consumes the stream and dispatches deliveries until ctx ends. An
// attempt cut short by the end is not counted and is due again at once.
func (w *Webhooks) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { w.consume(ctx) })
	wg.Go(func() { w.dispatch(ctx) })
	wg.Wait()
}

// --- the consumer: stream -> queue ---

func (w *Webhooks) consumerConfig() jetstream.ConsumerConfig {
	start := w.started
	return jetstream.ConsumerConfig{
		Durable:     w.cfg.Consumer,
		Description: "apppassd: queues events for outbound webhooks",
		// A consumer created now starts with the events published from
		// this process's start: turning webhooks on does not replay the
		// stream's 7 days. Once it exists, it resumes where it stopped.
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &start,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

func (w *Webhooks) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	if !w.publisher.Connected() {
		return nil, nats.ErrNotConnected
	}
	if err := w.publisher.EnsureStream(ctx); err != nil {
		return nil, err
	}
	js := w.publisher.JetStream()
	c, err := js.Consumer(ctx, events.StreamName, w.cfg.Consumer)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		w.publisher.StreamLost() // deleted under us: create it again
	}
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = js.CreateConsumer(ctx, events.StreamName, w.consumerConfig())
		if errors.Is(err, jetstream.ErrConsumerExists) {
			c, err = js.Consumer(ctx, events.StreamName, w.cfg.Consumer) // another replica was first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("webhook consumer %s: %w", w.cfg.Consumer, err)
	}
	return c, nil
}

func (w *Webhooks) consume(ctx context.Context) {
	var cons jetstream.Consumer
	backoff := time.Duration(0)
	failed := func(what string, err error) {
		if backoff == 0 {
			w.logger.Warn("webhooks: "+what+"; retrying", "err", err)
			backoff = 100 * time.Millisecond
		} else {
			backoff = min(2*backoff, 5*time.Second)
		}
		cons = nil
		sleep(ctx, backoff)
	}
	for ctx.Err() == nil {
		if cons == nil {
			c, err := w.ensureConsumer(ctx)
			if err != nil {
				failed("reading the event stream failed", err)
				continue
			}
			cons = c
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(64, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				failed("fetching events failed", err)
			}
			continue
		}
		for msg := range batch.Messages() {
			w.handle(ctx, msg)
		}
		err = batch.Error()
		cancel()
		switch {
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			if backoff != 0 {
				w.logger.Info("webhooks: reading the event stream again")
				backoff = 0
			}
		case ctx.Err() == nil:
			failed("fetching events failed", err)
		}
	}
}

// handle queues one event for every endpoint that wants it, then acks it.
// If MongoDB fails, the message is not acked and comes again.
func (w *Webhooks) handle(ctx context.Context, msg jetstream.Msg) {
	var ev struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	body := msg.Data()
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.Type == "" {
		w.logger.Warn("webhooks: skipping a stream message that is not an event", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := w.now()
	queued := false
	for _, ep := range w.endpoints {
		if !ep.Wants(ev.Type) {
			continue
		}
		d := apppass.WebhookDelivery{ID: ev.ID + ":" + ep.Name, EventID: ev.ID, EventType: ev.Type,
			Endpoint: ep.Name, Body: bytes.Clone(body), Created: now}
		fresh, err := w.store.EnqueueWebhook(ectx, d)
		if err != nil {
			w.storeFailed(err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		queued = queued || fresh
	}
	_ = msg.Ack()
	if queued {
		w.poke()
	}
}

// --- the dispatcher: queue -> endpoints ---

func (w *Webhooks) dispatch(ctx context.Context) {
	sem := make(chan struct{}, w.cfg.Workers)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	ticker := time.NewTicker(w.cfg.PollInterval)
	defer ticker.Stop()
	var lastPurge time.Time
	for {
		if free := cap(sem) - len(sem); free > 0 {
			ds, err := w.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				w.storeFailed(err)
			} else if err == nil {
				w.storeBack()
			}
			for _, d := range ds {
				sem <- struct{}{}
				inflight.Go(func() {
					defer func() {
						<-sem
						w.poke()
					}()
					w.attempt(ctx, d)
				})
			}
		}
		if time.Since(lastPurge) > time.Hour {
			lastPurge = time.Now()
			if n, err := w.store.PurgeWebhookDeliveries(ctx, w.now().Add(-w.cfg.Retention)); err == nil && n > 0 {
				w.logger.Debug("webhooks: purged old deliveries", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-w.wake:
		}
	}
}

// lease is how long a claimed delivery is ours: the request's timeout and
// a margin. A replica that dies mid-attempt loses it after that.
func (w *Webhooks) lease() time.Duration { return w.cfg.Timeout + 30*time.Second }

func (w *Webhooks) claim(ctx context.Context, n int) ([]apppass.WebhookDelivery, error) {
	skip, err := w.disabledNames(ctx)
	if err != nil {
		return nil, err
	}
	now := w.now()
	token := w.token + "-" + strconv.FormatUint(w.seq.Add(1), 10)
	return w.store.ClaimWebhooks(ctx, now, now.Add(w.lease()), token, skip, n)
}

// disabledNames returns the configured endpoints that are disabled,
// reading the stored states at most once per poll interval (another
// replica may have disabled or enabled one).
func (w *Webhooks) disabledNames(ctx context.Context) ([]string, error) {
	w.mu.Lock()
	fresh := time.Since(w.refreshed) < w.cfg.PollInterval
	w.mu.Unlock()
	if !fresh {
		states, err := w.store.WebhookEndpointStates(ctx)
		if err != nil {
			return nil, err
		}
		m := make(map[string]apppass.WebhookEndpointState, len(states))
		for _, s := range states {
			m[s.Name] = s
		}
		w.mu.Lock()
		w.disabled, w.refreshed = m, time.Now()
		w.mu.Unlock()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for name := range w.disabled {
		if w.isDisabledLocked(name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// isDisabledLocked: a stored state disables an endpoint only while it is
// configured with the URL it was disabled at; a new URL starts afresh.
func (w *Webhooks) isDisabledLocked(name string) bool {
	s, ok := w.disabled[name]
	ep := w.byName[name]
	return ok && ep != nil && s.URL == ep.URL
}

func (w *Webhooks) attempt(ctx context.Context, d apppass.WebhookDelivery) {
	now := w.now()
	ep := w.byName[d.Endpoint]
	if ep == nil {
		w.finish(d, apppass.WebhookOutcome{State: apppass.DeliveryFailed, At: now, Counted: true,
			Error: "the endpoint is no longer configured"})
		w.count(UnconfiguredEndpoint, DeliveryOutcomeFailed)
		return
	}
	// A request under way when apppassd shuts down is let finish (within
	// the timeout), not cut: a receiver that got it and answered 2xx must
	// not get it again after the restart.
	status, retryAfter, err := w.send(context.WithoutCancel(ctx), ep, d, now)
	o := apppass.WebhookOutcome{At: now, Status: status, Counted: true}
	outcome := DeliveryOutcomeRetry
	switch {
	case err == nil && status >= 200 && status < 300:
		o.State, outcome = apppass.DeliveryDelivered, DeliveryOutcomeDelivered
	case err == nil && status == http.StatusGone:
		// The receiver wants no more: disable the endpoint. This delivery
		// and later ones wait, pending, until an admin enables it again.
		w.disable(ctx, ep, now, "the endpoint answered 410 Gone")
		o.State, o.NextAttempt, o.Error = apppass.DeliveryPending, now, "410 Gone: endpoint disabled"
		outcome = DeliveryOutcomeGone
	default:
		o.Error = describeFailure(status, err)
		o.State, o.NextAttempt = w.schedule(d, now, retryAfter)
		if o.State == apppass.DeliveryFailed {
			outcome = DeliveryOutcomeFailed
		}
	}
	w.finish(d, o)
	w.count(ep.Name, outcome)
	if o.State == apppass.DeliveryFailed {
		w.logger.Warn("webhooks: giving up a delivery", "endpoint", d.Endpoint, "event", d.EventID,
			"attempts", d.Attempts+1, "err", o.Error)
	}
}

// send makes one signed POST; it returns the status, or an error when no
// response came.
func (w *Webhooks) send(ctx context.Context, ep *endpoint, d apppass.WebhookDelivery, now time.Time) (int, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "apppassd-webhooks")
	// webhook-id is the event's id: the same on every retry and for
	// every endpoint, and the same as the stream's Nats-Msg-Id.
	stdwebhook.SetHeaders(req.Header.Set, d.EventID, now, d.Body, ep.secret)
	resp, err := ep.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, retryAfter(resp.Header.Get("Retry-After"), now), nil
}

func describeFailure(status int, err error) string {
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may carry a token
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return "no response within the timeout"
		}
		return err.Error()
	}
	if status >= 300 && status < 400 {
		return fmt.Sprintf("HTTP %d: redirects are not followed; configure the final URL", status)
	}
	return fmt.Sprintf("HTTP %d", status)
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// schedule decides what follows a failed attempt: the next one after an
// exponentially growing, fully jittered delay (at least what Retry-After
// asks, within RetryMaxDelay), or giving up once RetryFor has passed since
// the delivery was queued. The last retry happens at that deadline, so
// every delivery is tried for the whole RetryFor.
func (w *Webhooks) schedule(d apppass.WebhookDelivery, now time.Time, after time.Duration) (string, time.Time) {
	deadline := d.Created.Add(w.cfg.RetryFor)
	if !now.Before(deadline) {
		return apppass.DeliveryFailed, time.Time{}
	}
	ceiling := w.cfg.RetryMaxDelay
	if shift := d.Attempts; shift < 40 {
		if c := w.cfg.RetryBase << shift; c > 0 && c < ceiling {
			ceiling = c
		}
	}
	delay := mrand.N(ceiling + 1)
	if after > delay {
		delay = min(after, w.cfg.RetryMaxDelay)
	}
	next := now.Add(delay)
	if next.After(deadline) {
		next = deadline
	}
	return apppass.DeliveryPending, next
}

// finish stores an outcome. It uses its own context: an attempt cut short
// by shutdown must still give its lease back.
func (w *Webhooks) finish(d apppass.WebhookDelivery, o apppass.WebhookOutcome) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := w.store.FinishWebhookAttempt(ctx, d.ID, d.LeaseToken, o)
	switch {
	case errors.Is(err, apppass.ErrLeaseLost):
		w.logger.Warn("webhooks: a delivery's lease ran out during its attempt", "delivery", d.ID)
	case err != nil:
		// The lease runs out and the delivery is tried again: at least once.
		w.storeFailed(err)
	}
}

func (w *Webhooks) disable(ctx context.Context, ep *endpoint, now time.Time, reason string) {
	st := apppass.WebhookEndpointState{Name: ep.Name, URL: ep.URL, Disabled: now, Reason: reason}
	if err := w.store.DisableWebhookEndpoint(context.WithoutCancel(ctx), st); err != nil {
		w.storeFailed(err)
	}
	w.mu.Lock()
	if w.disabled == nil {
		w.disabled = map[string]apppass.WebhookEndpointState{}
	}
	w.disabled[ep.Name] = st
	w.mu.Unlock()
	w.logger.Warn("webhooks: endpoint disabled; enable it again with webhooks.enable", "endpoint", ep.Name, "reason", reason)
}

func (w *Webhooks) storeFailed(err error) {
	w.mu.Lock()
	first := !w.storeDown
	w.storeDown = true
	w.mu.Unlock()
	if first {
		w.logger.Warn("webhooks: MongoDB failed; deliveries wait", "err", err)
	}
}

func (w *Webhooks) storeBack() {
	w.mu.Lock()
	was := w.storeDown
	w.storeDown = false
	w.mu.Unlock()
	if was {
		w.logger.Info("webhooks: MongoDB is back")
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// --- what admins see ---

// Endpoints returns every configured endpoint with its state and counts.
func (w *Webhooks) Endpoints(ctx context.Context) ([]apppass.WebhookEndpointStatus, error) {
	states, err := w.store.WebhookEndpointStates(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]apppass.WebhookEndpointState{}
	for _, s := range states {
		byName[s.Name] = s
	}
	out := make([]apppass.WebhookEndpointStatus, 0, len(w.endpoints))
	for _, ep := range w.endpoints {
		st := apppass.WebhookEndpointStatus{Name: ep.Name, URL: redactURL(ep.URL), Events: ep.Events,
			AllowPrivate: ep.AllowPrivate, State: "enabled", Deliveries: map[string]int64{}}
		if st.Events == nil {
			st.Events = []string{"*"}
		}
		if s, ok := byName[ep.Name]; ok && s.URL == ep.URL {
			st.State = "disabled"
			st.Disabled = &apppass.WebhookDisabled{Time: s.Disabled, Reason: s.Reason}
		}
		for _, state := range []string{apppass.DeliveryPending, apppass.DeliveryDelivered, apppass.DeliveryFailed} {
			n, err := w.store.CountWebhookDeliveries(ctx, ep.Name, state)
			if err != nil {
				return nil, err
			}
			st.Deliveries[state] = n
		}
		out = append(out, st)
	}
	return out, nil
}

// Deliveries lists deliveries, newest first.
func (w *Webhooks) Deliveries(ctx context.Context, q apppass.WebhookQuery) ([]apppass.WebhookDelivery, error) {
	if q.Endpoint != "" && w.byName[q.Endpoint] == nil {
		return nil, apppass.Invalid("endpoint", "is not a configured webhook endpoint")
	}
	return w.store.WebhookDeliveries(ctx, q)
}

// Enable enables a disabled endpoint again; its waiting deliveries go out.
// It reports whether the endpoint was disabled.
func (w *Webhooks) Enable(ctx context.Context, name string) (bool, error) {
	if w.byName[name] == nil {
		return false, apppass.Invalid("endpoint", "is not a configured webhook endpoint")
	}
	was, err := w.store.EnableWebhookEndpoint(ctx, name)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	delete(w.disabled, name)
	w.mu.Unlock()
	w.poke()
	return was, nil
}

// redactURL hides a password in the URL's user info.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Redacted()
}
