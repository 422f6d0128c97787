// Package oidctest is a local OIDC issuer for tests: an HTTP server with
// discovery and a key set the test changes (rotation, outage, bad keys),
// and signing keys to mint its tokens. It stands in for an identity
// provider only where a test needs edge cases a real one will not produce.
package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Issuer serves /.well-known/openid-configuration and its key set.
type Issuer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	keys     []json.RawMessage
	down     bool
	name     string // the issuer discovery names
	JWKSHits atomic.Int32
}

// Start runs an issuer on a loopback port until the test ends.
func Start(t testing.TB) *Issuer {
	ti := &Issuer{}
	ti.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ti.mu.Lock()
		defer ti.mu.Unlock()
		if ti.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			// The endpoints a browser would use; nothing answers them here.
			json.NewEncoder(w).Encode(map[string]string{"issuer": ti.name, "jwks_uri": ti.srv.URL + "/keys",
				"authorization_endpoint": ti.srv.URL + "/authorize", "token_endpoint": ti.srv.URL + "/token"})
		case "/keys":
			ti.JWKSHits.Add(1)
			json.NewEncoder(w).Encode(map[string]any{"keys": ti.keys})
		default:
			http.NotFound(w, r)
		}
	}))
	ti.name = ti.srv.URL
	t.Cleanup(ti.srv.Close)
	return ti
}

// URL is the issuer's URL (its tokens' iss).
func (ti *Issuer) URL() string { return ti.srv.URL }

// SetKeys replaces the key set it serves.
func (ti *Issuer) SetKeys(keys ...json.RawMessage) {
	ti.mu.Lock()
	ti.keys = keys
	ti.mu.Unlock()
}

// SetDown makes every request answer 503, or not.
func (ti *Issuer) SetDown(down bool) {
	ti.mu.Lock()
	ti.down = down
	ti.mu.Unlock()
}

// SetName changes the issuer discovery names.
func (ti *Issuer) SetName(name string) {
	ti.mu.Lock()
	ti.name = name
	ti.mu.Unlock()
}

// Claims are a valid token's claims for user 5 of context 1 at now, with
// extra pairs set (a nil value deletes the claim).
func (ti *Issuer) Claims(now time.Time, extra ...any) map[string]any {
	c := map[string]any{"iss": ti.srv.URL, "aud": "apppass", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
		"cid": 1, "uid": 5, "login": "alice@example.com"}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == nil {
			delete(c, extra[i].(string))
			continue
		}
		c[extra[i].(string)] = extra[i+1]
	}
	return c
}

// Key is a private signing key with its kid and algorithm.
type Key struct {
	KID string
	Alg jose.SignatureAlgorithm
	Key crypto.Signer
}

// NewKey generates a key for alg (RS256, PS256: RSA 2048; ES256: P-256;
// EdDSA: Ed25519).
func NewKey(t testing.TB, kid string, alg jose.SignatureAlgorithm) Key {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.PS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Key{KID: kid, Alg: alg, Key: k}
}

// Public is the key as a key set entry.
func (k Key) Public(t testing.TB) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(jose.JSONWebKey{Key: k.Key.Public(), KeyID: k.KID, Algorithm: string(k.Alg), Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Sign makes a compact JWS of claims.
func (k Key) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.KID != "" {
		opts = opts.WithHeader("kid", k.KID)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: k.Key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}
