package provisioning_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/rpc/jsonrpc"
	"github.com/apppass/apppass/stdwebhook"
)

func TestProvisioningUserDeleted(t *testing.T) {
	f := NewEventFixture(t, EventFixtureOptions{})
	gone := f.AddN(t, Alice, 3)
	bobs := f.AddN(t, Bob, 1)
	carols := f.AddN(t, Carol, 1) // alice's user id in another context

	status, out := f.Provision(t, `{"type":"user.deleted","timestamp":"2026-01-02T03:04:05Z","data":{"contextId":1,"userId":5}}`)
	if status != http.StatusOK || out["status"] != "done" || out["revoked"] != 3.0 || out["type"] != "user.deleted" {
		t.Fatalf("HTTP %d %v", status, out)
	}
	if got := f.Active(t, Alice); len(got) != 0 {
		t.Fatalf("alice still has %v", got)
	}
	if !slices.Equal(f.Active(t, Bob), bobs) || !slices.Equal(f.Active(t, Carol), carols) {
		t.Fatal("another user's passwords were revoked")
	}
	f.WaitRevoked(t, apppass.ReasonUserDeleted, gone)
}

func TestProvisioningContextDeleted(t *testing.T) {
	f := NewEventFixture(t, EventFixtureOptions{})
	// (More than one batch of them: TestRemoveContext in the root package.)
	gone := append(f.AddN(t, Alice, 3), f.AddN(t, Bob, 2)...)
	slices.Sort(gone)
	carols := f.AddN(t, Carol, 1)

	status, out := f.Provision(t, `{"type":"context.deleted","data":{"contextId":1}}`)
	if status != http.StatusOK || out["revoked"] != float64(len(gone)) {
		t.Fatalf("HTTP %d %v", status, out)
	}
	if len(f.Active(t, Alice)) != 0 || len(f.Active(t, Bob)) != 0 {
		t.Fatal("passwords of the context survived")
	}
	if !slices.Equal(f.Active(t, Carol), carols) {
		t.Fatal("another context's password was revoked")
	}
	f.WaitRevoked(t, apppass.ReasonContextDeleted, gone)
}

func TestProvisioningPasswordChanged(t *testing.T) {
	const body = `{"type":"user.password_changed","data":{"contextId":1,"userId":5}}`
	t.Run("off", func(t *testing.T) {
		f := NewEventFixture(t, EventFixtureOptions{})
		kept := f.AddN(t, Alice, 2)
		status, out := f.Provision(t, body)
		if status != http.StatusOK || out["status"] != "ignored" || out["revoked"] != 0.0 {
			t.Fatalf("HTTP %d %v", status, out)
		}
		if !slices.Equal(f.Active(t, Alice), kept) {
			t.Fatal("revoked although APPPASS_REVOKE_ON_PASSWORD_CHANGE is off")
		}
	})
	t.Run("on", func(t *testing.T) {
		f := NewEventFixture(t, EventFixtureOptions{RevokeOnPasswordChange: true})
		gone := f.AddN(t, Alice, 2)
		kept := f.AddN(t, Bob, 1)
		status, out := f.Provision(t, body)
		if status != http.StatusOK || out["status"] != "done" || out["revoked"] != 2.0 {
			t.Fatalf("HTTP %d %v", status, out)
		}
		if len(f.Active(t, Alice)) != 0 || !slices.Equal(f.Active(t, Bob), kept) {
			t.Fatal("wrong passwords revoked")
		}
		f.WaitRevoked(t, apppass.ReasonPasswordChanged, gone)
	})
}

