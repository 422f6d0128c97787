package rpc

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// TokenVerifier checks a user token (apppass.UserTokens for HS256,
// oidc.Issuer for an OIDC issuer's).
type TokenVerifier interface {
	Verify(token string, now time.Time) (apppass.TokenUser, error)
}

// Callers tells who is calling: it turns a bearer token into a Caller, a
// user token (a JWT)
// or one of the configured service keys. A JWT whose header names HS256
// goes to Tokens, any other to Issuer (when set): each verifier accepts
// only its own algorithms, so neither can be fed the other's.
type Callers struct {
	Tokens      TokenVerifier // HS256; nil: not accepted
	Issuer      TokenVerifier // an OIDC issuer's tokens; nil: none
	ServiceKeys []apppass.ServiceKey
	Now         func() time.Time
}

var errUnauthenticated = &apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated"}

// Identify checks a bearer token and says whose it is. (Not to be
// confused with appPasswords.authenticate, a gateway's check of a login.)
// Every service key is compared, in constant time, whatever matched
// before, so timing tells nothing.
func (a *Callers) Identify(bearer string) (edge.Caller, error) {
	if bearer == "" {
		return edge.Caller{}, errUnauthenticated
	}
	if strings.Count(bearer, ".") == 2 && (a.Tokens != nil || a.Issuer != nil) {
		v := a.Tokens
		if a.Issuer != nil && (v == nil || headerAlg(bearer) != "HS256") {
			v = a.Issuer
		}
		if v == nil {
			return edge.Caller{}, &apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: only tokens of the OIDC issuer are accepted"}
		}
		tu, err := v.Verify(bearer, a.now())
		if apppass.KindOf(err) == apppass.KindUnavailable {
			return edge.Caller{}, err
		}
		if err != nil {
			return edge.Caller{}, &apppass.Error{Kind: apppass.KindUnauthenticated, Message: "caller not authenticated: " + err.Error()}
		}
		return edge.Caller{Caller: apppass.Caller{Role: apppass.RoleUser, Name: tu.User.Login, User: tu.User,
			ViaAppPassword: tu.ViaAppPassword, AuthTime: tu.AuthTime, AMR: tu.AMR}, Expires: tu.Expires}, nil
	}
	var match *apppass.ServiceKey
	for i := range a.ServiceKeys {
		if subtle.ConstantTimeCompare([]byte(bearer), []byte(a.ServiceKeys[i].Secret)) == 1 {
			match = &a.ServiceKeys[i]
		}
	}
	if match == nil {
		return edge.Caller{}, errUnauthenticated
	}
	return edge.Caller{Caller: apppass.Caller{Role: match.Role, Name: match.Name}}, nil
}

// headerAlg reads the alg of a JWT's header, "" if it cannot. Only the
// choice of verifier depends on it; each verifier checks the algorithm
// again itself.
func headerAlg(token string) string {
	seg, _, _ := strings.Cut(token, ".")
	if len(seg) > 1024 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return ""
	}
	return h.Alg
}

func (a *Callers) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// StillValid reports whether a caller authenticated earlier (on a
// WebSocket) may still call: a user token's expiry applies to every call.
func (a *Callers) StillValid(c edge.Caller) bool {
	return c.Expires.IsZero() || a.now().Before(c.Expires)
}
