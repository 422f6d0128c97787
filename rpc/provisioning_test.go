package rpc_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/stdwebhook"
)

// eventFixture is a fixture whose service publishes its events to a real
// NATS through a running relay, with provisioning webhooks (and, if asked,
// outbound webhooks) configured.
type eventFixture struct {
	*fixture
	natsURL string
	store   apppass.Store
	pub     *nats.Publisher
	secret  stdwebhook.Secret // the provisioning secret
	msgSeq  atomic.Int64
}

type eventFixtureOptions struct {
	revokeOnPasswordChange bool
	webhooks               *webhook.Config
}

func newEventFixture(t *testing.T, o eventFixtureOptions) *eventFixture {
	t.Helper()
	f := &eventFixture{fixture: &fixture{}, natsURL: testenv.NATS(t).URL(), store: testenv.Store(t)}
	ctx := evCtx(t)
	pub, err := nats.Connect(f.natsURL, "rpc-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	f.pub = pub
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	relay := nats.NewRelay(f.store, pub, testenv.Quiet())
	runCtx, stop := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); relay.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-relayDone })

	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	f.Digester, err = apppass.NewDigester(randomBytes(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	f.TokenKey = randomBytes(t, 32)
	if f.Tokens, err = apppass.NewUserTokens(f.TokenKey); err != nil {
		t.Fatal(err)
	}
	f.Service = &apppass.Service{Store: f.store, Apps: apps, Digester: f.Digester, Events: relay, MaxPerUser: 200}
	f.secret, _ = stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	f.Server = &rpc.Server{
		Service: f.Service,
		Auth: &rpc.Authenticator{Tokens: f.Tokens, ServiceKeys: []apppass.ServiceKey{
			{Name: "gw", Role: apppass.RoleGateway, Secret: gatewaySecret},
			{Name: "adm", Role: apppass.RoleAdmin, Secret: adminSecret},
		}},
		Ready:  func(ctx context.Context) error { return f.store.Ping(ctx) },
		Logger: testenv.Quiet(),
		Provisioning: &rpc.Provisioning{Secrets: []stdwebhook.Secret{f.secret}, IDs: f.store,
			RevokeOnPasswordChange: o.revokeOnPasswordChange},
	}
	if o.webhooks != nil {
		cfg := *o.webhooks
		cfg.Logger = testenv.Quiet()
		cfg.PollInterval = 20 * time.Millisecond
		wh, err := webhook.New(f.store, pub, cfg)
		if err != nil {
			t.Fatal(err)
		}
		whDone := make(chan struct{})
		go func() { defer close(whDone); wh.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-whDone })
		f.Server.Webhooks = wh
	}
	hs := httptest.NewServer(f.Server.Handler())
	t.Cleanup(hs.Close)
	f.URL = hs.URL
	return f
}

func evCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func evWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signed returns a provisioning request signed with secret at at.
func (f *eventFixture) signed(t *testing.T, body string, secret stdwebhook.Secret, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.URL+"/webhooks/provisioning", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	id := "msg_" + testenv.RandomHex(8)
	stdwebhook.SetHeaders(req.Header.Set, id, at, []byte(body), secret)
	return req
}

// send posts req and returns the status and the decoded JSON answer.
func send(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("HTTP %d answer is not a JSON object: %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return resp.StatusCode, out
}

func (f *eventFixture) provision(t *testing.T, body string) (int, map[string]any) {
	t.Helper()
	return send(t, f.signed(t, body, f.secret, time.Now()))
}

// addN gives u n app passwords and returns their uuids, sorted.
func (f *eventFixture) addN(t *testing.T, u apppass.User, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		c, err := f.Service.Add(evCtx(t), u, apppass.AddRequest{AppScope: "mail", AppName: "p" + string(rune('a'+i%26))})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.UUID)
	}
	slices.Sort(out)
	return out
}

// active returns the uuids of u's active passwords, sorted.
func (f *eventFixture) active(t *testing.T, u apppass.User) []string {
	t.Helper()
	ps, err := f.Service.List(evCtx(t), u)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.UUID)
	}
	slices.Sort(out)
	return out
}

// revokedInStream reads the stream's revoked events: uuid -> reason.
func (f *eventFixture) revokedInStream(t *testing.T) map[string]string {
	t.Helper()
	nc, err := natsgo.Connect(f.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := evCtx(t)
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev apppass.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == apppass.EventRevoked {
			if _, dup := out[ev.Data.UUID]; dup {
				t.Fatalf("two revoked events for %s in the stream", ev.Data.UUID)
			}
			out[ev.Data.UUID] = ev.Data.Reason
		}
	}
	return out
}

