package rpc

import (
	"context"
	"errors"
	"maps"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/dovecot"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/rpc/gatewayauth"
	"github.com/apppass/apppass/rpc/jsonrpc"
)

// scrapeTimeout bounds each backing-service check made while /metrics is
// scraped, so a hung MongoDB cannot hold the scrape.
const scrapeTimeout = 2 * time.Second

// MetricsSources are what the metrics read when scraped. Each may be left
// nil; its metrics are then not exported.
type MetricsSources struct {
	// Cache is the authenticate cache (hits and misses).
	Cache *apppass.AuthCache
	// PendingEvents counts the events waiting in the outbox.
	PendingEvents func(ctx context.Context) (int64, error)
	// StorePing checks that the store answers.
	StorePing func(ctx context.Context) error
	// NATSConnected reports whether the NATS connection is up.
	NATSConnected func() bool
	// WebhookDeliveries counts outbound webhook attempts by endpoint and outcome.
	WebhookDeliveries func() []webhook.DeliveryCount
	// Doveadm is the state of the Dovecots kicked on revocations.
	Doveadm func(ctx context.Context) []dovecot.TargetStatus
}

// Metrics are the Prometheus metrics of one apppassd, in a registry of
// their own (libraries in the process, FerretDB among them, register in
// the global one). A nil *Metrics records nothing, so a Server works
// without metrics.
type Metrics struct {
	registry *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	auth     *prometheus.CounterVec

	// The series of the three, kept once resolved: WithLabelValues
	// hashes and checks the values and takes a lock on every call.
	callSeries     seriesCache[callKey, prometheus.Counter]
	durationSeries seriesCache[string, prometheus.Observer]
	authSeries     seriesCache[authKey, prometheus.Counter]
}

// callKey is the labels of apppass_rpc_calls_total: the method label and
// ok, or the JSON-RPC error code.
type callKey struct {
	method string
	ok     bool
	code   int64
}

// authKey is the labels of apppass_authenticate_total.
type authKey struct{ protocol, outcome string }

// Outcomes of a login attempt, the "outcome" label of apppass_authenticate_total.
const (
	outcomeOK          = "ok"          // accepted
	outcomeRefused     = "refused"     // wrong, unknown, revoked password or not allowed here (-32010)
	outcomeThrottled   = "throttled"   // too many failures (-32029)
	outcomeInvalid     = "invalid"     // malformed request: bad params, protocol, method, encoding
	outcomeNoCreds     = "no_password" // /auth/basic without Basic credentials
	outcomeForbidden   = "forbidden"   // an adapter request without a valid gateway key
	outcomeUnavailable = "unavailable" // MongoDB did not answer (-32050)
	outcomeError       = "error"       // anything else (internal errors, misconfiguration)
	protocolOther      = "other"       // a protocol apppass does not know
	codeOK             = "ok"          // the "code" label of a successful call
)

