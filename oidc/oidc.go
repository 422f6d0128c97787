// Package oidc verifies user tokens of an OpenID Connect issuer (Keycloak
// and the like): it finds the issuer's keys through discovery
// (<issuer>/.well-known/openid-configuration → jwks_uri), keeps them,
// fetches them again for a key id it does not know (at most once per
// MinRefetch) and keeps using the keys it has while the issuer is away.
// Signatures are go-jose's; the claims are checked by apppass.UserClaims
// after iss and aud.
package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/apppass/apppass"
)

// Algorithms are the signature algorithms accepted from an issuer. HS256
// is not among them: an issuer's keys are public, and a token "signed"
// with a public key as an HMAC secret must not verify.
var Algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA}

// Config configures an Issuer.
type Config struct {
	// Issuer is the issuer's URL, exactly as its tokens' iss claim says.
	Issuer string
	// Audience must be in every token's aud claim, unless it names
	// ClientID: the settings page's own client (APPPASS_OIDC_CLIENT_ID)
	// signs in with the issuer and sends its ID token, whose aud is the
	// client id.
	Audience, ClientID string
	// Claims name the user's context, user id and login (default cid,
	// uid, login).
	Claims apppass.ClaimNames
	// HTTP fetches discovery and keys (default: a 10 s timeout).
	HTTP *http.Client
	// MinRefetch is the least time between two fetches of the keys for a
	// key id that is not known (default 30 s): unknown key ids cannot
	// make apppassd hammer the issuer.
	MinRefetch time.Duration
	// Refresh is how often the keys are fetched anyway (default 1 h), and
	// RetryMax the longest wait between attempts while none could be
	// fetched yet (default 1 min).
	Refresh, RetryMax time.Duration
	Logger            *slog.Logger
}

// Issuer verifies one issuer's tokens.
type Issuer struct {
	cfg Config

	mu        sync.RWMutex
	keys      []jose.JSONWebKey
	endpoints Endpoints // from the last discovery that worked
	fetched   bool      // keys were fetched at least once
	lastFetch time.Time // the last attempt

	fetch   sync.Mutex // one fetch at a time
	failing bool       // the last fetch failed (under fetch)
}

// ErrNoKeys: the issuer's keys could not be fetched yet (-32050: the
// token may be fine, the check cannot be made).
var ErrNoKeys = errors.New("the OIDC issuer's keys have not been fetched yet")

// maxDocument bounds a discovery document or key set.
const maxDocument = 1 << 20

