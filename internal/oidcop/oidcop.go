// Package oidcop runs a real OpenID Connect provider in-process for
// integration tests: zitadel/oidc's op package (the same code a production
// OP built on it runs) with an in-memory storage, one public client, a plain
// username/password login page and a browser session cookie. Unlike
// internal/oidctest, which mints tokens by hand for edge cases, this one
// goes through the real authorization code flow, so a test drives it like a
// browser would. It listens on 127.0.0.1 only, over plain http.
//
// # Endpoints
//
// Discovery is at Issuer+"/.well-known/openid-configuration"; op's default
// paths are /authorize, /oauth/token, /userinfo, /keys, /end_session.
//
// # Login page
//
// /authorize redirects to GET /login?authRequestID=..., which either answers
// silently from the session cookie or shows this form. Its selectors are
// stable, for chromedp:
//
//	#login-form  the form (POST /login)
//	#username    text input, name "username"
//	#password    password input, name "password"
//	#submit      submit button
//	#error       error text; empty unless the last attempt failed
//
// A wrong password answers 200 with the form again and "wrong username or
// password" in #error. A successful login sets an HttpOnly cookie named
// "oidcop_session_<port>" (the port, because cookies are shared between ports
// of 127.0.0.1) and redirects on towards the redirect URI.
//
// # Session
//
// A later authorization request from the same browser is answered without
// the form (auth_time stays that of the password login) unless prompt=login
// is given or max_age=N is given and the login is older than N seconds; then
// the form is shown and auth_time becomes the new login. prompt=none without
// a usable session redirects with error=login_required.
//
// # Tokens
//
// The ID token is RS256-signed with a fresh 2048-bit key whose kid is in the
// JWKS. Claims: iss, sub (the username), aud (["<client id>"]), azp and
// client_id (the client id), exp, iat, auth_time (unix seconds of the
// password login), amr (["pwd"]), nonce (if one was sent), at_hash, c_hash
// (code exchange only), and every entry of User.Claims at the top level with
// its JSON type, whatever the scopes. Registered claims win over a User.Claims
// entry of the same name. Userinfo returns sub and User.Claims.
//
// Access tokens are opaque and live as long as ID tokens (IDTokenLifetime).
// With scope offline_access the code exchange returns a refresh token, which
// does not expire and is rotated on every use (the old one stops working).
package oidcop

