package rpc

import (
	"crypto/subtle"
	"strings"
	"time"

	"github.com/apppass/apppass"
)

// Authenticator turns a bearer token into a Caller: a user token (a JWT)
// or one of the configured service keys.
type Authenticator struct {
	Tokens      *apppass.UserTokens // nil: user tokens are not accepted
	ServiceKeys []apppass.ServiceKey
	Now         func() time.Time
}

var errUnauthenticated = &apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated"}

// caller is an authenticated caller and until when it stays valid.
type caller struct {
	apppass.Caller
	expires time.Time // zero for service keys
}

// Authenticate checks a bearer token. Every service key is compared, in
// constant time, whatever matched before, so timing tells nothing.
func (a *Authenticator) Authenticate(bearer string) (caller, error) {
	if bearer == "" {
		return caller{}, errUnauthenticated
	}
	if strings.Count(bearer, ".") == 2 && a.Tokens != nil {
		now := a.now()
		tu, err := a.Tokens.Verify(bearer, now)
		if err != nil {
			return caller{}, &apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: " + err.Error()}
		}
		return caller{Caller: apppass.Caller{Role: apppass.RoleUser, Name: tu.User.Login, User: tu.User, ViaAppPassword: tu.ViaAppPassword}, expires: tu.Expires}, nil
	}
	var match *apppass.ServiceKey
	for i := range a.ServiceKeys {
		if subtle.ConstantTimeCompare([]byte(bearer), []byte(a.ServiceKeys[i].Secret)) == 1 {
			match = &a.ServiceKeys[i]
		}
	}
	if match == nil {
		return caller{}, errUnauthenticated
	}
	return caller{Caller: apppass.Caller{Role: match.Role, Name: match.Name}}, nil
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// stillValid reports whether a caller authenticated earlier (on a
// WebSocket) may still call: a user token's expiry applies to every call.
func (a *Authenticator) stillValid(c caller) bool {
	return c.expires.IsZero() || a.now().Before(c.expires)
}

// bearerFrom extracts the token of an "Authorization: Bearer …" header.
func bearerFrom(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
