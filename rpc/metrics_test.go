package rpc_test

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/rpc/gatewayauth"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/stdwebhook"
)

// scrape reads GET /metrics and parses the text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sample finds the sample of family name whose labels are exactly labels
// ("k=v" pairs) and returns its value (a histogram's count); ok is false
// when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
	slices.Sort(labels)
	for _, m := range fam.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		slices.Sort(got)
		if !slices.Equal(got, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func wantSample(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := sample(fams, name, labels...)
	if !ok {
		t.Errorf("no %s%v in /metrics", name, labels)
		return
	}
	if got != want && !(math.IsNaN(want) && math.IsNaN(got)) {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// labelValues lists the values label takes in family name.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && !slices.Contains(out, l.GetValue()) {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// gatewayGet sends a GET to an adapter endpoint with the gateway key
// (unless key is "") and the given headers.
func gatewayGet(t *testing.T, base, path, key string, headers map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if key != "" {
		req.Header.Set(gatewayauth.KeyHeader, key)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func basicAuth(login, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(login+":"+password))
}

// TestMetrics makes real calls over HTTP, WebSocket and the gateway
// endpoints, then checks that /metrics counted each with the right labels.
func TestMetrics(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	store := f.Store
	cache := apppass.NewAuthCache(time.Minute)
	cache.SetTrusted(true)
	f.Service.Cache = cache
	ns := testenv.NATS(t)
	pub, err := nats.Connect(ns.URL(), "metrics-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	hooks, err := webhook.New(store, pub, webhook.Config{Endpoints: []apppass.WebhookEndpoint{
		{Name: "crm", URL: "https://crm.example.com/hooks", Secret: stdwebhook.GenerateSecret()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.Server.Metrics = rpc.NewMetrics(rpc.MetricsSources{Cache: cache, PendingEvents: store.PendingCount,
		StorePing: store.Ping, NATSConnected: pub.Connected, WebhookDeliveries: hooks.DeliveryCounts})
	f.Server.MailBackends = rpc.DefaultMailBackends()
	f.Reserve(t)

	// Before any call: the gauges answer, the Go and process collectors
	// are there, nothing is counted yet.
	fams := scrape(t, f.URL)
	wantSample(t, fams, 1, "apppass_store_up")
	wantSample(t, fams, 1, "apppass_nats_connected")
	wantSample(t, fams, 0, "apppass_outbox_pending_events")
	wantSample(t, fams, 0, "apppass_auth_cache_hits_total")
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
	if got := labelValues(fams, "apppass_webhook_deliveries_total", "endpoint"); !slices.Equal(got, []string{"(unconfigured)", "crm"}) {
		t.Errorf("webhook endpoints %v", got)
	}
	wantSample(t, fams, 0, "apppass_webhook_deliveries_total", "endpoint=crm", "outcome=delivered")
	if fams["apppass_rpc_calls_total"] != nil && len(fams["apppass_rpc_calls_total"].Metric) > 0 {
		t.Errorf("calls counted before any call: %v", fams["apppass_rpc_calls_total"])
	}

	user := f.Token(Alice)
	mail := f.Add(t, user, "mail", "phone")
	cal := f.Add(t, user, "caldav", "calendar")
	f.List(t, user)
	WantError(t, f.Call(t, user, "appPasswords.remove", `{"uuid":"00000000-0000-4000-8000-000000000000"}`), errcode.NotFound)
	WantError(t, f.Call(t, user, "no.such.method", ""), errcode.MethodNotFound)
	WantError(t, f.Call(t, user, "made.up.too", ""), errcode.MethodNotFound)
	WantError(t, f.Call(t, GatewaySecret, "appPasswords.list", ""), errcode.Forbidden)
	// authenticate over /rpc: right twice (a miss, then a cache hit),
	// wrong, an unknown protocol, and through a user token (forbidden
	// before the method runs: a call, not a login).
	OK(t, f.Authenticate(t, Alice.Login, mail.Password, "imap"))
	OK(t, f.Authenticate(t, Alice.Login, mail.Password, "imap"))
	WantError(t, f.Authenticate(t, Alice.Login, "abcd-efgh-ijkl-mnop", "imap"), errcode.Rejected)
	WantError(t, f.Authenticate(t, Alice.Login, mail.Password, "gopher"), errcode.InvalidParams)
	WantError(t, f.Call(t, user, "appPasswords.authenticate", `{"login":"a","password":"b","protocol":"imap"}`), errcode.Forbidden)
	// Over WebSocket: the same counters.
	ws := f.DialWS(t, user)
	OK(t, ws.Call(t, "appPasswords.list", ""))
	WantError(t, ws.Call(t, "ws.nope", ""), errcode.MethodNotFound)

	// Gateway endpoints.
	if r := gatewayGet(t, f.URL, "/auth/basic", GatewaySecret, map[string]string{
		"Authorization": basicAuth(Alice.Login, cal.Password), "X-AppPass-Protocol": "caldav"}); r.StatusCode != 200 {
		t.Fatalf("/auth/basic right password: HTTP %d", r.StatusCode)
	}
	if r := gatewayGet(t, f.URL, "/auth/basic", GatewaySecret, map[string]string{
		"Authorization": basicAuth(Alice.Login, mail.Password), "X-AppPass-Protocol": "caldav"}); r.StatusCode != 401 {
		t.Fatalf("/auth/basic other app's password: HTTP %d", r.StatusCode)
	}
	if r := gatewayGet(t, f.URL, "/auth/basic", GatewaySecret, map[string]string{"X-AppPass-Protocol": "caldav"}); r.StatusCode != 401 {
		t.Fatalf("/auth/basic without credentials: HTTP %d", r.StatusCode)
	}
	if r := gatewayGet(t, f.URL, "/auth/basic", "", map[string]string{"X-AppPass-Protocol": "caldav"}); r.StatusCode != 403 {
		t.Fatalf("/auth/basic without a key: HTTP %d", r.StatusCode)
	}
	mailHeaders := func(password, method string) map[string]string {
		return map[string]string{"Auth-Method": method, "Auth-User": url.PathEscape(Alice.Login),
			"Auth-Pass": url.PathEscape(password), "Auth-Protocol": "smtp", "Client-IP": "192.0.2.7"}
	}
	for _, c := range []struct{ Password, method, status string }{
		{mail.Password, "plain", "OK"},
		{"zzzz-zzzz-zzzz-zzzz", "plain", "Invalid login or password"},
		{mail.Password, "cram-md5", "Unsupported authentication method"},
	} {
		if r := gatewayGet(t, f.URL, "/auth/mail", GatewaySecret, mailHeaders(c.Password, c.method)); r.Header.Get("Auth-Status") != c.status {
			t.Fatalf("/auth/mail %s: Auth-Status %q, want %q", c.method, r.Header.Get("Auth-Status"), c.status)
		}
	}

	fams = scrape(t, f.URL)
	calls := "apppass_rpc_calls_total"
	wantSample(t, fams, 2, calls, "method=appPasswords.add", "code=ok")
	wantSample(t, fams, 2, calls, "method=appPasswords.list", "code=ok") // HTTP and WebSocket
	wantSample(t, fams, 1, calls, "method=appPasswords.list", "code=-32003")
	wantSample(t, fams, 1, calls, "method=appPasswords.remove", "code=-32004")
	wantSample(t, fams, 3, calls, "method=unknown", "code=-32601")
	wantSample(t, fams, 2, calls, "method=appPasswords.authenticate", "code=ok")
	wantSample(t, fams, 1, calls, "method=appPasswords.authenticate", "code=-32010")
	wantSample(t, fams, 1, calls, "method=appPasswords.authenticate", "code=-32602")
	wantSample(t, fams, 1, calls, "method=appPasswords.authenticate", "code=-32003")
	// Made-up method names never become label values.
	for _, m := range labelValues(fams, calls, "method") {
		if m != "unknown" && !strings.HasPrefix(m, "appPasswords.") {
			t.Errorf("method label %q", m)
		}
	}
	wantSample(t, fams, 2, "apppass_rpc_call_duration_seconds", "method=appPasswords.add")
	wantSample(t, fams, 3, "apppass_rpc_call_duration_seconds", "method=unknown")

	auth := "apppass_authenticate_total"
	wantSample(t, fams, 2, auth, "protocol=imap", "outcome=ok")
	wantSample(t, fams, 1, auth, "protocol=imap", "outcome=refused")
	wantSample(t, fams, 1, auth, "protocol=other", "outcome=invalid")
	wantSample(t, fams, 1, auth, "protocol=caldav", "outcome=ok")
	wantSample(t, fams, 1, auth, "protocol=caldav", "outcome=refused")
	wantSample(t, fams, 1, auth, "protocol=caldav", "outcome=no_password")
	wantSample(t, fams, 1, auth, "protocol=caldav", "outcome=forbidden")
	wantSample(t, fams, 1, auth, "protocol=smtp", "outcome=ok")
	wantSample(t, fams, 1, auth, "protocol=smtp", "outcome=refused")
	wantSample(t, fams, 1, auth, "protocol=smtp", "outcome=invalid")
	var logins float64
	for _, m := range fams[auth].GetMetric() {
		logins += m.GetCounter().GetValue()
	}
	if logins != 11 {
		t.Errorf("%v logins counted, want 11 (the forbidden /rpc call is not a login)", logins)
	}

	// Cache: the mail password, once looked up (the first imap login),
	// answered the second imap login, the /auth/basic try with it and the
	// smtp login from the cache; the wrong passwords and the calendar
	// password's first use went to the store.
	wantSample(t, fams, 3, "apppass_auth_cache_hits_total")
	wantSample(t, fams, 4, "apppass_auth_cache_misses_total")
	// Nobody publishes here: the created and used events wait.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending, err := store.PendingCount(ctx)
	if err != nil || pending < 2 {
		t.Fatalf("PendingCount = %d, %v; want the two created events at least", pending, err)
	}
	wantSample(t, fams, float64(pending), "apppass_outbox_pending_events")

	// Connection state follows the real connections.
	pub.Close()
	fams = scrape(t, f.URL)
	wantSample(t, fams, 0, "apppass_nats_connected")
}

// TestMetricsStoreDown: with MongoDB gone, the scrape still answers:
// mongodb_up 0, the backlog NaN (unknown), not an error or a hang.
func TestMetricsStoreDown(t *testing.T) {
	uri, stopStore := StoppableStore(t)
	f := NewFixture(t, FixtureOptions{MongoURI: uri})
	store := f.Store
	f.Server.Metrics = rpc.NewMetrics(rpc.MetricsSources{PendingEvents: store.PendingCount, StorePing: store.Ping})
	f.Reserve(t)
	fams := scrape(t, f.URL)
	wantSample(t, fams, 1, "apppass_store_up")
	stopStore()
	fams = scrape(t, f.URL)
	wantSample(t, fams, 0, "apppass_store_up")
	wantSample(t, fams, math.NaN(), "apppass_outbox_pending_events")
	// Sources left nil export nothing.
	for _, name := range []string{"apppass_nats_connected", "apppass_auth_cache_hits_total", "apppass_webhook_deliveries_total"} {
		if fams[name] != nil {
			t.Errorf("%s exported without a source", name)
		}
	}
}

// TestNoMetrics: a Server without Metrics serves calls and no /metrics.
func TestNoMetrics(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.list", ""))
	resp, err := http.Get(f.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics without metrics: HTTP %d, want 404", resp.StatusCode)
	}
}
