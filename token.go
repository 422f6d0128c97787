package apppass

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// UserTokens signs and verifies user tokens: JWTs signed with HS256 whose
// claims name the groupware user (cid, uid, login) and expire (exp). The
// JOSE parsing and signature check are go-jose's; the claims are checked
// by UserClaims, as for tokens of an OIDC issuer.
type UserTokens struct {
	key []byte
}

// NewUserTokens returns a verifier for tokens signed with key.
func NewUserTokens(key []byte) (*UserTokens, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("the user token key must be at least 32 bytes long, got %d", len(key))
	}
	return &UserTokens{key: key}, nil
}

// clockSkew is how far a token's nbf and iat may lie ahead of our clock:
// the issuer's clock may run a little ahead of ours.
const clockSkew = time.Minute

// MaxTokenLen bounds a token before any of it is decoded.
const MaxTokenLen = 16 << 10

// ClaimNames are the claims a token names its user with.
type ClaimNames struct {
	Context, User, Login string
}

// DefaultClaimNames are cid, uid and login.
var DefaultClaimNames = ClaimNames{Context: "cid", User: "uid", Login: "login"}

// TokenUser is what a verified user token says.
type TokenUser struct {
	User User
	// ViaAppPassword: the session was opened with an app password (amr
	// holds "app_password").
	ViaAppPassword bool
	Expires        time.Time
	// AuthTime is when the user last authenticated (auth_time); zero when
	// the token does not say.
	AuthTime time.Time
	// AMR lists how the user authenticated (e.g. pwd, mfa, otp).
	AMR []string
}

// Verify checks the signature, the algorithm (HS256 only) and the claims,
// and returns the user the token speaks for. now is passed in so tests
// can move the clock.
func (t *UserTokens) Verify(token string, now time.Time) (TokenUser, error) {
	if len(token) > MaxTokenLen {
		return TokenUser{}, fmt.Errorf("user token is longer than %d bytes", MaxTokenLen)
	}
	// Only HS256: "none", RS256 with our key as a public key, …: all refused.
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		return TokenUser{}, fmt.Errorf("malformed user token or algorithm other than HS256: %v", err)
	}
	payload, err := jws.Verify(t.key)
	if err != nil {
		return TokenUser{}, errors.New("user token signature does not verify")
	}
	return UserClaims(payload, now, DefaultClaimNames)
}

// Mint signs a token for user valid for ttl; amr lists how the session was
// opened (e.g. "pwd", or "app_password" for one opened with an app password).
func (t *UserTokens) Mint(user User, ttl time.Duration, now time.Time, amr ...string) string {
	return t.MintClaims(map[string]any{
		"cid": user.ContextID, "uid": user.UserID, "login": user.Login,
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(), "amr": amr,
	})
}

// MintClaims signs the given claims as they are (tests and development).
func (t *UserTokens) MintClaims(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: t.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(err) // a 32+ byte key always makes a signer
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// UserClaims checks a verified token's claims: exp (required), nbf and
// iat (at most a minute ahead), the user's context and user id (integers)
// and login (a string) under names, amr (strings) and auth_time. Errors
// name the claim at fault.
func UserClaims(payload []byte, now time.Time, names ClaimNames) (TokenUser, error) {
	var c map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if err := d.Decode(&c); err != nil || c == nil {
		return TokenUser{}, errors.New("user token claims are not a JSON object")
	}
	exp, hasExp, ok := optionalTime(c["exp"])
	if !ok || !hasExp {
		return TokenUser{}, errors.New("user token lacks the numeric claim exp")
	}
	if !now.Before(exp) {
		return TokenUser{}, errors.New("user token has expired")
	}
	nbf, hasNbf, ok1 := optionalTime(c["nbf"])
	iat, hasIat, ok2 := optionalTime(c["iat"])
	if !ok1 || !ok2 {
		return TokenUser{}, errors.New("user token claims nbf and iat must be numeric dates")
	}
	if hasNbf && nbf.After(now.Add(clockSkew)) {
		return TokenUser{}, errors.New("user token is not valid yet (nbf)")
	}
	if hasIat && iat.After(now.Add(clockSkew)) {
		return TokenUser{}, errors.New("user token was issued in the future (iat)")
	}
	var u TokenUser
	u.Expires = exp
	for _, id := range []struct {
		name string
		into *int64
	}{{names.Context, &u.User.ContextID}, {names.User, &u.User.UserID}} {
		n, ok := claimNumber(c[id.name])
		v, err := n.Int64()
		if !ok || err != nil || v < 0 {
			return TokenUser{}, fmt.Errorf("user token claim %s must be a non-negative integer", id.name)
		}
		*id.into = v
	}
	if json.Unmarshal(c[names.Login], &u.User.Login) != nil || u.User.Login == "" {
		return TokenUser{}, fmt.Errorf("user token claim %s must be a non-empty string", names.Login)
	}
	if raw, has := c["amr"]; has && string(raw) != "null" {
		if json.Unmarshal(raw, &u.AMR) != nil {
			return TokenUser{}, errors.New("user token claim amr must be a list of strings")
		}
	}
	u.ViaAppPassword = slices.Contains(u.AMR, "app_password")
	authTime, _, ok := optionalTime(c["auth_time"])
	if !ok {
		return TokenUser{}, errors.New("user token claim auth_time must be a numeric date")
	}
	u.AuthTime = authTime
	return u, nil
}

// optionalTime reads an optional numeric date claim (RFC 7519 NumericDate).
func optionalTime(raw json.RawMessage) (t time.Time, present, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false, true
	}
	n, ok := claimNumber(raw)
	if !ok {
		return time.Time{}, true, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, true, false
	}
	return time.Unix(int64(f), 0), true, true
}

// claimNumber reads a numeric claim; a string holding digits is refused.
func claimNumber(raw json.RawMessage) (json.Number, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return "", false
	}
	return json.Number(raw), true
}
