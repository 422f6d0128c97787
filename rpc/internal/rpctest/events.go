package rpctest

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

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/stdwebhook"
)

// eventFixture is a fixture whose service publishes its events to a real
// NATS through a running relay, with provisioning webhooks (and, if asked,
// outbound webhooks) configured.
type EventFixture struct {
	*Fixture
	NATSURL string
	Store   apppass.Store
	Pub     *nats.Publisher
	Secret  stdwebhook.Secret // the provisioning secret
	MsgSeq  atomic.Int64
}

type EventFixtureOptions struct {
	RevokeOnPasswordChange bool
	Webhooks               *webhook.Config
}

func NewEventFixture(t *testing.T, o EventFixtureOptions) *EventFixture {
	t.Helper()
	f := &EventFixture{Fixture: &Fixture{}, NATSURL: testenv.NATS(t).URL(), Store: testenv.Store(t)}
	ctx := EvCtx(t)
	pub, err := nats.Connect(f.NATSURL, "rpc-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	f.Pub = pub
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	relay := nats.NewRelay(f.Store, pub, testenv.Quiet())
	runCtx, stop := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); relay.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-relayDone })

	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	f.Digester, err = apppass.NewDigester(RandomBytes(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	f.TokenKey = RandomBytes(t, 32)
	if f.Tokens, err = apppass.NewUserTokens(f.TokenKey); err != nil {
		t.Fatal(err)
	}
	f.Service = &apppass.Service{Store: f.Store, Apps: apps, Digester: f.Digester, Events: relay, MaxPerUser: 200}
	f.Secret, _ = stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	f.Server = &rpc.Server{
		Service: f.Service,
		Auth: &rpc.Callers{Tokens: f.Tokens, ServiceKeys: []apppass.ServiceKey{
			{Name: "gw", Role: apppass.RoleGateway, Secret: GatewaySecret},
			{Name: "adm", Role: apppass.RoleAdmin, Secret: AdminSecret},
		}},
		Ready:  func(ctx context.Context) error { return f.Store.Ping(ctx) },
		Logger: testenv.Quiet(),
		Provisioning: &rpc.Provisioning{Secrets: []stdwebhook.Secret{f.Secret}, IDs: f.Store,
			RevokeOnPasswordChange: o.RevokeOnPasswordChange},
	}
	if o.Webhooks != nil {
		cfg := *o.Webhooks
		cfg.Logger = testenv.Quiet()
		cfg.PollInterval = 20 * time.Millisecond
		wh, err := webhook.New(f.Store, pub, cfg)
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

func EvCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func EvWait(t *testing.T, what string, cond func() bool) {
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
func (f *EventFixture) Signed(t *testing.T, body string, secret stdwebhook.Secret, at time.Time) *http.Request {
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
func Send(t *testing.T, req *http.Request) (int, map[string]any) {
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

func (f *EventFixture) Provision(t *testing.T, body string) (int, map[string]any) {
	t.Helper()
	return Send(t, f.Signed(t, body, f.Secret, time.Now()))
}

// addN gives u n app passwords and returns their uuids, sorted.
func (f *EventFixture) AddN(t *testing.T, u apppass.User, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		c, err := f.Service.Add(EvCtx(t), u, apppass.AddRequest{AppScope: "mail", AppName: "p" + string(rune('a'+i%26))})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.UUID)
	}
	slices.Sort(out)
	return out
}

// active returns the uuids of u's active passwords, sorted.
func (f *EventFixture) Active(t *testing.T, u apppass.User) []string {
	t.Helper()
	ps, err := f.Service.List(EvCtx(t), u)
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
func (f *EventFixture) RevokedInStream(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range testenv.StreamMessages(t, f.NATSURL) {
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
func (f *EventFixture) WaitRevoked(t *testing.T, reason string, uuids []string) {
	t.Helper()
	EvWait(t, "revoked events in the stream", func() bool { return len(f.RevokedInStream(t)) >= len(uuids) })
	got := f.RevokedInStream(t)
	if len(got) != len(uuids) {
		t.Fatalf("%d revoked events in the stream, want %d", len(got), len(uuids))
	}
	for _, u := range uuids {
		if r, ok := got[u]; !ok || r != reason {
			t.Fatalf("revoked event for %s: reason %q (present %v), want %q", u, r, ok, reason)
		}
	}
}
