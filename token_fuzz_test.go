package apppass

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for user tokens (seed corpora in testdata/fuzz). Whatever
// the input, Verify must not panic, and it may accept a token only when
// the token is well formed, signed with the key, and its claims say
// what the returned user, flag and expiry say.

var fuzzNow = time.Unix(1_800_000_000, 0)

func fuzzTokens(f *testing.F) *UserTokens {
	tokens, err := NewUserTokens([]byte(strings.Repeat("fuzz-key-", 4)))
	if err != nil {
		f.Fatal(err)
	}
	return tokens
}

// FuzzVerifyUserToken feeds whole tokens: the fuzzer cannot sign, so an
// accepted token is a seed's signature over its own bytes.
func FuzzVerifyUserToken(f *testing.F) {
	tokens := fuzzTokens(f)
	f.Add(tokens.Mint(User{ContextID: 1, UserID: 3, Login: "demo@example.com"}, time.Hour, fuzzNow, "pwd"))
	f.Fuzz(func(t *testing.T, token string) {
		got, err := tokens.Verify(token, fuzzNow)
		if err != nil {
			return
		}
		header, payload, sig := splitToken(t, token)
		raw, decErr := base64.RawURLEncoding.DecodeString(sig)
		if decErr != nil || !bytes.Equal(raw, hmacOf(tokens, header+"."+payload)) {
			t.Fatalf("accepted a token whose signature is not the key's: %q", token)
		}
		checkClaims(t, payload, got.User, got.ViaAppPassword, got.Expires)
	})
}

// FuzzUserTokenClaims signs what the fuzzer makes of the header and the
// claims, so the claim checks themselves are fuzzed.
func FuzzUserTokenClaims(f *testing.F) {
	tokens := fuzzTokens(f)
	f.Fuzz(func(t *testing.T, header, claims []byte) {
		h := base64.RawURLEncoding.EncodeToString(header)
		p := base64.RawURLEncoding.EncodeToString(claims)
		token := h + "." + p + "." + base64.RawURLEncoding.EncodeToString(hmacOf(tokens, h+"."+p))
		got, err := tokens.Verify(token, fuzzNow)
		if err != nil {
			return
		}
		var hv struct{ Alg string }
		if d := json.NewDecoder(bytes.NewReader(header)); d.Decode(&hv) != nil || hv.Alg != "HS256" {
			t.Fatalf("accepted header %q", header)
		}
		checkClaims(t, p, got.User, got.ViaAppPassword, got.Expires)
	})
}

func hmacOf(t *UserTokens, signed string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

func splitToken(t *testing.T, token string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > MaxTokenLen {
		t.Fatalf("accepted a token of %d parts, %d bytes", len(parts), len(token))
	}
	return parts[0], parts[1], parts[2]
}

// checkClaims decodes the claims on its own and compares them with what
// Verify returned.
func checkClaims(t *testing.T, payload string, user User, viaApp bool, exp time.Time) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatalf("accepted claims that are not base64url: %q", payload)
	}
	var c struct {
		CID, UID, Exp, Nbf, Iat *json.Number
		Login                   *string
		AMR                     []string
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&c); err != nil || c.CID == nil || c.UID == nil || c.Exp == nil || c.Login == nil {
		t.Fatalf("accepted claims %q (%v)", raw, err)
	}
	cid, err1 := c.CID.Int64()
	uid, err2 := c.UID.Int64()
	if err1 != nil || err2 != nil || cid != user.ContextID || uid != user.UserID || cid < 0 || uid < 0 {
		t.Fatalf("claims %q gave user %+v", raw, user)
	}
	if *c.Login == "" || *c.Login != user.Login {
		t.Fatalf("claims %q gave login %q", raw, user.Login)
	}
	expF, err := c.Exp.Float64()
	if err != nil || !exp.After(fuzzNow) || exp.Unix() != int64(expF) {
		t.Fatalf("claims %q accepted at %v with expiry %v", raw, fuzzNow, exp)
	}
	for _, n := range []*json.Number{c.Nbf, c.Iat} {
		if n == nil {
			continue
		}
		if v, err := n.Float64(); err != nil || time.Unix(int64(v), 0).After(fuzzNow.Add(clockSkew)) {
			t.Fatalf("claims %q: nbf or iat ahead of now", raw)
		}
	}
	want := false
	for _, m := range c.AMR {
		want = want || m == "app_password"
	}
	if viaApp != want {
		t.Fatalf("claims %q gave viaAppPassword %v", raw, viaApp)
	}
}
