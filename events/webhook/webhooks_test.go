package webhook_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/stdwebhook"
)

// whBound is generous: it catches a hang, it does not measure speed.
const whBound = 30 * time.Second

var whOwner = apppass.User{ContextID: 7, UserID: 42, Login: "hook@example.com"}

// hook is one request a receiver got, and whether our own Standard
// Webhooks verification accepted it.
type hookHit struct {
	ID, Timestamp string
	Body          []byte
	VerifyErr     error
	At            time.Time
}

// receiver is a real HTTP server on 127.0.0.1 that verifies what it gets
// and answers with status(n) for its n-th request (1-based).
type hookReceiver struct {
	URL      string
	Secret   string
	verifier *stdwebhook.Verifier
	status   func(n int) int
	header   http.Header // extra response headers

	mu   sync.Mutex
	hits []hookHit
}

func newHookReceiver(t *testing.T, status func(n int) int) *hookReceiver {
	t.Helper()
	r := &hookReceiver{Secret: stdwebhook.GenerateSecret(), status: status, header: http.Header{}}
	key, err := stdwebhook.ParseSecret(r.Secret)
	if err != nil {
		t.Fatal(err)
	}
	r.verifier = &stdwebhook.Verifier{Secrets: []stdwebhook.Secret{key}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		_, verr := r.verifier.Verify(req.Header.Get, body)
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			verr = io.ErrUnexpectedEOF // any error: the request is not what we send
		}
		r.mu.Lock()
		r.hits = append(r.hits, hookHit{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"),
			Body: body, VerifyErr: verr, At: time.Now()})
		n := len(r.hits)
		r.mu.Unlock()
		for k, v := range r.header {
			w.Header()[k] = v
		}
		code := http.StatusNoContent
		if r.status != nil {
			code = r.status(n)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL + "/hooks"
	return r
}

func (r *hookReceiver) got() []hookHit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.hits)
}

func (r *hookReceiver) endpoint(name string, events ...string) apppass.WebhookEndpoint {
	return apppass.WebhookEndpoint{Name: name, URL: r.URL, Secret: r.Secret, Events: events, AllowPrivate: true}
}

type whEnv struct {
	natsURL string
	store   apppass.Store
	pub     *nats.Publisher
	svc     *apppass.Service
	hooks   *webhook.Webhooks
	stop    func()
}

// newWhEnv wires a service, its relay and webhooks to a real store and a
// real NATS, and runs them until the end of the test.
func newWhEnv(t *testing.T, cfg webhook.Config) *whEnv {
	t.Helper()
	e := &whEnv{natsURL: testenv.NATS(t).URL(), store: testenv.Store(t)}
	pub, err := nats.Connect(e.natsURL, "webhooks-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	e.pub = pub
	relay := nats.NewRelay(e.store, pub, testenv.Quiet())
	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	pepper := make([]byte, 32)
	_, _ = rand.Read(pepper)
	digests, err := apppass.NewDigester(pepper)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = &apppass.Service{Store: e.store, Apps: apps, Digester: digests, Events: relay, MaxPerUser: 50}
	if err := pub.EnsureStream(whCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-relayDone })
	e.hooks = e.startHooks(t, cfg)
	return e
}

// startHooks runs a Webhooks until the test ends or e.stop is called.
func (e *whEnv) startHooks(t *testing.T, cfg webhook.Config) *webhook.Webhooks {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 20 * time.Millisecond
		cfg.RetryMaxDelay = 100 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	cfg.Logger = testenv.Quiet()
	wh, err := webhook.New(e.store, e.pub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); wh.Run(ctx) }()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(e.stop)
	return wh
}

func whCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), whBound)
	t.Cleanup(cancel)
	return c
}

func whWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(whBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %s", what, whBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addAndRemove makes one created and one revoked event.
func (e *whEnv) addAndRemove(t *testing.T) string {
	t.Helper()
	c, err := e.svc.Add(whCtx(t), whOwner, apppass.AddRequest{AppScope: "mail", AppName: "Phone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(whCtx(t), whOwner, c.UUID, apppass.ReasonUser); err != nil {
		t.Fatal(err)
	}
	return c.UUID
}

func (e *whEnv) deliveries(t *testing.T, q apppass.WebhookQuery) []apppass.WebhookDelivery {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = 100
	}
	ds, err := e.hooks.Deliveries(whCtx(t), q)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// whStreamBodies reads every message of the stream: event id -> payload.
func whStreamBodies(t *testing.T, natsURL string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range testenv.StreamMessages(t, natsURL) {
		out[m.Header.Get(jetstream.MsgIDHeader)] = m.Data
	}
	return out
}

// TestWebhookDelivered: each event reaches the endpoints that want it,
// signed so that our verification accepts it, with the stream's exact
// bytes as body and the event id as webhook-id.
func TestWebhookDelivered(t *testing.T) {
	all := newHookReceiver(t, nil)
	revokedOnly := newHookReceiver(t, func(int) int { return http.StatusOK })
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{
		all.endpoint("all"), revokedOnly.endpoint("revocations", apppass.EventRevoked),
	}})
	uuid := e.addAndRemove(t)
	whWait(t, "delivered to both", func() bool { return len(all.got()) >= 2 && len(revokedOnly.got()) >= 1 })

	stream := whStreamBodies(t, e.natsURL)
	var types []string
	for _, h := range all.got() {
		if h.VerifyErr != nil {
			t.Fatalf("our verification refused a delivery: %v", h.VerifyErr)
		}
		if want, ok := stream[h.ID]; !ok || string(want) != string(h.Body) {
			t.Fatalf("body of %s is not the stream's message:\n got %s\nwant %s", h.ID, h.Body, want)
		}
		var ev apppass.Event
		if err := json.Unmarshal(h.Body, &ev); err != nil || ev.ID != h.ID || ev.Data.UUID != uuid {
			t.Fatalf("delivered event %s (%v), webhook-id %s", h.Body, err, h.ID)
		}
		types = append(types, ev.Type)
	}
	if !slices.Contains(types, apppass.EventCreated) || !slices.Contains(types, apppass.EventRevoked) {
		t.Fatalf("endpoint 'all' got %v", types)
	}
	r := revokedOnly.got()
	var ev apppass.Event
	_ = json.Unmarshal(r[0].Body, &ev)
	if ev.Type != apppass.EventRevoked || ev.Data.Reason != apppass.ReasonUser || r[0].VerifyErr != nil {
		t.Fatalf("endpoint 'revocations' got %s (%v)", r[0].Body, r[0].VerifyErr)
	}
	// Delivery state: delivered after one attempt each; nothing else queued.
	whWait(t, "three delivered", func() bool {
		return len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryDelivered})) == 3
	})
	for _, d := range e.deliveries(t, apppass.WebhookQuery{}) {
		if d.State != apppass.DeliveryDelivered || d.Attempts != 1 || d.Finished == nil || d.NextAttempt != nil {
			t.Errorf("delivery %+v", d)
		}
		if d.ID != d.EventID+":"+d.Endpoint {
			t.Errorf("delivery id %s", d.ID)
		}
	}
	if got := e.deliveries(t, apppass.WebhookQuery{Endpoint: "revocations"}); len(got) != 1 || got[0].LastStatus != 200 {
		t.Fatalf("revocations deliveries %+v", got)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(all.got()); n != 2 {
		t.Fatalf("endpoint 'all' got %d requests, want exactly 2", n)
	}
	eps, err := e.hooks.Endpoints(whCtx(t))
	if err != nil || len(eps) != 2 || eps[0].State != "enabled" || eps[0].Deliveries[apppass.DeliveryDelivered] != 2 ||
		!slices.Equal(eps[0].Events, []string{"*"}) || !slices.Equal(eps[1].Events, []string{apppass.EventRevoked}) {
		t.Fatalf("endpoints %+v, %v", eps, err)
	}
}

// TestWebhookRetry: a 500 is retried, with the same webhook-id, a fresh
// signature, until a 2xx.
func TestWebhookRetry(t *testing.T) {
	r := newHookReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{r.endpoint("flaky", apppass.EventRevoked)}})
	e.addAndRemove(t)
	whWait(t, "delivered after retries", func() bool {
		ds := e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryDelivered})
		return len(ds) == 1
	})
	d := e.deliveries(t, apppass.WebhookQuery{})[0]
	if d.Attempts != 3 || d.LastStatus != 200 || d.LastError != "" {
		t.Fatalf("delivery %+v", d)
	}
	hits := r.got()
	if len(hits) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(hits))
	}
	for _, h := range hits {
		if h.ID != d.EventID || h.VerifyErr != nil || string(h.Body) != string(hits[0].Body) {
			t.Fatalf("attempt %+v", h)
		}
	}
}

