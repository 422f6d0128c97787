package apppass

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// UserTokens signs and verifies user tokens: JWTs signed with HS256 whose
// claims name the groupware user (cid, uid, login) and expire (exp).
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

var errBadToken = errors.New("malformed user token")

// tokenHeader is the only header we sign, and the only alg we accept.
var tokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

type tokenClaims struct {
	CID   json.RawMessage `json:"cid"`
	UID   json.RawMessage `json:"uid"`
	Login *string         `json:"login"`
	Exp   json.RawMessage `json:"exp"`
	Nbf   json.RawMessage `json:"nbf"`
	Iat   json.RawMessage `json:"iat"`
	AMR   []string        `json:"amr,omitempty"`
}

// clockSkew is how far a token's nbf and iat may lie ahead of our clock:
// the issuer's clock may run a little ahead of ours.
const clockSkew = time.Minute

// maxTokenLen bounds a token before any of it is decoded.
const maxTokenLen = 16 << 10

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

// Verify checks the signature, the algorithm and the expiry, and returns the
// user the token speaks for. now is passed in so tests can move the clock.
func (t *UserTokens) Verify(token string, now time.Time) (user User, viaAppPassword bool, expires time.Time, err error) {
	if len(token) > maxTokenLen {
		return User{}, false, time.Time{}, fmt.Errorf("user token is longer than %d bytes", maxTokenLen)
	}
	header, rest, ok1 := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return User{}, false, time.Time{}, errBadToken
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(header, &h); err != nil {
		return User{}, false, time.Time{}, errBadToken
	}
	if h.Alg != "HS256" { // "none", RS256 with our key as a public key, …: all refused
		return User{}, false, time.Time{}, fmt.Errorf("user token algorithm %q is not HS256", h.Alg)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, t.sign(header+"."+payload)) {
		return User{}, false, time.Time{}, errors.New("user token signature does not verify")
	}
	var c tokenClaims
	if err := decodeSegment(payload, &c); err != nil {
		return User{}, false, time.Time{}, errBadToken
	}
	expN, ok1 := claimNumber(c.Exp)
	cidN, ok2 := claimNumber(c.CID)
	uidN, ok3 := claimNumber(c.UID)
	if !ok1 || !ok2 || !ok3 || c.Login == nil {
		return User{}, false, time.Time{}, errors.New("user token lacks one of the numeric claims exp, cid, uid or the string claim login")
	}
	exp, err := expN.Float64()
	if err != nil || math.IsNaN(exp) || now.Unix() >= int64(exp) {
		return User{}, false, time.Time{}, errors.New("user token has expired")
	}
	nbf, hasNbf, ok1 := optionalTime(c.Nbf)
	iat, hasIat, ok2 := optionalTime(c.Iat)
	if !ok1 || !ok2 {
		return User{}, false, time.Time{}, errors.New("user token claims nbf and iat must be numeric dates")
	}
	if hasNbf && nbf.After(now.Add(clockSkew)) {
		return User{}, false, time.Time{}, errors.New("user token is not valid yet (nbf)")
	}
	if hasIat && iat.After(now.Add(clockSkew)) {
		return User{}, false, time.Time{}, errors.New("user token was issued in the future (iat)")
	}
	cid, err1 := cidN.Int64()
	uid, err2 := uidN.Int64()
	if err1 != nil || err2 != nil || cid < 0 || uid < 0 || *c.Login == "" {
		return User{}, false, time.Time{}, errors.New("user token claims cid and uid must be non-negative integers and login a non-empty string")
	}
	return User{ContextID: cid, UserID: uid, Login: *c.Login}, slices.Contains(c.AMR, "app_password"), time.Unix(int64(exp), 0), nil
}

// Mint signs a token for user valid for ttl; amr lists how the session was
// opened (e.g. "pwd", or "app_password" for one opened with an app password).
func (t *UserTokens) Mint(user User, ttl time.Duration, now time.Time, amr ...string) string {
	payload, _ := json.Marshal(map[string]any{
		"cid": user.ContextID, "uid": user.UserID, "login": user.Login,
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(), "amr": amr,
	})
	signed := tokenHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signed + "." + base64.RawURLEncoding.EncodeToString(t.sign(signed))
}

func (t *UserTokens) sign(signed string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d.Decode(v)
}