// waitRevoked waits until the stream holds a revoked event for each uuid,
// checks its reason, and that nothing else was revoked.
func (f *eventFixture) waitRevoked(t *testing.T, reason string, uuids []string) {
	t.Helper()
	evWait(t, "revoked events in the stream", func() bool { return len(f.revokedInStream(t)) >= len(uuids) })
	got := f.revokedInStream(t)
	if len(got) != len(uuids) {
		t.Fatalf("%d revoked events in the stream, want %d", len(got), len(uuids))
	}
	for _, u := range uuids {
		if r, ok := got[u]; !ok || r != reason {
			t.Fatalf("revoked event for %s: reason %q (present %v), want %q", u, r, ok, reason)
		}
	}
}

func TestProvisioningUserDeleted(t *testing.T) {
	f := newEventFixture(t, eventFixtureOptions{})
	gone := f.addN(t, alice, 3)
	bobs := f.addN(t, bob, 1)
	carols := f.addN(t, carol, 1) // alice's user id in another context

	status, out := f.provision(t, `{"type":"user.deleted","timestamp":"2026-01-02T03:04:05Z","data":{"contextId":1,"userId":5}}`)
	if status != http.StatusOK || out["status"] != "done" || out["revoked"] != 3.0 || out["type"] != "user.deleted" {
		t.Fatalf("HTTP %d %v", status, out)
	}
	if got := f.active(t, alice); len(got) != 0 {
		t.Fatalf("alice still has %v", got)
	}
	if !slices.Equal(f.active(t, bob), bobs) || !slices.Equal(f.active(t, carol), carols) {
		t.Fatal("another user's passwords were revoked")
	}
	f.waitRevoked(t, apppass.ReasonUserDeleted, gone)
}

func TestProvisioningContextDeleted(t *testing.T) {
	f := newEventFixture(t, eventFixtureOptions{})
	// (More than one batch of them: TestRemoveContext in the root package.)
	gone := append(f.addN(t, alice, 3), f.addN(t, bob, 2)...)
	slices.Sort(gone)
	carols := f.addN(t, carol, 1)

	status, out := f.provision(t, `{"type":"context.deleted","data":{"contextId":1}}`)
	if status != http.StatusOK || out["revoked"] != float64(len(gone)) {
		t.Fatalf("HTTP %d %v", status, out)
	}
	if len(f.active(t, alice)) != 0 || len(f.active(t, bob)) != 0 {
		t.Fatal("passwords of the context survived")
	}
	if !slices.Equal(f.active(t, carol), carols) {
		t.Fatal("another context's password was revoked")
	}
	f.waitRevoked(t, apppass.ReasonContextDeleted, gone)
}

func TestProvisioningPasswordChanged(t *testing.T) {
	const body = `{"type":"user.password_changed","data":{"contextId":1,"userId":5}}`
	t.Run("off", func(t *testing.T) {
		f := newEventFixture(t, eventFixtureOptions{})
		kept := f.addN(t, alice, 2)
		status, out := f.provision(t, body)
		if status != http.StatusOK || out["status"] != "ignored" || out["revoked"] != 0.0 {
			t.Fatalf("HTTP %d %v", status, out)
		}
		if !slices.Equal(f.active(t, alice), kept) {
			t.Fatal("revoked although APPPASS_REVOKE_ON_PASSWORD_CHANGE is off")
		}
	})
	t.Run("on", func(t *testing.T) {
		f := newEventFixture(t, eventFixtureOptions{revokeOnPasswordChange: true})
		gone := f.addN(t, alice, 2)
		kept := f.addN(t, bob, 1)
		status, out := f.provision(t, body)
		if status != http.StatusOK || out["status"] != "done" || out["revoked"] != 2.0 {
			t.Fatalf("HTTP %d %v", status, out)
		}
		if len(f.active(t, alice)) != 0 || !slices.Equal(f.active(t, bob), kept) {
			t.Fatal("wrong passwords revoked")
		}
		f.waitRevoked(t, apppass.ReasonPasswordChanged, gone)
	})
}

