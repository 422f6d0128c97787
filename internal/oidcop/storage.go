package oidcop

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is the op.Storage behind the provider. It is our own rather than
// zitadel's example storage because that one has fixed users, a global client
// registry, a fixed 1 h ID token lifetime, no browser session and puts extra
// claims in only for a custom scope. Everything lives in memory for the
// lifetime of one test.
type storage struct {
	client *client
	users  map[string]User // by username, which is also the subject
	key    *rsa.PrivateKey
	keyID  string

	mu       sync.Mutex
	requests map[string]*authRequest  // by auth request id
	codes    map[string]string        // authorization code -> auth request id
	access   map[string]accessToken   // by token id
	refresh  map[string]*refreshToken // by token value
	sessions map[string]session       // session cookie value -> who logged in when
}

var _ op.Storage = (*storage)(nil)

type accessToken struct {
	subject, clientID string
	expires           time.Time
}

// session is what the session cookie stands for: the last password login of
// this browser, so a second authorization request can be answered silently.
type session struct {
	subject  string
	authTime time.Time
}

func newStorage(cfg Config, key *rsa.PrivateKey) *storage {
	s := &storage{
		client: &client{
			id:           cfg.ClientID,
			redirectURIs: slices.Clone(cfg.RedirectURIs),
			lifetime:     cfg.IDTokenLifetime,
		},
		users:    make(map[string]User, len(cfg.Users)),
		key:      key,
		keyID:    rand.Text(),
		requests: make(map[string]*authRequest),
		codes:    make(map[string]string),
		access:   make(map[string]accessToken),
		refresh:  make(map[string]*refreshToken),
		sessions: make(map[string]session),
	}
	for _, u := range cfg.Users {
		s.users[u.Username] = u
	}
	return s
}

// --- used by the login page ---

// authRequest returns a copy of a pending request, so the caller reads it
// without holding the lock.
func (s *storage) authRequest(id string) (*authRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok {
		return nil, false
	}
	c := *req
	return &c, true
}

// complete marks a request as authenticated, which lets op's callback
// endpoint issue the code.
func (s *storage) complete(id, subject string, authTime time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if ok {
		req.subject, req.authTime, req.done = subject, authTime, true
	}
	return ok
}

func (s *storage) checkPassword(username, password string) bool {
	u, ok := s.users[username]
	return ok && u.Password == password
}

func (s *storage) newSession(subject string, authTime time.Time, replaces string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, replaces)
	id := rand.Text()
	s.sessions[id] = session{subject: subject, authTime: authTime}
	return id
}

func (s *storage) session(id string) (session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	return sess, ok
}

// --- op.AuthStorage ---

func (s *storage) CreateAuthRequest(_ context.Context, r *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	// op itself only insists on PKCE at the token endpoint and would accept
	// "plain"; the client here is meant to be a browser app, so require S256
	// up front (op sends this error back to the redirect URI).
	if r.CodeChallenge == "" || r.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method=S256 is required")
	}
	req := &authRequest{
		id:           rand.Text(),
		clientID:     r.ClientID,
		redirectURI:  r.RedirectURI,
		state:        r.State,
		nonce:        r.Nonce,
		scopes:       r.Scopes,
		responseType: r.ResponseType,
		responseMode: r.ResponseMode,
		challenge:    &oidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod},
		prompt:       r.Prompt,
	}
	if r.MaxAge != nil { // op has already turned prompt=login into max_age=0
		d := time.Duration(*r.MaxAge) * time.Second
		req.maxAge = &d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[req.id] = req
	return req, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	if req, ok := s.authRequest(id); ok {
		return req, nil
	}
	return nil, errors.New("auth request not found")
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or already used")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest is called once the code was exchanged: this is what
// makes a code single-use.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, reqID := range s.codes {
		if reqID == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, r op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, exp := s.newAccessToken(r)
	return id, exp, nil
}

// newAccessToken stores an opaque access token; it lives as long as an ID
// token. Callers hold s.mu.
func (s *storage) newAccessToken(r op.TokenRequest) (string, time.Time) {
	id := rand.Text()
	exp := time.Now().Add(s.client.lifetime)
	s.access[id] = accessToken{subject: r.GetSubject(), clientID: s.client.id, expires: exp}
	return id, exp
}

// CreateAccessAndRefreshTokens issues a refresh token for a code exchange
// with offline_access, and rotates it on the refresh_token grant: the old
// refresh token stops working, as a public client's should.
func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, r op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := &refreshToken{subject: r.GetSubject(), clientID: s.client.id, scopes: r.GetScopes()}
	switch r := r.(type) {
	case *authRequest:
		rt.authTime, rt.amr = r.authTime, r.GetAMR()
	case *refreshToken:
		if _, ok := s.refresh[current]; !ok {
			return "", "", time.Time{}, op.ErrInvalidRefreshToken
		}
		delete(s.refresh, current)
		rt.authTime, rt.amr = r.authTime, r.amr // a refresh is not a new login
	default:
		return "", "", time.Time{}, errors.New("unsupported token request")
	}
	rt.token = rand.Text()
	s.refresh[rt.token] = rt
	id, exp := s.newAccessToken(r)
	return id, rt.token, exp, nil
}