import (
	"crypto/rand"
	"crypto/rsa"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Config of the provider.
type Config struct {
	// ClientID names the one client: public (token endpoint auth "none", no
	// secret), PKCE with S256 required, grants authorization_code and
	// refresh_token, response_type code.
	ClientID string
	// RedirectURIs are matched exactly (port included), e.g.
	// http://127.0.0.1:PORT/callback.
	RedirectURIs []string
	Users        []User
	// IDTokenLifetime is the lifetime of ID and access tokens; 5 minutes if
	// zero. Set it short (a few seconds) to test renewal.
	IDTokenLifetime time.Duration
}

// User is one account of the login page.
type User struct {
	// Username is also the sub claim; it may not contain ':' (op's opaque
	// access tokens are "tokenID:subject").
	Username, Password string
	// Claims go into the ID token and userinfo at the top level, e.g.
	// {"ox_context": 7, "email": "anna@example.com"}.
	Claims map[string]any
}

// Provider is a running OpenID provider; it stops when the test ends.
type Provider struct {
	Issuer string // http://127.0.0.1:PORT, no trailing slash

	op     *op.Provider
	st     *storage
	cookie string
	logins atomic.Int64
}

// Start runs a provider on a free loopback port until t's cleanup.
func Start(t testing.TB, cfg Config) *Provider {
	t.Helper()
	if cfg.IDTokenLifetime == 0 {
		cfg.IDTokenLifetime = 5 * time.Minute
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Our own listener rather than httptest's default, so the address is
	// 127.0.0.1 whatever -httptest.serve says.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{
		Issuer: "http://" + l.Addr().String(),
		st:     newStorage(cfg, key),
		cookie: "oidcop_session_" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port),
	}
	var cryptoKey [32]byte // encrypts op's codes and opaque access tokens
	rand.Read(cryptoKey[:])
	p.op, err = op.NewProvider(&op.Config{
		CryptoKey:             cryptoKey,
		CodeMethodS256:        true,
		GrantTypeRefreshToken: true,
	}, p.st, op.StaticIssuer(p.Issuer),
		op.WithAllowInsecure(), // op refuses http issuers without it
	)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	// op's router handles CORS itself (github.com/rs/cors: any origin, with
	// credentials, preflight answered), so a browser app on another port can
	// call the token endpoint. The login page needs none.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", p.loginPage)
	mux.HandleFunc("POST /login", p.submitLogin)
	mux.Handle("/", p.op)
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// Logins counts successful submissions of the login form, so a test can tell
// a fresh login from a silent one.
func (p *Provider) Logins() int { return int(p.logins.Load()) }

func (p *Provider) loginPage(w http.ResponseWriter, r *http.Request) {
	id := r.FormValue("authRequestID")
	req, ok := p.st.authRequest(id)
	if !ok {
		http.Error(w, "unknown or finished auth request", http.StatusBadRequest)
		return
	}
	if sess, ok := p.session(r); ok && !mustLogin(req, sess) {
		p.st.complete(id, sess.subject, sess.authTime)
		p.toCallback(w, r, id)
		return
	}
	if slices.Contains(req.prompt, oidc.PromptNone) {
		op.AuthRequestError(w, r, req, oidc.ErrLoginRequired(), p.op)
		return
	}
	renderLogin(w, id, "")
}

// mustLogin tells whether the session is not good enough for req.
func mustLogin(req *authRequest, sess session) bool {
	// op already turns prompt=login into max_age=0; the explicit check keeps
	// it readable.
	return slices.Contains(req.prompt, oidc.PromptLogin) ||
		req.maxAge != nil && time.Since(sess.authTime) > *req.maxAge
}

func (p *Provider) submitLogin(w http.ResponseWriter, r *http.Request) {
	id := r.PostFormValue("id")
	if _, ok := p.st.authRequest(id); !ok {
		http.Error(w, "unknown or finished auth request", http.StatusBadRequest)
		return
	}
	username := r.PostFormValue("username")
	if !p.st.checkPassword(username, r.PostFormValue("password")) {
		renderLogin(w, id, "wrong username or password")
		return
	}
	now := time.Now()
	var old string
	if c, err := r.Cookie(p.cookie); err == nil {
		old = c.Value
	}
	http.SetCookie(w, &http.Cookie{
		Name:     p.cookie,
		Value:    p.st.newSession(username, now, old),
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
	p.st.complete(id, username, now)
	p.logins.Add(1)
	p.toCallback(w, r, id)
}

func (p *Provider) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(p.cookie)
	if err != nil {
		return session{}, false
	}
	return p.st.session(c.Value)
}

// toCallback sends the browser to op's callback, which issues the code and
// redirects to the client.
func (p *Provider) toCallback(w http.ResponseWriter, r *http.Request, id string) {
	ctx := op.ContextWithIssuer(r.Context(), p.Issuer)
	http.Redirect(w, r, op.AuthCallbackURL(p.op)(ctx, id), http.StatusFound)
}

// loginTmpl follows zitadel's example login page (same field names), with
// ids on every element a browser test needs.
var loginTmpl = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html>
<head><meta charset="UTF-8"><title>Login</title></head>
<body>
<form id="login-form" method="POST" action="/login">
<input type="hidden" name="id" value="{{.ID}}">
<div><label for="username">Username:</label> <input id="username" name="username" autocomplete="username"></div>
<div><label for="password">Password:</label> <input id="password" name="password" type="password" autocomplete="current-password"></div>
<p id="error" style="color:red">{{.Error}}</p>
<button id="submit" type="submit">Login</button>
</form>
</body>
</html>
`))

func renderLogin(w http.ResponseWriter, id, errText string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	loginTmpl.Execute(w, struct{ ID, Error string }{id, errText})
}