// TestWebhookGone: a 410 disables the endpoint: nothing more is sent to
// it, its deliveries wait, and enabling it sends them.
func TestWebhookGone(t *testing.T) {
	var mu sync.Mutex
	gone := true
	r := newHookReceiver(t, func(int) int {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			return http.StatusGone
		}
		return http.StatusOK
	})
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{r.endpoint("gone", apppass.EventRevoked)}})
	e.addAndRemove(t)
	whWait(t, "disabled", func() bool {
		eps, err := e.hooks.Endpoints(whCtx(t))
		return err == nil && eps[0].State == "disabled"
	})
	eps, _ := e.hooks.Endpoints(whCtx(t))
	if eps[0].Disabled == nil || !strings.Contains(eps[0].Disabled.Reason, "410") {
		t.Fatalf("endpoint %+v", eps[0])
	}
	e.addAndRemove(t)
	whWait(t, "both queued", func() bool { return len(e.deliveries(t, apppass.WebhookQuery{})) == 2 })
	time.Sleep(300 * time.Millisecond) // many poll intervals
	if n := len(r.got()); n != 1 {
		t.Fatalf("a disabled endpoint got %d requests, want only the first", n)
	}
	for _, d := range e.deliveries(t, apppass.WebhookQuery{}) {
		if d.State != apppass.DeliveryPending {
			t.Fatalf("delivery to a disabled endpoint %+v", d)
		}
	}

	mu.Lock()
	gone = false
	mu.Unlock()
	if was, err := e.hooks.Enable(whCtx(t), "gone"); err != nil || !was {
		t.Fatalf("Enable = %v, %v", was, err)
	}
	whWait(t, "both delivered", func() bool {
		return len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryDelivered})) == 2
	})
	if _, err := e.hooks.Enable(whCtx(t), "nope"); apppass.KindOf(err) != apppass.KindInvalid {
		t.Fatalf("Enable of an unknown endpoint: %v", err)
	}
}

// TestWebhookRedirectNotFollowed: a 3xx is a failed attempt; the target
// of the redirect never hears of the event.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	target := newHookReceiver(t, nil)
	r := newHookReceiver(t, func(int) int { return http.StatusTemporaryRedirect })
	r.header.Set("Location", target.URL)
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{r.endpoint("moved", apppass.EventRevoked)}})
	e.addAndRemove(t)
	whWait(t, "two attempts", func() bool { return len(r.got()) >= 2 })
	if n := len(target.got()); n != 0 {
		t.Fatalf("the redirect was followed: the target got %d requests", n)
	}
	whWait(t, "the attempts recorded", func() bool {
		ds := e.deliveries(t, apppass.WebhookQuery{})
		return len(ds) == 1 && ds[0].Attempts >= 2
	})
	d := e.deliveries(t, apppass.WebhookQuery{})[0]
	if d.State != apppass.DeliveryPending || d.LastStatus != http.StatusTemporaryRedirect || !strings.Contains(d.LastError, "redirect") {
		t.Fatalf("delivery %+v", d)
	}
}

// TestWebhookRefusesInternalTargets: without allowPrivate, a loopback
// target is refused when dialling; nothing reaches it.
func TestWebhookRefusesInternalTargets(t *testing.T) {
	r := newHookReceiver(t, nil)
	ep := r.endpoint("internal", apppass.EventRevoked)
	ep.AllowPrivate = false
	// The same target through a name that resolves to loopback.
	byName := r.endpoint("internal-by-name", apppass.EventRevoked)
	byName.AllowPrivate = false
	byName.URL = strings.Replace(r.URL, "127.0.0.1", "localhost", 1)
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{ep, byName}})
	e.addAndRemove(t)
	whWait(t, "attempts refused", func() bool {
		ds := e.deliveries(t, apppass.WebhookQuery{})
		return len(ds) == 2 && ds[0].Attempts >= 2 && ds[1].Attempts >= 2
	})
	for _, d := range e.deliveries(t, apppass.WebhookQuery{}) {
		if d.State != apppass.DeliveryPending || d.LastStatus != 0 || !strings.Contains(d.LastError, "refusing to connect") {
			t.Fatalf("delivery %+v", d)
		}
	}
	if n := len(r.got()); n != 0 {
		t.Fatalf("an internal target got %d requests", n)
	}
}

func TestInternalAddress(t *testing.T) {
	for addr, internal := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"0.0.0.0": true, "100.64.0.1": true, "224.0.0.1": true, "255.255.255.255": true, "::1": true, "::": true,
		"fe80::1": true, "fd00::1": true, "::ffff:127.0.0.1": true, "::ffff:10.0.0.1": true, "64:ff9b::a00:1": true,
		"93.184.216.34": false, "8.8.8.8": false, "2606:4700:4700::1111": false, "::ffff:8.8.8.8": false,
	} {
		if got := webhook.InternalAddress(netip.MustParseAddr(addr)); got != internal {
			t.Errorf("InternalAddress(%s) = %v, want %v", addr, got, internal)
		}
	}
}