// TestProvisioningRefused: every bad request gets a 4xx with a JSON error
// and changes nothing.
func TestProvisioningRefused(t *testing.T) {
	f := newEventFixture(t, eventFixtureOptions{revokeOnPasswordChange: true})
	kept := f.addN(t, alice, 2)
	const good = `{"type":"user.deleted","data":{"contextId":1,"userId":5}}`
	other, _ := stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	now := time.Now()

	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		msg    string
	}{
		{"wrong secret", func() *http.Request { return f.signed(t, good, other, now) }, 401, "no webhook-signature entry matches"},
		{"tampered body", func() *http.Request {
			r := f.signed(t, `{"type":"user.deleted","data":{"contextId":1,"userId":6}}`, f.secret, now)
			r2 := f.signed(t, good, f.secret, now)
			r2.Header = r.Header // bob's signature on alice's body
			return r2
		}, 401, "no webhook-signature entry matches"},
		{"no signature", func() *http.Request {
			r := f.signed(t, good, f.secret, now)
			r.Header.Del("webhook-signature")
			return r
		}, 401, "required"},
		{"stale timestamp", func() *http.Request { return f.signed(t, good, f.secret, now.Add(-6*time.Minute)) }, 401, "5m0s"},
		{"future timestamp", func() *http.Request { return f.signed(t, good, f.secret, now.Add(6*time.Minute)) }, 401, "5m0s"},
		{"unknown type", func() *http.Request {
			return f.signed(t, `{"type":"user.renamed","data":{"contextId":1,"userId":5}}`, f.secret, now)
		}, 400, "unknown type"},
		{"not JSON", func() *http.Request { return f.signed(t, `{"type":"user.deleted",`, f.secret, now) }, 400, "JSON object"},
		{"array", func() *http.Request { return f.signed(t, `[1]`, f.secret, now) }, 400, "JSON object"},
		{"type not a string", func() *http.Request {
			return f.signed(t, `{"type":["user.deleted"],"data":{"contextId":1,"userId":5}}`, f.secret, now)
		}, 400, `"type"`},
		{"no data", func() *http.Request { return f.signed(t, `{"type":"user.deleted"}`, f.secret, now) }, 400, `"data"`},
		{"no userId", func() *http.Request {
			return f.signed(t, `{"type":"user.deleted","data":{"contextId":1}}`, f.secret, now)
		}, 400, "data.userId"},
		{"contextId a string", func() *http.Request {
			return f.signed(t, `{"type":"context.deleted","data":{"contextId":"1"}}`, f.secret, now)
		}, 400, "data.contextId"},
		{"userId a fraction", func() *http.Request {
			return f.signed(t, `{"type":"user.password_changed","data":{"contextId":1,"userId":5.5}}`, f.secret, now)
		}, 400, "data.userId"},
		{"negative contextId", func() *http.Request {
			return f.signed(t, `{"type":"context.deleted","data":{"contextId":-1}}`, f.secret, now)
		}, 400, "data.contextId"},
		{"operator where an id belongs", func() *http.Request {
			return f.signed(t, `{"type":"context.deleted","data":{"contextId":{"$gt":0}}}`, f.secret, now)
		}, 400, "data.contextId"},
		{"too big", func() *http.Request {
			return f.signed(t, `{"type":"user.deleted","pad":"`+strings.Repeat("x", rpc.MaxBodyBytes)+`","data":{"contextId":1,"userId":5}}`, f.secret, now)
		}, 413, "1 MiB"},
	}
	for _, c := range cases {
		status, out := send(t, c.req())
		msg, _ := out["error"].(string)
		if status != c.status || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: HTTP %d %v, want %d with %q", c.name, status, out, c.status, c.msg)
		}
	}
	if !slices.Equal(f.active(t, alice), kept) {
		t.Fatal("a refused request revoked passwords")
	}

	// Replay: the same request (same webhook-id, still fresh) again.
	first := f.signed(t, good, f.secret, now)
	replay := f.signed(t, good, f.secret, now)
	replay.Header = first.Header.Clone()
	if status, out := send(t, first); status != http.StatusOK || out["revoked"] != 2.0 {
		t.Fatalf("first: HTTP %d %v", status, out)
	}
	again := f.addN(t, alice, 1) // the user came back with a new password
	status, out := send(t, replay)
	if msg, _ := out["error"].(string); status != http.StatusConflict || !strings.Contains(msg, "already processed") {
		t.Fatalf("replay: HTTP %d %v", status, out)
	}
	if !slices.Equal(f.active(t, alice), again) {
		t.Fatal("the replay revoked the new password")
	}
	f.waitRevoked(t, apppass.ReasonUserDeleted, kept)

	// Only POST; and a server without a secret does not take any.
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/webhooks/provisioning", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}
	plain := newFixture(t, fixtureOptions{})
	req, _ = http.NewRequest(http.MethodPost, plain.URL+"/webhooks/provisioning", strings.NewReader(good))
	if status, out := send(t, req); status != http.StatusNotFound || out["error"] == nil {
		t.Fatalf("unconfigured: HTTP %d %v", status, out)
	}
}
