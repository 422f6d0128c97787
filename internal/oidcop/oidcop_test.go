package oidcop

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	clientID = "app"
	scopes   = "openid profile email offline_access"
	lifetime = 30 * time.Second
)

// env is one provider plus a stand-in app on another loopback port, whose
// URL is the redirect URI and the origin of the browser's token requests.
type env struct {
	t        *testing.T
	p        *Provider
	origin   string // the app, http://127.0.0.1:PORT
	redirect string
	disco    map[string]any
}

func newEnv(t *testing.T) *env {
	app := httptest.NewServer(http.NotFoundHandler()) // only the redirect target; never reached
	t.Cleanup(app.Close)
	e := &env{t: t, origin: app.URL, redirect: app.URL + "/callback"}
	e.p = Start(t, Config{
		ClientID:     clientID,
		RedirectURIs: []string{e.redirect},
		Users: []User{{
			Username: "anna",
			Password: "secret",
			Claims:   map[string]any{"ox_context": 7, "ox_user": 42, "email": "anna@example.com"},
		}},
		IDTokenLifetime: lifetime,
	})
	resp, err := http.Get(e.p.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	e.disco = decode(t, resp)
	return e
}

func (e *env) endpoint(name string) string {
	s, _ := e.disco[name].(string)
	if s == "" {
		e.t.Fatalf("discovery has no %s", name)
	}
	return s
}

// browser is an http.Client with cookies that stops at the redirect URI,
// where the app would take over.
func (e *env) browser() *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), e.redirect) {
				return http.ErrUseLastResponse
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
}

type attempt struct {
	verifier, state, nonce string
	resp                   *http.Response // where the browser ended up
}

// authorize starts the code flow with PKCE S256; extra overrides parameters.
func (e *env) authorize(b *http.Client, extra url.Values) *attempt {
	e.t.Helper()
	a := &attempt{verifier: rand.Text() + rand.Text(), state: rand.Text(), nonce: rand.Text()}
	sum := sha256.Sum256([]byte(a.verifier))
	q := url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {e.redirect},
		"response_type":         {"code"},
		"response_mode":         {"query"},
		"scope":                 {scopes},
		"state":                 {a.state},
		"nonce":                 {a.nonce},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		q[k] = v
	}
	resp, err := b.Get(e.endpoint("authorization_endpoint") + "?" + q.Encode())
	if err != nil {
		e.t.Fatal(err)
	}
	a.resp = resp
	return a
}

var hiddenID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// loginForm asserts resp is the login page and returns its auth request id.
func (e *env) loginForm(resp *http.Response) (id, page string) {
	e.t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page = string(body)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != strings.TrimPrefix(e.p.Issuer, "http://") || resp.Request.URL.Path != "/login" {
		e.t.Fatalf("want the login page, got %d at %s: %.300s", resp.StatusCode, resp.Request.URL, page)
	}
	for _, sel := range []string{`id="login-form"`, `id="username"`, `id="password"`, `id="submit"`, `id="error"`} {
		if !strings.Contains(page, sel) {
			e.t.Fatalf("login page lacks %s", sel)
		}
	}
	m := hiddenID.FindStringSubmatch(page)
	if m == nil {
		e.t.Fatal("login page has no auth request id")
	}
	return m[1], page
}

func (e *env) submit(b *http.Client, id, user, pass string) *http.Response {
	e.t.Helper()
	resp, err := b.PostForm(e.p.Issuer+"/login", url.Values{"id": {id}, "username": {user}, "password": {pass}})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// redirected returns the query the browser was sent to the redirect URI with.
func (e *env) redirected(resp *http.Response) url.Values {
	e.t.Helper()
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), e.redirect+"?") {
		e.t.Fatalf("want a redirect to %s, got %d at %s, Location %v", e.redirect, resp.StatusCode, resp.Request.URL, loc)
	}
	return loc.Query()
}

func (e *env) code(a *attempt, resp *http.Response) string {
	e.t.Helper()
	q := e.redirected(resp)
	if q.Get("error") != "" || q.Get("code") == "" || q.Get("state") != a.state {
		e.t.Fatalf("bad authorization response: %v (state sent %s)", q, a.state)
	}
	return q.Get("code")
}