// TestWebhookGivesUp: failures past RetryFor end as failed; a request
// that takes too long is a failure too.
func TestWebhookGivesUp(t *testing.T) {
	slow := newHookReceiver(t, nil)
	release := make(chan struct{})
	slowSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slowSrv.Close() })
	slowEP := slow.endpoint("slow", apppass.EventRevoked)
	slowEP.URL = slowSrv.URL
	broken := newHookReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	e := newWhEnv(t, webhook.Config{
		Endpoints: []apppass.WebhookEndpoint{broken.endpoint("broken", apppass.EventRevoked), slowEP},
		Timeout:   150 * time.Millisecond, RetryFor: 700 * time.Millisecond,
	})
	e.addAndRemove(t)
	whWait(t, "both failed", func() bool {
		return len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryFailed})) == 2
	})
	for _, d := range e.deliveries(t, apppass.WebhookQuery{}) {
		if d.Attempts < 2 || d.Finished == nil || d.Finished.Sub(d.Created) < 700*time.Millisecond {
			t.Errorf("delivery %+v: given up too early", d)
		}
		switch d.Endpoint {
		case "broken":
			if d.LastStatus != http.StatusServiceUnavailable || d.LastError != "HTTP 503" {
				t.Errorf("delivery %+v", d)
			}
		case "slow":
			if d.LastStatus != 0 || !strings.Contains(d.LastError, "timeout") {
				t.Errorf("delivery %+v", d)
			}
		}
	}
	if len(broken.got()) != e.deliveries(t, apppass.WebhookQuery{Endpoint: "broken"})[0].Attempts {
		t.Errorf("receiver count and attempts differ")
	}
}

// TestWebhookSurvivesRestart: events published while the webhooks are
// stopped are delivered by the next process, from the durable consumer,
// each once.
func TestWebhookSurvivesRestart(t *testing.T) {
	r := newHookReceiver(t, nil)
	cfg := webhook.Config{Endpoints: []apppass.WebhookEndpoint{r.endpoint("r", apppass.EventRevoked)}}
	e := newWhEnv(t, cfg)
	e.addAndRemove(t)
	whWait(t, "the first delivered", func() bool { return len(r.got()) == 1 })
	e.stop()
	for range 3 {
		e.addAndRemove(t)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(r.got()); n != 1 {
		t.Fatalf("delivered while stopped: %d", n)
	}
	e.hooks = e.startHooks(t, cfg)
	whWait(t, "all four delivered", func() bool { return len(r.got()) == 4 })
	time.Sleep(200 * time.Millisecond)
	ids := map[string]bool{}
	for _, h := range r.got() {
		if ids[h.ID] {
			t.Fatalf("event %s delivered twice", h.ID)
		}
		ids[h.ID] = true
	}
	if n := len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryDelivered})); n != 4 {
		t.Fatalf("%d delivered", n)
	}
}

// TestWebhookStopLetsAnAttemptFinish: stopping the webhooks (apppassd's
// SIGTERM) while a receiver is answering waits for the answer and records
// it, so the receiver does not get the event again after the restart.
func TestWebhookStopLetsAnAttemptFinish(t *testing.T) {
	var e *whEnv
	stopped := make(chan struct{})
	r := newHookReceiver(t, func(n int) int {
		if n == 1 {
			go func() { e.stop(); close(stopped) }()
			time.Sleep(300 * time.Millisecond) // the stop comes while we answer
		}
		return http.StatusNoContent
	})
	cfg := webhook.Config{Endpoints: []apppass.WebhookEndpoint{r.endpoint("r", apppass.EventRevoked)}}
	e = newWhEnv(t, cfg)
	e.addAndRemove(t)
	select {
	case <-stopped:
	case <-time.After(whBound):
		t.Fatal("stop still waiting")
	}
	if n := len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryDelivered})); n != 1 {
		t.Fatalf("%d deliveries recorded as delivered after the stop, want 1", n)
	}
	e.hooks = e.startHooks(t, cfg)
	e.addAndRemove(t)
	whWait(t, "the second delivered", func() bool { return len(r.got()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if hits := r.got(); len(hits) != 2 || hits[0].ID == hits[1].ID {
		t.Fatalf("the receiver got %d requests (%v), want each event once", len(hits), hits)
	}
}

func TestWebhookConfigRefused(t *testing.T) {
	good := apppass.WebhookEndpoint{Name: "a", URL: "https://example.com/h", Secret: stdwebhook.GenerateSecret()}
	for name, mut := range map[string]func(*apppass.WebhookEndpoint){
		"bad name":   func(e *apppass.WebhookEndpoint) { e.Name = "a b" },
		"bad url":    func(e *apppass.WebhookEndpoint) { e.URL = "ftp://example.com" },
		"bad secret": func(e *apppass.WebhookEndpoint) { e.Secret = "hunter2" },
		"bad event":  func(e *apppass.WebhookEndpoint) { e.Events = []string{"apppassword.deleted"} },
	} {
		ep := good
		mut(&ep)
		if _, err := webhook.New(nil, nil, webhook.Config{Endpoints: []apppass.WebhookEndpoint{ep}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := webhook.New(nil, nil, webhook.Config{Endpoints: []apppass.WebhookEndpoint{good, good}}); err == nil {
		t.Error("the same name twice: accepted")
	}
}
