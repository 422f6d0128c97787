package jsonrpc_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/webhook"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/stdwebhook"
)

type deliveryRow struct {
	ID          string     `json:"id"`
	EventID     string     `json:"eventId"`
	EventType   string     `json:"eventType"`
	Endpoint    string     `json:"endpoint"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	Created     string     `json:"created"`
	NextAttempt *string    `json:"nextAttempt"`
	LastAttempt *string    `json:"lastAttempt"`
	LastStatus  int        `json:"lastStatus"`
	LastError   string     `json:"lastError"`
	Finished    *time.Time `json:"finished"`
}

// TestWebhookAdminRPC: delivery state of real deliveries to a real
// receiver, as admins see it over JSON-RPC; nobody else sees it.
func TestWebhookAdminRPC(t *testing.T) {
	secret := stdwebhook.GenerateSecret()
	key, _ := stdwebhook.ParseSecret(secret)
	verifier := &stdwebhook.Verifier{Secrets: []stdwebhook.Secret{key}}
	var verified, refused atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := verifier.Verify(r.Header.Get, body); err != nil {
			refused.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		verified.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	f := NewEventFixture(t, EventFixtureOptions{Webhooks: &webhook.Config{
		Endpoints: []apppass.WebhookEndpoint{
			{Name: "crm", URL: recv.URL + "/in", Secret: secret, AllowPrivate: true},
			// The same receiver, but loopback is not allowed for this one.
			{Name: "guarded", URL: recv.URL + "/in", Secret: secret, Events: []string{apppass.EventRevoked}},
		},
		RetryBase: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
	}})
	user := f.Token(Alice)
	c := Decode[Created](t, OK(t, f.Call(t, user, "appPasswords.add", `{"appScope":"mail","appName":"phone"}`)))
	OK(t, f.Call(t, user, "appPasswords.remove", `{"uuid":"`+c.UUID+`"}`))

	deliveries := func(params string) []deliveryRow {
		return Decode[[]deliveryRow](t, OK(t, f.Call(t, AdminSecret, "webhooks.deliveries", params)))
	}
	EvWait(t, "both delivered to crm", func() bool { return len(deliveries(`{"state":"delivered"}`)) == 2 })
	if n := verified.Load(); n != 2 || refused.Load() != 0 {
		t.Fatalf("receiver verified %d, refused %d", n, refused.Load())
	}
	for _, d := range deliveries(`{"endpoint":"crm"}`) {
		if d.State != "delivered" || d.Attempts != 1 || d.LastStatus != 200 || d.Finished == nil || d.NextAttempt != nil ||
			d.ID != d.EventID+":crm" || (d.EventType != apppass.EventCreated && d.EventType != apppass.EventRevoked) {
			t.Errorf("crm delivery %+v", d)
		}
	}
	// The guarded endpoint's delivery waits, with the refusal as its error.
	EvWait(t, "the guarded attempt recorded", func() bool {
		ds := deliveries(`{"endpoint":"guarded","state":"pending"}`)
		return len(ds) == 1 && ds[0].Attempts >= 1
	})
	g := deliveries(`{"endpoint":"guarded"}`)[0]
	if g.EventType != apppass.EventRevoked || g.NextAttempt == nil || !strings.Contains(g.LastError, "refusing to connect to 127.0.0.1") {
		t.Fatalf("guarded delivery %+v", g)
	}
	if got := deliveries(`{"limit":1}`); len(got) != 1 {
		t.Fatalf("limit 1 gave %d", len(got))
	}
	if got := deliveries(`{"state":"failed","limit":null}`); len(got) != 0 {
		t.Fatalf("failed: %+v", got)
	}
	raw := OK(t, f.Call(t, AdminSecret, "webhooks.deliveries", ""))
	if strings.Contains(string(raw), `"body"`) || strings.Contains(string(raw), "leaseToken") {
		t.Fatalf("deliveries show internals: %s", raw)
	}

	var eps []apppass.WebhookEndpointStatus
	raw = OK(t, f.Call(t, AdminSecret, "webhooks.endpoints", ""))
	if err := json.Unmarshal(raw, &eps); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), secret) || strings.Contains(string(raw), "whsec_") {
		t.Fatalf("endpoints show the secret: %s", raw)
	}
	if len(eps) != 2 || eps[0].Name != "crm" || eps[0].State != "enabled" || eps[0].Deliveries["delivered"] != 2 ||
		!eps[0].AllowPrivate || eps[1].AllowPrivate || eps[1].Deliveries["pending"] != 1 || eps[0].URL != recv.URL+"/in" {
		t.Fatalf("endpoints %s", raw)
	}
	if got := string(OK(t, f.Call(t, AdminSecret, "webhooks.enable", `{"endpoint":"crm"}`))); got != `{"enabled":true,"wasDisabled":false}` {
		t.Fatalf("enable: %s", got)
	}

	// Admins only.
	for _, bearer := range []string{user, GatewaySecret} {
		for _, m := range []string{"webhooks.endpoints", "webhooks.deliveries", "webhooks.enable"} {
			WantError(t, f.Call(t, bearer, m, `{"endpoint":"crm"}`), -32003)
		}
	}
	// Strict params.
	for params, field := range map[string]string{
		`{"state":"lost"}`:             "state",
		`{"state":{"$ne":""}}`:         "state",
		`{"limit":0}`:                  "limit",
		`{"limit":501}`:                "limit",
		`{"limit":"10"}`:               "limit",
		`{"limit":2.5}`:                "limit",
		`{"endpoint":"nope"}`:          "endpoint",
		`{"colour":"blue"}`:            "colour",
		`{"endpoint":["crm"]}`:         "endpoint",
		`["crm"]`:                      "params",
		`{"state":"pending","user":1}`: "user",
	} {
		WantInvalid(t, f.Call(t, AdminSecret, "webhooks.deliveries", params), field)
	}
	WantInvalid(t, f.Call(t, AdminSecret, "webhooks.enable", `{}`), "endpoint")
	WantInvalid(t, f.Call(t, AdminSecret, "webhooks.enable", `{"endpoint":"nope"}`), "endpoint")
	WantInvalid(t, f.Call(t, AdminSecret, "webhooks.endpoints", `{"x":1}`), "x")
}

// Without outbound webhooks configured the methods answer empty lists.
func TestWebhookAdminRPCUnconfigured(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	if got := string(OK(t, f.Call(t, AdminSecret, "webhooks.endpoints", ""))); got != "[]" {
		t.Fatalf("endpoints: %s", got)
	}
	if got := string(OK(t, f.Call(t, AdminSecret, "webhooks.deliveries", `{"state":"failed"}`))); got != "[]" {
		t.Fatalf("deliveries: %s", got)
	}
	WantInvalid(t, f.Call(t, AdminSecret, "webhooks.enable", `{"endpoint":"crm"}`), "endpoint")
	WantError(t, f.Call(t, f.Token(Alice), "webhooks.endpoints", ""), -32003)
}