// NewMetrics registers the metrics, the Go runtime's and the process's
// in a new registry.
func NewMetrics(src MetricsSources) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		registry: reg,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apppass_rpc_calls_total",
			Help: `JSON-RPC calls (HTTP and WebSocket) by method and result: "ok" or the JSON-RPC error code. Unknown method names count as "unknown".`,
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "apppass_rpc_call_duration_seconds",
			Help:    "Time spent serving one JSON-RPC call, by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apppass_authenticate_total",
			Help: "App password logins (appPasswords.authenticate, /auth/basic, /auth/mail) by protocol and outcome: ok, refused, throttled, invalid, no_password, forbidden, unavailable, error.",
		}, []string{"protocol", "outcome"}),
	}
	reg.MustRegister(m.calls, m.duration, m.auth)
	m.callSeries.resolve = func(k callKey) prometheus.Counter {
		code := codeOK
		if !k.ok {
			code = strconv.FormatInt(k.code, 10)
		}
		return m.calls.WithLabelValues(k.method, code)
	}
	m.durationSeries.resolve = func(method string) prometheus.Observer { return m.duration.WithLabelValues(method) }
	m.authSeries.resolve = func(k authKey) prometheus.Counter { return m.auth.WithLabelValues(k.protocol, k.outcome) }
	if c := src.Cache; c != nil {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "apppass_auth_cache_hits_total",
				Help: "Logins answered from the authenticate cache.",
			}, func() float64 { h, _ := c.Stats(); return float64(h) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "apppass_auth_cache_misses_total",
				Help: "Logins the authenticate cache could not answer (looked up in MongoDB).",
			}, func() float64 { _, miss := c.Stats(); return float64(miss) }))
	}
	if pending := src.PendingEvents; pending != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apppass_outbox_pending_events",
			Help: "Events waiting in the outbox to be published on NATS; NaN when MongoDB does not answer.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			n, err := pending(ctx)
			if err != nil {
				return math.NaN()
			}
			return float64(n)
		}))
	}
	if ping := src.StorePing; ping != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apppass_store_up",
			Help: "1 when the store (SQLite or MongoDB) answered a ping at scrape time, else 0.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			return boolGauge(ping(ctx) == nil)
		}))
	}
	if connected := src.NATSConnected; connected != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apppass_nats_connected",
			Help: "1 while the NATS connection is up, else 0.",
		}, func() float64 { return boolGauge(connected()) }))
	}
	if counts := src.WebhookDeliveries; counts != nil {
		reg.MustRegister(webhookCollector{counts})
	}
	if targets := src.Doveadm; targets != nil {
		reg.MustRegister(doveadmCollector{targets})
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Registry is where the metrics live, for tests and for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// ObserveCall counts one JSON-RPC call; name is bounded by the method
// table (rpc/jsonrpc counts names outside it as "unknown").
func (m *Metrics) ObserveCall(name string, rpcErr *jsonrpc.Error, took time.Duration) {
	if m == nil {
		return
	}
	k := callKey{method: name, ok: rpcErr == nil}
	if rpcErr != nil {
		k.code = rpcErr.Code
	}
	m.callSeries.get(k).Inc()
	m.durationSeries.get(name).Observe(took.Seconds())
}

// ObserveLogin counts one login attempt. err is what Authenticate (or the
// checks before it) returned.
func (m *Metrics) ObserveLogin(protocol string, err error) {
	if m == nil {
		return
	}
	outcome := loginOutcome(err)
	if !apppass.KnownProtocol(protocol) {
		protocol = protocolOther
	}
	m.authSeries.get(authKey{protocol, outcome}).Inc()
}

// seriesCache maps label values to the series resolve returns for them,
// resolving each once. Reads take no lock: the map is replaced, never
// changed, when a series is added, which happens a bounded number of
// times because every label has a bounded set of values.
type seriesCache[K comparable, S any] struct {
	resolve func(K) S
	mu      sync.Mutex // held while adding
	series  atomic.Pointer[map[K]S]
}

func (c *seriesCache[K, S]) get(k K) S {
	if m := c.series.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.series.Load()
	if old != nil {
		if s, ok := (*old)[k]; ok {
			return s
		}
	}
	s := c.resolve(k)
	next := map[K]S{}
	if old != nil {
		next = maps.Clone(*old)
	}
	next[k] = s
	c.series.Store(&next)
	return s
}

func loginOutcome(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, gatewayauth.ErrNoGatewayKey):
		return outcomeForbidden
	case errors.Is(err, gatewayauth.ErrNoCredentials):
		return outcomeNoCreds
	}
	var rpcErr *jsonrpc.Error
	if errors.As(err, &rpcErr) {
		return outcomeError
	}
	var e *apppass.Error
	if !errors.As(err, &e) {
		return outcomeError
	}
	switch e.Kind {
	case apppass.KindRejected:
		return outcomeRefused
	case apppass.KindLimit:
		return outcomeThrottled
	case apppass.KindInvalid:
		return outcomeInvalid
	case apppass.KindUnavailable:
		return outcomeUnavailable
	}
	return outcomeError
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// webhookCollector exports the webhooks' own delivery counts as a counter.
type webhookCollector struct {
	counts func() []webhook.DeliveryCount
}

var webhookDesc = prometheus.NewDesc("apppass_webhook_deliveries_total",
	"Outbound webhook delivery attempts by endpoint and outcome: delivered, retry (failed, tried again), failed (given up), gone (410, endpoint disabled). Endpoint \"(unconfigured)\" counts deliveries for endpoints no longer configured.",
	[]string{"endpoint", "outcome"}, nil)

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- webhookDesc }

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.counts() {
		ch <- prometheus.MustNewConstMetric(webhookDesc, prometheus.CounterValue, float64(d.N), d.Endpoint, d.Outcome)
	}
}

// doveadmCollector exports the Dovecots' state: requests by outcome, up,
// and the events each has not handled yet (read from NATS at scrape).
type doveadmCollector struct {
	targets func(ctx context.Context) []dovecot.TargetStatus
}

var (
	doveadmRequestsDesc = prometheus.NewDesc("apppass_doveadm_requests_total",
		"Requests to Dovecot's doveadm API (kicks and auth cache flushes) by Dovecot and outcome: ok, unreachable, unauthorized (wrong API key), failed.",
		[]string{"dovecot", "outcome"}, nil)
	doveadmUpDesc = prometheus.NewDesc("apppass_doveadm_up",
		"1 while a Dovecot's last doveadm request succeeded (or none was needed yet), else 0.",
		[]string{"dovecot"}, nil)
	doveadmPendingDesc = prometheus.NewDesc("apppass_doveadm_pending_events",
		"Events a Dovecot has not handled yet (waiting or being retried); NaN when NATS cannot say.",
		[]string{"dovecot"}, nil)
)

func (c doveadmCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- doveadmRequestsDesc
	ch <- doveadmUpDesc
	ch <- doveadmPendingDesc
}

func (c doveadmCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	for _, t := range c.targets(ctx) {
		for outcome, n := range t.Requests {
			ch <- prometheus.MustNewConstMetric(doveadmRequestsDesc, prometheus.CounterValue, float64(n), t.URL, outcome)
		}
		ch <- prometheus.MustNewConstMetric(doveadmUpDesc, prometheus.GaugeValue, boolGauge(t.State == "ok"), t.URL)
		pending := math.NaN()
		if t.Pending >= 0 {
			pending = float64(t.Pending)
		}
		ch <- prometheus.MustNewConstMetric(doveadmPendingDesc, prometheus.GaugeValue, pending, t.URL)
	}
}