// token posts to the token endpoint as a browser app would: no secret,
// client_id in the form, Origin of the app.
func (e *env) token(form url.Values) (*http.Response, map[string]any) {
	e.t.Helper()
	form.Set("client_id", clientID)
	req, _ := http.NewRequest(http.MethodPost, e.endpoint("token_endpoint"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.origin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, decode(e.t, resp)
}

func (e *env) exchange(code, verifier string) (int, map[string]any) {
	e.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {e.redirect}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	resp, body := e.token(form)
	return resp.StatusCode, body
}

// mustTokens exchanges the code with the right verifier and returns the token response.
func (e *env) mustTokens(code string, a *attempt) map[string]any {
	e.t.Helper()
	status, tok := e.exchange(code, a.verifier)
	if status != http.StatusOK {
		e.t.Fatalf("token exchange: %d %v", status, tok)
	}
	return tok
}

// idToken checks the signature against the JWKS and returns the claims,
// numbers as json.Number so their JSON type shows.
func (e *env) idToken(tok map[string]any) map[string]any {
	e.t.Helper()
	raw, _ := tok["id_token"].(string)
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		e.t.Fatalf("id_token: %v", err)
	}
	kid := jws.Signatures[0].Header.KeyID
	if kid == "" {
		e.t.Fatal("id_token has no kid")
	}
	resp, err := http.Get(e.endpoint("jwks_uri"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		e.t.Fatal(err)
	}
	keys := set.Key(kid)
	if len(keys) != 1 {
		e.t.Fatalf("JWKS has %d keys for kid %s", len(keys), kid)
	}
	if k, ok := keys[0].Key.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		e.t.Fatalf("want a 2048-bit RSA key, got %T", keys[0].Key)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		e.t.Fatalf("id_token signature: %v", err)
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var claims map[string]any
	if err := d.Decode(&claims); err != nil {
		e.t.Fatal(err)
	}
	return claims
}

func unix(t *testing.T, claims map[string]any, name string) int64 {
	t.Helper()
	n, ok := claims[name].(json.Number)
	if !ok {
		t.Fatalf("%s is %T %v, want a number", name, claims[name], claims[name])
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// checkClaims checks everything point 4 asks of an ID token for anna.
func (e *env) checkClaims(claims map[string]any, nonce string, authTime int64) {
	t := e.t
	t.Helper()
	if claims["iss"] != e.p.Issuer || claims["sub"] != "anna" {
		t.Errorf("iss %v sub %v", claims["iss"], claims["sub"])
	}
	if aud, _ := claims["aud"].([]any); !slices.Contains(aud, any(clientID)) {
		t.Errorf("aud %v lacks %s", claims["aud"], clientID)
	}
	if nonce != "" && claims["nonce"] != nonce {
		t.Errorf("nonce %v, want %s", claims["nonce"], nonce)
	}
	iat, exp := unix(t, claims, "iat"), unix(t, claims, "exp")
	if exp-iat != int64(lifetime/time.Second) || time.Since(time.Unix(iat, 0)) > 5*time.Second {
		t.Errorf("iat %d exp %d, want exp = iat + %v, iat now", iat, exp, lifetime)
	}
	if got := unix(t, claims, "auth_time"); got != authTime {
		t.Errorf("auth_time %d, want %d", got, authTime)
	}
	if amr, _ := claims["amr"].([]any); len(amr) != 1 || amr[0] != "pwd" {
		t.Errorf("amr %v, want [pwd]", claims["amr"])
	}
	if claims["ox_context"] != json.Number("7") || claims["ox_user"] != json.Number("42") || claims["email"] != "anna@example.com" {
		t.Errorf("extra claims: ox_context %#v ox_user %#v email %#v", claims["ox_context"], claims["ox_user"], claims["email"])
	}
}

func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %v", resp.Request.Method, resp.Request.URL, resp.StatusCode, err)
	}
	return m
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t)
	if !strings.HasPrefix(e.p.Issuer, "http://127.0.0.1:") || e.disco["issuer"] != e.p.Issuer {
		t.Fatalf("issuer %q, discovery says %v", e.p.Issuer, e.disco["issuer"])
	}
	for _, name := range []string{"authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"} {
		if !strings.HasPrefix(e.endpoint(name), e.p.Issuer+"/") {
			t.Errorf("%s = %s", name, e.endpoint(name))
		}
	}
	has := func(name, want string) {
		list, _ := e.disco[name].([]any)
		if !slices.Contains(list, any(want)) {
			t.Errorf("%s = %v, want %s in it", name, e.disco[name], want)
		}
	}
	has("id_token_signing_alg_values_supported", "RS256")
	has("code_challenge_methods_supported", "S256")
	has("token_endpoint_auth_methods_supported", "none")
	has("grant_types_supported", "refresh_token")
}

// TestFlow walks one browser through points 2 to 6 in order, since each
// step depends on the session the one before left.
func TestFlow(t *testing.T) {
	e := newEnv(t)
	b := e.browser()

	// prompt=none without a session must not show a page.
	a := e.authorize(b, url.Values{"prompt": {"none"}})
	if q := e.redirected(a.resp); q.Get("error") != "login_required" || q.Get("state") != a.state {
		t.Fatalf("prompt=none without session: %v", q)
	}

	// 3: the login page, a wrong password, then the right one.
	a = e.authorize(b, nil)
	id, _ := e.loginForm(a.resp)
	again, page := e.loginForm(e.submit(b, id, "anna", "wrong"))
	if again != id || !strings.Contains(page, "wrong username or password") || e.p.Logins() != 0 {
		t.Fatalf("wrong password: id %s→%s, logins %d, page %.300s", id, again, e.p.Logins(), page)
	}
	before := time.Now().Unix()
	code := e.code(a, e.submit(b, id, "anna", "secret"))
	after := time.Now().Unix()
	if e.p.Logins() != 1 {
		t.Fatalf("logins %d, want 1", e.p.Logins())
	}

	// 2: PKCE is enforced at the token endpoint.
	if status, body := e.exchange(code, "not-the-verifier-"+rand.Text()+rand.Text()); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("wrong code_verifier: %d %v", status, body)
	}
	if status, body := e.exchange(code, ""); status != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Errorf("missing code_verifier: %d %v", status, body)
	}

	// 4: the ID token.
	tok := e.mustTokens(code, a)
	if tok["access_token"] == "" || tok["refresh_token"] == nil || tok["token_type"] != "Bearer" {
		t.Fatalf("token response %v", tok)
	}
	claims := e.idToken(tok)
	t.Logf("ID token claims: %v", claims)
	authTime := unix(t, claims, "auth_time")
	if authTime < before || authTime > after {
		t.Fatalf("auth_time %d not within the login [%d, %d]", authTime, before, after)
	}
	e.checkClaims(claims, a.nonce, authTime)
	if status, _ := e.exchange(code, a.verifier); status != http.StatusBadRequest {
		t.Errorf("second use of a code: %d, want 400", status)
	}

	// Userinfo has the extra claims too.
	req, _ := http.NewRequest(http.MethodGet, e.endpoint("userinfo_endpoint"), nil)
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if info := decode(t, resp); info["sub"] != "anna" || info["ox_context"] != float64(7) {
		t.Errorf("userinfo %v", info)
	}

	// 5: the session answers silently, also to prompt=none and a max_age not
	// yet passed.
	for _, extra := range []url.Values{nil, {"prompt": {"none"}}, {"max_age": {"60"}}} {
		a := e.authorize(b, extra)
		c := e.idToken(e.mustTokens(e.code(a, a.resp), a))
		if e.p.Logins() != 1 {
			t.Fatalf("%v: login page shown again", extra)
		}
		e.checkClaims(c, a.nonce, authTime)
	}
	// max_age passed, then prompt=login: the form again, a new auth_time.
	for _, extra := range []url.Values{{"max_age": {"1"}}, {"prompt": {"login"}}} {
		time.Sleep(1100 * time.Millisecond) // auth_time has a resolution of seconds
		logins := e.p.Logins()
		a := e.authorize(b, extra)
		id, _ := e.loginForm(a.resp)
		c := e.idToken(e.mustTokens(e.code(a, e.submit(b, id, "anna", "secret")), a))
		if e.p.Logins() != logins+1 {
			t.Fatalf("%v: logins %d, want %d", extra, e.p.Logins(), logins+1)
		}
		newer := unix(t, c, "auth_time")
		if newer <= authTime {
			t.Fatalf("%v: auth_time %d not after %d", extra, newer, authTime)
		}
		e.checkClaims(c, a.nonce, newer)
		authTime = newer
	}

	// 6 and 7: the refresh_token grant from the app's origin, after a CORS
	// preflight. The refresh token keeps the auth_time of its login.
	pre, _ := http.NewRequest(http.MethodOptions, e.endpoint("token_endpoint"), nil)
	pre.Header.Set("Origin", e.origin)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err = http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") != e.origin ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	old := tok["refresh_token"].(string)
	resp, fresh := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh: %d %v", resp.StatusCode, fresh)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != e.origin {
		t.Errorf("token POST: Access-Control-Allow-Origin %q, want %q", got, e.origin)
	}
	e.checkClaims(e.idToken(fresh), "", unix(t, claims, "auth_time"))
	if fresh["refresh_token"] == old || fresh["refresh_token"] == nil {
		t.Errorf("refresh token not rotated: %v", fresh["refresh_token"])
	}
	if resp, body := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("reused refresh token: %d %v", resp.StatusCode, body)
	}
}

// TestAuthorizeRefusals: PKCE S256 is required up front, and the redirect
// URI must match exactly.
func TestAuthorizeRefusals(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for _, extra := range []url.Values{
		{"code_challenge": {""}, "code_challenge_method": {""}},
		{"code_challenge_method": {"plain"}},
	} {
		a := e.authorize(b, extra)
		if q := e.redirected(a.resp); q.Get("error") != "invalid_request" {
			t.Errorf("%v: %v, want error=invalid_request", extra, q)
		}
	}
	u, _ := url.Parse(e.redirect)
	u.Host = "127.0.0.1:1" // same host, other port
	a := e.authorize(b, url.Values{"redirect_uri": {u.String()}})
	a.resp.Body.Close()
	if a.resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unregistered redirect_uri: %d, want 400", a.resp.StatusCode)
	}
}