// New checks cfg. Run fetches the keys.
func New(cfg Config) (*Issuer, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an issuer URL like https://login.example.com/realms/ox", cfg.Issuer)
	}
	if cfg.Audience == "" && cfg.ClientID == "" {
		return nil, errors.New("an audience or a client id is required with an issuer")
	}
	if cfg.Claims == (apppass.ClaimNames{}) {
		cfg.Claims = apppass.DefaultClaimNames
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.MinRefetch <= 0 {
		cfg.MinRefetch = 30 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Hour
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("issuer", cfg.Issuer)
	return &Issuer{cfg: cfg}, nil
}

// Run fetches the keys now, again with back-off until that works (saying
// once that it does not), and then every Refresh, until ctx is done.
func (i *Issuer) Run(ctx context.Context) {
	wait := time.Second
	for {
		err := i.refetch(ctx, 0)
		next := i.cfg.Refresh
		if err != nil {
			next, wait = wait, min(2*wait, i.cfg.RetryMax)
		} else {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// refetch reads discovery and the key set, and replaces the keys if that
// worked; unless the last attempt is more recent than within (callers
// that waited for another's fetch take its result). A change between
// working and failing is logged, once.
func (i *Issuer) refetch(ctx context.Context, within time.Duration) error {
	i.fetch.Lock()
	defer i.fetch.Unlock()
	i.mu.Lock()
	if within > 0 && time.Since(i.lastFetch) < within {
		i.mu.Unlock()
		return nil
	}
	i.lastFetch = time.Now()
	i.mu.Unlock()
	err := i.fetchKeys(ctx)
	switch {
	case err == nil && i.failing:
		i.cfg.Logger.Info("oidc: the issuer's keys are fetched; issuer tokens are checked again")
		i.failing = false
	case err != nil && !i.failing && ctx.Err() == nil:
		i.cfg.Logger.Warn("oidc: cannot fetch the issuer's keys; retrying (tokens of the issuer are checked with the keys fetched before, or answer -32050 until there are some)", "err", err)
		i.failing = true
	}
	return err
}

// fetchKeys reads discovery and the key set, and replaces the keys if
// that worked.
func (i *Issuer) fetchKeys(ctx context.Context) error {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
		Endpoints
	}
	if err := i.getJSON(ctx, strings.TrimSuffix(i.cfg.Issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if disc.Issuer != i.cfg.Issuer {
		return fmt.Errorf("discovery names the issuer %q, not %q", disc.Issuer, i.cfg.Issuer)
	}
	if !isWebURL(disc.JWKSURI) {
		return fmt.Errorf("discovery's jwks_uri %q is not a URL", disc.JWKSURI)
	}
	// The endpoints only matter to the settings page; an issuer without
	// them still verifies tokens.
	if !isWebURL(disc.Authorization) || !isWebURL(disc.Token) {
		disc.Endpoints = Endpoints{}
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := i.getJSON(ctx, disc.JWKSURI, &set); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	var keys []jose.JSONWebKey
	for n, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			i.cfg.Logger.Warn("oidc: skipping a key of the issuer's key set that cannot be read", "index", n, "err", err)
			continue
		}
		if why := unusable(k); why != "" {
			i.cfg.Logger.Warn("oidc: skipping a key of the issuer's key set", "index", n, "kid", k.KeyID, "why", why)
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return errors.New("the issuer's key set holds no usable signing key")
	}
	i.mu.Lock()
	i.keys, i.fetched, i.endpoints = keys, true, disc.Endpoints
	i.mu.Unlock()
	return nil
}

// Endpoints are where a browser signs a user in with the issuer.
type Endpoints struct {
	Authorization string `json:"authorization_endpoint"`
	Token         string `json:"token_endpoint"`
}

// Endpoints returns the issuer's endpoints from its last discovery; false
// before one worked (or when the issuer names none).
func (i *Issuer) Endpoints() (Endpoints, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.endpoints, i.endpoints.Token != ""
}

func isWebURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil && u.Fragment == ""
}

// unusable says why a key may not check signatures, or "".
func unusable(k jose.JSONWebKey) string {
	switch {
	case !k.Valid():
		return "invalid key"
	case !k.IsPublic():
		return "a private or symmetric key"
	case k.Use != "" && k.Use != "sig":
		return "use is " + k.Use
	case k.Algorithm != "" && !slices.Contains(Algorithms, jose.SignatureAlgorithm(k.Algorithm)):
		return "algorithm " + k.Algorithm + " is not accepted"
	}
	if r, ok := k.Key.(*rsa.PublicKey); ok && r.N.BitLen() < 2048 {
		return "RSA key shorter than 2048 bits"
	}
	return ""
}

func (i *Issuer) getJSON(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := i.cfg.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return err
	}
	if len(body) > maxDocument {
		return fmt.Errorf("%s answered more than %d bytes", url, maxDocument)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("%s: %v", url, err)
	}
	return nil
}

// Verify checks a token of the issuer: its algorithm and signature with
// a key of the issuer whose type fits the algorithm, iss, aud, and the
// claims of apppass.UserClaims. ErrNoKeys (wrapped) when no keys could be
// fetched yet.
func (i *Issuer) Verify(token string, now time.Time) (apppass.TokenUser, error) {
	if len(token) > apppass.MaxTokenLen {
		return apppass.TokenUser{}, fmt.Errorf("user token is longer than %d bytes", apppass.MaxTokenLen)
	}
	jws, err := jose.ParseSignedCompact(token, Algorithms)
	if err != nil {
		return apppass.TokenUser{}, fmt.Errorf("malformed issuer token or an algorithm other than RS256, PS256, ES256, EdDSA: %v", err)
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)
	candidates, err := i.keysFor(h.KeyID, alg)
	if err != nil {
		return apppass.TokenUser{}, err
	}
	var payload []byte
	for _, k := range candidates {
		if payload, err = jws.Verify(k.Key); err == nil {
			break
		}
	}
	if payload == nil {
		return apppass.TokenUser{}, errors.New("issuer token signature does not verify")
	}
	var std struct {
		Iss *string         `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(payload, &std); err != nil {
		return apppass.TokenUser{}, errors.New("issuer token claims are not a JSON object")
	}
	if std.Iss == nil || *std.Iss != i.cfg.Issuer {
		return apppass.TokenUser{}, errors.New("issuer token claim iss is not the configured issuer")
	}
	if !audienceHas(std.Aud, i.cfg.Audience) && !audienceHas(std.Aud, i.cfg.ClientID) {
		return apppass.TokenUser{}, errors.New("issuer token claim aud does not name this service")
	}
	return apppass.UserClaims(payload, now, i.cfg.Claims)
}

// audienceHas reads aud, a string or a list of strings; nothing has "".
func audienceHas(raw json.RawMessage, want string) bool {
	if want == "" {
		return false
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && slices.Contains(many, want)
}

// keysFor returns the keys that may check a signature of alg by key id
// kid, fetching the key set again (at most once per MinRefetch) when kid
// is not known.
func (i *Issuer) keysFor(kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, error) {
	found, fetched, last := i.match(kid, alg)
	if len(found) == 0 && kid != "" && time.Since(last) >= i.cfg.MinRefetch {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := i.refetch(ctx, i.cfg.MinRefetch)
		cancel()
		if err != nil {
			i.cfg.Logger.Debug("oidc: fetching the keys for an unknown key id failed", "kid", kid, "err", err)
		}
		found, fetched, _ = i.match(kid, alg)
	}
	switch {
	case !fetched:
		return nil, apppass.Unavailable("the OIDC issuer", ErrNoKeys)
	case len(found) == 0 && kid != "":
		return nil, fmt.Errorf("issuer token key id %q is not among the issuer's %s keys", kid, alg)
	case len(found) == 0:
		return nil, fmt.Errorf("the issuer has no %s key", alg)
	}
	return found, nil
}

// match returns the known keys with key id kid (any key, when the token
// names none) whose type fits alg.
func (i *Issuer) match(kid string, alg jose.SignatureAlgorithm) (found []jose.JSONWebKey, fetched bool, last time.Time) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	for _, k := range i.keys {
		if (kid == "" || k.KeyID == kid) && fits(k, alg) {
			found = append(found, k)
		}
	}
	return found, i.fetched, i.lastFetch
}

// fits reports whether key k may check a signature of alg: the key type
// belongs to the algorithm's family, and a key that names its algorithm
// names this one. An RSA key never checks an EC or HMAC signature, and so
// on.
func fits(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch alg {
	case jose.RS256, jose.PS256:
		_, ok := k.Key.(*rsa.PublicKey)
		return ok
	case jose.ES256:
		e, ok := k.Key.(*ecdsa.PublicKey)
		return ok && e.Curve == elliptic.P256()
	case jose.EdDSA:
		_, ok := k.Key.(ed25519.PublicKey)
		return ok
	}
	return false
}