// TestProvisioningRefused: every bad request gets a 4xx with a JSON error
// and changes nothing.
func TestProvisioningRefused(t *testing.T) {
	f := NewEventFixture(t, EventFixtureOptions{RevokeOnPasswordChange: true})
	kept := f.AddN(t, Alice, 2)
	const good = `{"type":"user.deleted","data":{"contextId":1,"userId":5}}`
	other, _ := stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	now := time.Now()

	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		msg    string
	}{
		{"wrong secret", func() *http.Request { return f.Signed(t, good, other, now) }, 401, "no webhook-signature entry matches"},
		{"tampered body", func() *http.Request {
			r := f.Signed(t, `{"type":"user.deleted","data":{"contextId":1,"userId":6}}`, f.Secret, now)
			r2 := f.Signed(t, good, f.Secret, now)
			r2.Header = r.Header // bob's signature on alice's body
			return r2
		}, 401, "no webhook-signature entry matches"},
		{"no signature", func() *http.Request {
			r := f.Signed(t, good, f.Secret, now)
			r.Header.Del("webhook-signature")
			return r
		}, 401, "required"},
		{"stale timestamp", func() *http.Request { return f.Signed(t, good, f.Secret, now.Add(-6*time.Minute)) }, 401, "5m0s"},
		{"future timestamp", func() *http.Request { return f.Signed(t, good, f.Secret, now.Add(6*time.Minute)) }, 401, "5m0s"},
		{"unknown type", func() *http.Request {
			return f.Signed(t, `{"type":"user.renamed","data":{"contextId":1,"userId":5}}`, f.Secret, now)
		}, 400, "unknown type"},
		{"not JSON", func() *http.Request { return f.Signed(t, `{"type":"user.deleted",`, f.Secret, now) }, 400, "JSON object"},
		{"array", func() *http.Request { return f.Signed(t, `[1]`, f.Secret, now) }, 400, "JSON object"},
		{"type not a string", func() *http.Request {
			return f.Signed(t, `{"type":["user.deleted"],"data":{"contextId":1,"userId":5}}`, f.Secret, now)
		}, 400, `"type"`},
		{"no data", func() *http.Request { return f.Signed(t, `{"type":"user.deleted"}`, f.Secret, now) }, 400, `"data"`},
		{"no userId", func() *http.Request {
			return f.Signed(t, `{"type":"user.deleted","data":{"contextId":1}}`, f.Secret, now)
		}, 400, "data.userId"},
		{"contextId a string", func() *http.Request {
			return f.Signed(t, `{"type":"context.deleted","data":{"contextId":"1"}}`, f.Secret, now)
		}, 400, "data.contextId"},
		{"userId a fraction", func() *http.Request {
			return f.Signed(t, `{"type":"user.password_changed","data":{"contextId":1,"userId":5.5}}`, f.Secret, now)
		}, 400, "data.userId"},
		{"negative contextId", func() *http.Request {
			return f.Signed(t, `{"type":"context.deleted","data":{"contextId":-1}}`, f.Secret, now)
		}, 400, "data.contextId"},
		{"operator where an id belongs", func() *http.Request {
			return f.Signed(t, `{"type":"context.deleted","data":{"contextId":{"$gt":0}}}`, f.Secret, now)
		}, 400, "data.contextId"},
		{"too big", func() *http.Request {
			return f.Signed(t, `{"type":"user.deleted","pad":"`+strings.Repeat("x", jsonrpc.MaxBodyBytes)+`","data":{"contextId":1,"userId":5}}`, f.Secret, now)
		}, 413, "1 MiB"},
	}
	for _, c := range cases {
		status, out := Send(t, c.req())
		msg, _ := out["error"].(string)
		if status != c.status || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: HTTP %d %v, want %d with %q", c.name, status, out, c.status, c.msg)
		}
	}
	if !slices.Equal(f.Active(t, Alice), kept) {
		t.Fatal("a refused request revoked passwords")
	}

	// Replay: the same request (same webhook-id, still fresh) again.
	first := f.Signed(t, good, f.Secret, now)
	replay := f.Signed(t, good, f.Secret, now)
	replay.Header = first.Header.Clone()
	if status, out := Send(t, first); status != http.StatusOK || out["revoked"] != 2.0 {
		t.Fatalf("first: HTTP %d %v", status, out)
	}
	again := f.AddN(t, Alice, 1) // the user came back with a new password
	status, out := Send(t, replay)
	if msg, _ := out["error"].(string); status != http.StatusConflict || !strings.Contains(msg, "already processed") {
		t.Fatalf("replay: HTTP %d %v", status, out)
	}
	if !slices.Equal(f.Active(t, Alice), again) {
		t.Fatal("the replay revoked the new password")
	}
	f.WaitRevoked(t, apppass.ReasonUserDeleted, kept)

	// Only POST; and a server without a secret does not take any.
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/webhooks/provisioning", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}
	plain := NewFixture(t, FixtureOptions{})
	req, _ = http.NewRequest(http.MethodPost, plain.URL+"/webhooks/provisioning", strings.NewReader(good))
	if status, out := Send(t, req); status != http.StatusNotFound || out["error"] == nil {
		t.Fatalf("unconfigured: HTTP %d %v", status, out)
	}
}
