package oidc

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/oidctest"
)

// The edge cases against a local issuer: an HTTP server with discovery and
// a key set the test changes (rotation, outage, bad keys). The real
// provider's tokens are tested elsewhere.

var now = time.Unix(1_800_000_000, 0)

// logBuffer is a log the issuer's goroutines write while the test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newIssuer(t *testing.T, ti *oidctest.Issuer, logs *logBuffer, mod ...func(*Config)) *Issuer {
	t.Helper()
	cfg := Config{Issuer: ti.URL(), Audience: "apppass", MinRefetch: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	for _, m := range mod {
		m(&cfg)
	}
	i, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestEveryAlgorithm(t *testing.T) {
	ti := oidctest.Start(t)
	keys := []oidctest.Key{oidctest.NewKey(t, "rsa", jose.RS256), oidctest.NewKey(t, "pss", jose.PS256), oidctest.NewKey(t, "ec", jose.ES256), oidctest.NewKey(t, "ed", jose.EdDSA)}
	var pub []json.RawMessage
	for _, k := range keys {
		pub = append(pub, k.Public(t))
	}
	ti.SetKeys(pub...)
	var logs logBuffer
	i := newIssuer(t, ti, &logs)
	if err := i.refetch(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		u, err := i.Verify(k.Sign(t, ti.Claims(now, "amr", []string{"pwd", "mfa"}, "auth_time", now.Add(-time.Minute).Unix())), now)
		if err != nil || u.User != (apppass.User{ContextID: 1, UserID: 5, Login: "alice@example.com"}) ||
			!u.AuthTime.Equal(now.Add(-time.Minute)) || len(u.AMR) != 2 {
			t.Errorf("%s: %+v, %v", k.Alg, u, err)
		}
	}
	// aud as a list, and app_password in amr keeps its meaning.
	if u, err := i.Verify(keys[0].Sign(t, ti.Claims(now, "aud", []string{"other", "apppass"}, "amr", []string{"app_password"})), now); err != nil || !u.ViaAppPassword {
		t.Errorf("aud list / amr app_password: %+v, %v", u, err)
	}
}

func TestRefused(t *testing.T) {
	ti := oidctest.Start(t)
	rsaKey, ecKey := oidctest.NewKey(t, "rsa", jose.RS256), oidctest.NewKey(t, "ec", jose.ES256)
	ti.SetKeys(rsaKey.Public(t), ecKey.Public(t))
	var logs logBuffer
	i := newIssuer(t, ti, &logs)
	if err := i.refetch(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	good := rsaKey.Sign(t, ti.Claims(now))
	parts := strings.Split(good, ".")
	// HS256 "signed" with the issuer's public key as the secret.
	pubDER, _ := json.Marshal(rsaKey.Key.Public())
	hsSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubDER}, (&jose.SignerOptions{}).WithHeader("kid", "rsa"))
	hs, _ := hsSigner.Sign([]byte(parts[1]))
	hsToken, _ := hs.CompactSerialize()
	// An EC signature presented as RS256 under the EC key's kid.
	ecAsRSA := enc([]byte(`{"alg":"RS256","kid":"ec"}`)) + "." + strings.Split(ecKey.Sign(t, ti.Claims(now)), ".")[1] + "." + strings.Split(ecKey.Sign(t, ti.Claims(now)), ".")[2]
	// The RSA key's kid on an ES256 token.
	ecUnderRSAKid := oidctest.Key{KID: "rsa", Alg: jose.ES256, Key: ecKey.Key}.Sign(t, ti.Claims(now))
	other := oidctest.NewKey(t, "rsa", jose.RS256) // same kid, another key
	for name, token := range map[string]string{
		"alg none":                  enc([]byte(`{"alg":"none","kid":"rsa"}`)) + "." + parts[1] + ".",
		"HS256 with the public key": hsToken,
		"EC signature as RS256":     ecAsRSA,
		"ES256 under an RSA kid":    ecUnderRSAKid,
		"another key, same kid":     other.Sign(t, ti.Claims(now)),
		"wrong audience":            rsaKey.Sign(t, ti.Claims(now, "aud", "someone-else")),
		"audience list without us":  rsaKey.Sign(t, ti.Claims(now, "aud", []string{"a", "b"})),
		"no audience":               rsaKey.Sign(t, ti.Claims(now, "aud", nil)),
		"wrong issuer":              rsaKey.Sign(t, ti.Claims(now, "iss", "https://evil.example")),
		"no issuer":                 rsaKey.Sign(t, ti.Claims(now, "iss", nil)),
		"expired":                   rsaKey.Sign(t, ti.Claims(now, "exp", now.Add(-time.Second).Unix())),
		"nbf ahead":                 rsaKey.Sign(t, ti.Claims(now, "nbf", now.Add(time.Hour).Unix())),
		"iat ahead":                 rsaKey.Sign(t, ti.Claims(now, "iat", now.Add(time.Hour).Unix())),
		"cid a string":              rsaKey.Sign(t, ti.Claims(now, "cid", "1")),
		"no login":                  rsaKey.Sign(t, ti.Claims(now, "login", nil)),
		"tampered":                  parts[0] + "." + enc([]byte(`{"iss":"`+ti.URL()+`","aud":"apppass","exp":9999999999,"cid":1,"uid":0,"login":"root"}`)) + "." + parts[2],
		"two parts":                 parts[0] + "." + parts[1],
		"over 16 KiB":               strings.Repeat("a", apppass.MaxTokenLen+1),
	} {
		if _, err := i.Verify(token, now); err == nil {
			t.Errorf("%s: accepted", name)
		} else if errors.Is(err, ErrNoKeys) {
			t.Errorf("%s: %v, not a refusal", name, err)
		}
	}
	if _, err := i.Verify(rsaKey.Sign(t, ti.Claims(now, "uid", "5")), now); err == nil || !strings.Contains(err.Error(), "uid") {
		t.Errorf("a mistyped claim: %v, want an error naming uid", err)
	}
}

