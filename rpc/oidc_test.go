package rpc_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/oidctest"
	"github.com/apppass/apppass/oidc"
	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

// issuerFixture is a fixture that also takes tokens of a local OIDC issuer.
func issuerFixture(t *testing.T) (*Fixture, *oidctest.Issuer, oidctest.Key, *oidc.Issuer) {
	t.Helper()
	f := NewFixture(t, FixtureOptions{})
	ti := oidctest.Start(t)
	key := oidctest.NewKey(t, "k1", jose.ES256)
	ti.SetKeys(key.Public(t))
	issuer, err := oidc.New(oidc.Config{Issuer: ti.URL(), Audience: "apppass", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.Server.Auth.Issuer = issuer
	return f, ti, key, issuer
}

// TestIssuerTokens: an issuer's token is a user token beside HS256 ones,
// and each goes only to its own verifier.
func TestIssuerTokens(t *testing.T) {
	f, ti, key, issuer := issuerFixture(t)
	token := key.Sign(t, ti.Claims(time.Now()))

	// No keys fetched yet (the issuer is away): -32050, HTTP 503.
	ti.SetDown(true)
	status, body := f.Post(t, "Bearer "+token, Request("appPasswords.list", ""))
	if r := ParseResponse(t, body); status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Code != errcode.Unavailable {
		t.Fatalf("before the keys: HTTP %d %s", status, body)
	}
	// HS256 works meanwhile.
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.list", ""))

	ti.SetDown(false)
	ctx, cancel := contextWithCancel(t)
	defer cancel()
	go issuer.Run(ctx)
	waitUntil(t, func() bool {
		status, _ := f.Post(t, "Bearer "+token, Request("appPasswords.list", ""))
		return status == http.StatusOK
	})
	// The issuer's alice is alice: she sees what she added with HS256.
	c := f.Add(t, f.Token(Alice), "mail", "phone")
	if got := f.List(t, token); len(got) != 1 || got[0].UUID != c.UUID {
		t.Fatalf("issuer token lists %+v", got)
	}
	who := Decode[map[string]any](t, OK(t, f.Call(t, token, "appPasswords.whoami", "")))
	if who["login"] != "alice@example.com" || who["role"] != "user" {
		t.Fatalf("whoami %v", who)
	}
	// amr app_password keeps its meaning.
	viaApp := key.Sign(t, ti.Claims(time.Now(), "amr", []string{"app_password"}))
	WantError(t, f.Call(t, viaApp, "appPasswords.list", ""), errcode.Forbidden)

	// Refused, and named: the audience, the expiry, a mistyped claim.
	for name, bad := range map[string]string{
		"wrong audience": key.Sign(t, ti.Claims(time.Now(), "aud", "other")),
		"expired":        key.Sign(t, ti.Claims(time.Now(), "exp", time.Now().Add(-time.Minute).Unix())),
		"mistyped uid":   key.Sign(t, ti.Claims(time.Now(), "uid", "5")),
	} {
		status, body := f.Post(t, "Bearer "+bad, Request("appPasswords.list", ""))
		r := ParseResponse(t, body)
		if status != http.StatusUnauthorized || r.Error == nil || r.Error.Code != errcode.Unauthenticated {
			t.Errorf("%s: HTTP %d %s", name, status, body)
		}
		if name == "mistyped uid" && !strings.Contains(r.Error.Message, "uid") {
			t.Errorf("a mistyped claim is not named: %s", body)
		}
	}
	// Without an issuer configured, its tokens are refused as not HS256.
	f.Server.Auth.Issuer = nil
	status, body = f.Post(t, "Bearer "+token, Request("appPasswords.list", ""))
	if status != http.StatusUnauthorized || !strings.Contains(string(body), "HS256") {
		t.Fatalf("no issuer: HTTP %d %s", status, body)
	}
}

// TestReauthBeforeAdd: with a maximum sign-in age, add asks for a recent
// auth_time (and an amr when required) with data the front end can act
// on; list and remove do not ask; admins are not asked.
func TestReauthBeforeAdd(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	f.Service.Reauth = apppass.ReauthPolicy{MaxAge: 5 * time.Minute}
	now := f.Service.Now() // the service's clock, which auth_time is held against
	mint := func(extra ...any) string {
		c := map[string]any{"cid": Alice.ContextID, "uid": Alice.UserID, "login": Alice.Login, "exp": time.Now().Add(time.Hour).Unix(), "amr": []string{"pwd"}}
		for i := 0; i+1 < len(extra); i += 2 {
			c[extra[i].(string)] = extra[i+1]
		}
		return f.Tokens.MintClaims(c)
	}
	addParams := `{"appScope":"mail","appName":"phone"}`
	reauthData := func(r Response) map[string]any {
		t.Helper()
		WantError(t, r, errcode.Forbidden)
		var d map[string]any
		if err := json.Unmarshal(r.Error.Data, &d); err != nil || d["reauth"] != true {
			t.Fatalf("want data.reauth: %s", r.Raw)
		}
		return d
	}
	for name, token := range map[string]string{
		"no auth_time":  mint(),
		"stale sign-in": mint("auth_time", now.Add(-10*time.Minute).Unix()),
	} {
		d := reauthData(f.Call(t, token, "appPasswords.add", addParams))
		if d["maxAge"] != float64(300) {
			t.Errorf("%s: data %v, want maxAge 300", name, d)
		}
	}
	if got := f.List(t, f.Token(Alice)); len(got) != 0 {
		t.Fatalf("a refused add stored %+v", got)
	}
	fresh := mint("auth_time", now.Add(-time.Minute).Unix())
	c := Decode[Created](t, OK(t, f.Call(t, fresh, "appPasswords.add", addParams)))
	stale := mint("auth_time", now.Add(-time.Hour).Unix())
	if got := f.List(t, stale); len(got) != 1 {
		t.Fatalf("list with a stale sign-in: %+v", got)
	}
	OK(t, f.Call(t, stale, "appPasswords.remove", `{"uuid":"`+c.UUID+`"}`))
	adminAdd := `{"appScope":"mail","appName":"x","user":` + Params(t, Alice) + `}`
	OK(t, f.Call(t, AdminSecret, "appPasswords.add", adminAdd))

	// A required amr.
	f.Service.Reauth = apppass.ReauthPolicy{AMR: "mfa"}
	if d := reauthData(f.Call(t, fresh, "appPasswords.add", addParams)); d["amr"] != "mfa" {
		t.Errorf("data %v, want amr mfa", d)
	}
	OK(t, f.Call(t, mint("amr", []string{"pwd", "mfa"}), "appPasswords.add", addParams))
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