func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[token]
	if !ok {
		return nil, op.ErrInvalidRefreshToken
	}
	c := *rt // op may narrow the scopes on its copy
	return &c, nil
}

// TerminateSession (end_session endpoint) drops the user's tokens and
// browser sessions, so the next authorization shows the login page again.
func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.access {
		if t.subject == userID && t.clientID == clientID {
			delete(s.access, id)
		}
	}
	for id, t := range s.refresh {
		if t.subject == userID && t.clientID == clientID {
			delete(s.refresh, id)
		}
	}
	for id, sess := range s.sessions {
		if sess.subject == userID {
			delete(s.sessions, id)
		}
	}
	return nil
}

func (s *storage) RevokeToken(_ context.Context, token, _, _ string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.access, token)
	delete(s.refresh, token)
	return nil
}

func (s *storage) GetRefreshTokenInfo(_ context.Context, _, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.subject, rt.token, nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s}}, nil
}

// --- op.OPStorage ---

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if id != s.client.id {
		return nil, errors.New("unknown client")
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("the only client is public and has no secret")
}

// SetUserinfoFromScopes fills the ID token. The user's Claims go in whatever
// the scopes, because the tests want them at the top level of the ID token.
func (s *storage) SetUserinfoFromScopes(_ context.Context, info *oidc.UserInfo, userID, _ string, _ []string) error {
	return s.setUserinfo(info, userID)
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t, ok := s.access[tokenID]
	s.mu.Unlock()
	if !ok || t.subject != subject || time.Now().After(t.expires) {
		return errors.New("access token invalid or expired")
	}
	return s.setUserinfo(info, subject)
}

func (s *storage) setUserinfo(info *oidc.UserInfo, userID string) error {
	u, ok := s.users[userID]
	if !ok {
		return errors.New("user not found")
	}
	// op copies Subject into the ID token's sub: leaving it empty would
	// blank sub.
	info.Subject = u.Username
	for k, v := range u.Claims {
		info.AppendClaims(k, v)
	}
	return nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not supported")
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil // only for JWT access tokens; ours are opaque
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("private_key_jwt is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("jwt profile grant is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// --- keys ---

type signingKey struct{ s *storage }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.s.key }
func (k signingKey) ID() string                                  { return k.s.keyID } // becomes the JWT's kid

type publicKey struct{ s *storage }

func (k publicKey) ID() string                         { return k.s.keyID }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.s.key.PublicKey }

// --- the client ---

// client is the one public client (a browser app).
type client struct {
	id           string
	redirectURIs []string
	lifetime     time.Duration
}

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.redirectURIs }

// ApplicationType is user agent, not native: op matches a native client's
// loopback redirect URIs on any port, and we want exact matching.
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeUserAgent }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}
func (c *client) LoginURL(id string) string            { return "/login?authRequestID=" + url.QueryEscape(id) }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// DevMode lets a user-agent client use http:// redirect URIs; in op it
// affects nothing but the redirect URI check.
func (c *client) DevMode() bool { return true }

// --- requests ---

// authRequest is one authorization request, from /authorize to the code
// exchange.
type authRequest struct {
	id, clientID, redirectURI, state, nonce string
	scopes                                  []string
	responseType                            oidc.ResponseType
	responseMode                            oidc.ResponseMode
	challenge                               *oidc.CodeChallenge
	prompt                                  []string
	maxAge                                  *time.Duration

	// set once the user is authenticated, by password or by session
	subject  string
	authTime time.Time
	done     bool
}

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAudience() []string                 { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.challenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.done }

// GetAMR is "pwd" even for a silent login: the session stands for a
// password login.
func (a *authRequest) GetAMR() []string {
	if a.done {
		return []string{"pwd"}
	}
	return nil
}

// refreshToken is both the stored refresh token and op's RefreshTokenRequest.
type refreshToken struct {
	token, subject, clientID string
	scopes, amr              []string
	authTime                 time.Time
}

func (r *refreshToken) GetAMR() []string            { return r.amr }
func (r *refreshToken) GetAudience() []string       { return []string{r.clientID} }
func (r *refreshToken) GetAuthTime() time.Time      { return r.authTime }
func (r *refreshToken) GetClientID() string         { return r.clientID }
func (r *refreshToken) GetScopes() []string         { return r.scopes }
func (r *refreshToken) GetSubject() string          { return r.subject }
func (r *refreshToken) SetCurrentScopes(s []string) { r.scopes = s }