func TestMappedClaims(t *testing.T) {
	ti := oidctest.Start(t)
	k := oidctest.NewKey(t, "k", jose.ES256)
	ti.SetKeys(k.Public(t))
	var logs logBuffer
	i := newIssuer(t, ti, &logs, func(c *Config) {
		c.Claims = apppass.ClaimNames{Context: "ox_context", User: "ox_user", Login: "email"}
	})
	if err := i.refetch(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	u, err := i.Verify(k.Sign(t, ti.Claims(now, "ox_context", 9, "ox_user", 11, "email", "bob@example.com")), now)
	if err != nil || u.User != (apppass.User{ContextID: 9, UserID: 11, Login: "bob@example.com"}) {
		t.Fatalf("%+v, %v", u, err)
	}
	if _, err := i.Verify(k.Sign(t, ti.Claims(now, "ox_context", 9, "email", "bob@example.com")), now); err == nil || !strings.Contains(err.Error(), "ox_user") {
		t.Fatalf("missing mapped claim: %v", err)
	}
}

func TestRotationAndOutage(t *testing.T) {
	ti := oidctest.Start(t)
	ti.SetDown(true)
	old, next := oidctest.NewKey(t, "2026-11", jose.RS256), oidctest.NewKey(t, "2026-12", jose.RS256)
	ti.SetKeys(old.Public(t))
	var logs logBuffer
	i := newIssuer(t, ti, &logs, func(c *Config) { c.MinRefetch = 200 * time.Millisecond; c.RetryMax = 50 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { i.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Down at start: unavailable, said once, however often it is retried.
	_, err := i.Verify(old.Sign(t, ti.Claims(now)), now)
	if apppass.KindOf(err) != apppass.KindUnavailable || !errors.Is(err, ErrNoKeys) {
		t.Fatalf("before any keys: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := strings.Count(logs.String(), "cannot fetch the issuer's keys"); n != 1 {
		t.Fatalf("the outage was logged %d times:\n%s", n, logs.String())
	}
	ti.SetDown(false)
	waitFor(t, func() bool { _, err := i.Verify(old.Sign(t, ti.Claims(now)), now); return err == nil })
	if !strings.Contains(logs.String(), "keys are fetched") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}

	// Rotation: a token under a new kid makes it fetch again.
	ti.SetKeys(old.Public(t), next.Public(t))
	time.Sleep(250 * time.Millisecond) // past MinRefetch
	if _, err := i.Verify(next.Sign(t, ti.Claims(now)), now); err != nil {
		t.Fatalf("the rotated key: %v", err)
	}
	// Unknown kids fetch at most once per MinRefetch.
	hits := ti.JWKSHits.Load()
	stranger := oidctest.NewKey(t, "stranger", jose.RS256)
	for range 20 {
		if _, err := i.Verify(stranger.Sign(t, ti.Claims(now)), now); err == nil {
			t.Fatal("a token of an unknown key verified")
		}
	}
	if n := ti.JWKSHits.Load() - hits; n > 1 {
		t.Errorf("20 tokens of an unknown kid fetched the keys %d times", n)
	}

	// The issuer away: the keys it had keep working.
	ti.SetDown(true)
	time.Sleep(250 * time.Millisecond)
	if _, err := i.Verify(stranger.Sign(t, ti.Claims(now)), now); err == nil || errors.Is(err, ErrNoKeys) {
		t.Fatalf("unknown kid while the issuer is away: %v", err)
	}
	if _, err := i.Verify(next.Sign(t, ti.Claims(now)), now); err != nil {
		t.Fatalf("a known key while the issuer is away: %v", err)
	}
}

func TestBadKeysSkipped(t *testing.T) {
	ti := oidctest.Start(t)
	good := oidctest.NewKey(t, "good", jose.ES256)
	rsaSmall, _ := rsa.GenerateKey(rand.Reader, 1024)
	small, _ := json.Marshal(jose.JSONWebKey{Key: rsaSmall.Public(), KeyID: "small", Use: "sig"})
	private, _ := json.Marshal(jose.JSONWebKey{Key: good.Key, KeyID: "private"})
	enc, _ := json.Marshal(jose.JSONWebKey{Key: oidctest.NewKey(t, "e", jose.ES256).Key.Public(), KeyID: "enc", Use: "enc"})
	hmacKey, _ := json.Marshal(jose.JSONWebKey{Key: []byte(strings.Repeat("s", 32)), KeyID: "hmac"})
	ti.SetKeys(json.RawMessage(`{"kty":"RSA","kid":"broken","n":"!!","e":"AQAB"}`), json.RawMessage(`"not a key"`),
		small, private, enc, hmacKey, good.Public(t))
	var logs logBuffer
	i := newIssuer(t, ti, &logs)
	if err := i.refetch(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Verify(good.Sign(t, ti.Claims(now)), now); err != nil {
		t.Fatalf("the good key: %v", err)
	}
	if n := strings.Count(logs.String(), "skipping a key"); n != 6 {
		t.Errorf("%d keys skipped with a warning, want 6:\n%s", n, logs.String())
	}
	// A set with nothing usable is a failed fetch, which keeps the keys.
	ti.SetKeys(small)
	if err := i.refetch(context.Background(), 0); err == nil {
		t.Error("a set without a usable key was taken")
	}
	if _, err := i.Verify(good.Sign(t, ti.Claims(now)), now); err != nil {
		t.Fatalf("the keys from before: %v", err)
	}
	// Discovery naming another issuer is refused.
	ti.SetName("https://someone-else.example")
	if err := i.refetch(context.Background(), 0); err == nil || !strings.Contains(err.Error(), "names the issuer") {
		t.Errorf("discovery of another issuer: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{
		{Issuer: "", Audience: "a"},
		{Issuer: "login.example.com", Audience: "a"},
		{Issuer: "https://user:pw@login.example.com", Audience: "a"},
		{Issuer: "https://login.example.com?x", Audience: "a"},
		{Issuer: "https://login.example.com"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The settings page's own ID tokens name its client id as aud: accepted
// beside the audience, and alone when only a client id is configured.
// Discovery's endpoints are what the page is told.
func TestClientIDAudienceAndEndpoints(t *testing.T) {
	ti := oidctest.Start(t)
	k := oidctest.NewKey(t, "k", jose.RS256)
	ti.SetKeys(k.Public(t))
	var logs logBuffer
	both := newIssuer(t, ti, &logs, func(c *Config) { c.ClientID = "apppass-page" })
	pageOnly := newIssuer(t, ti, &logs, func(c *Config) { c.Audience, c.ClientID = "", "apppass-page" })
	if _, ok := both.Endpoints(); ok {
		t.Fatal("endpoints known before discovery")
	}
	for _, i := range []*Issuer{both, pageOnly} {
		if err := i.refetch(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := i.Verify(k.Sign(t, ti.Claims(now, "aud", "apppass-page")), now); err != nil {
			t.Errorf("page token: %v", err)
		}
		if _, err := i.Verify(k.Sign(t, ti.Claims(now, "aud", "")), now); err == nil {
			t.Error("empty aud accepted")
		}
		if _, err := i.Verify(k.Sign(t, ti.Claims(now, "aud", "other-client")), now); err == nil {
			t.Error("another client's token accepted")
		}
	}
	if _, err := both.Verify(k.Sign(t, ti.Claims(now)), now); err != nil {
		t.Errorf("audience token beside a client id: %v", err)
	}
	if _, err := pageOnly.Verify(k.Sign(t, ti.Claims(now)), now); err == nil {
		t.Error("aud apppass accepted with only a client id configured")
	}
	e, ok := both.Endpoints()
	if !ok || e.Authorization != ti.URL()+"/authorize" || e.Token != ti.URL()+"/token" {
		t.Fatalf("endpoints %+v, %v", e, ok)
	}
}
