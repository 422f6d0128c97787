package apppass

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUserTokens(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	tokens, err := NewUserTokens(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewUserTokens([]byte("short")); err == nil {
		t.Fatal("a short key was accepted")
	}
	now := time.Unix(1_800_000_000, 0)
	alice := User{ContextID: 7, UserID: 42, Login: "alice@example.com"}

	good := tokens.Mint(alice, time.Hour, now, "pwd")
	got, err := tokens.Verify(good, now)
	if err != nil || got.User != alice || got.ViaAppPassword || !got.Expires.Equal(now.Add(time.Hour)) || !slices.Equal(got.AMR, []string{"pwd"}) || !got.AuthTime.IsZero() {
		t.Fatalf("Verify(good) = %+v, %v", got, err)
	}
	if got, _ := tokens.Verify(tokens.Mint(alice, time.Hour, now, "app_password"), now); !got.ViaAppPassword {
		t.Fatal("amr app_password not reported")
	}

	enc := base64.RawURLEncoding.EncodeToString
	payload := func(claims string) string { return enc([]byte(claims)) }
	other, _ := NewUserTokens([]byte(strings.Repeat("o", 32)))
	parts := strings.Split(good, ".")
	for name, token := range map[string]string{
		"expired":        good,
		"other key":      other.Mint(alice, time.Hour, now.Add(-time.Hour)),
		"alg none":       enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		"alg HS512":      enc([]byte(`{"alg":"HS512"}`)) + "." + parts[1] + "." + parts[2],
		"tampered":       parts[0] + "." + payload(`{"cid":7,"uid":1,"login":"root","exp":9999999999}`) + "." + parts[2],
		"two parts":      parts[0] + "." + parts[1],
		"four parts":     good + ".x",
		"garbage":        "not-a-token",
		"bad signature":  parts[0] + "." + parts[1] + ".!!!",
		"empty":          "",
		"header not b64": "***." + parts[1] + "." + parts[2],
	} {
		at := now
		if name == "expired" {
			at = now.Add(2 * time.Hour)
		}
		if _, err := tokens.Verify(token, at); err == nil {
			t.Errorf("%s: token accepted", name)
		}
	}

	// Signed with the right key but missing or mistyped claims.
	sign := func(claims string) string { return signHS256(tokens, testHeader, claims) }
	for name, claims := range map[string]string{
		"no exp":          `{"cid":7,"uid":42,"login":"a"}`,
		"no cid":          `{"uid":42,"login":"a","exp":1900000000}`,
		"no login":        `{"cid":7,"uid":42,"exp":1900000000}`,
		"cid string":      `{"cid":"7","uid":42,"login":"a","exp":1900000000}`,
		"uid fractional":  `{"cid":7,"uid":4.2,"login":"a","exp":1900000000}`,
		"uid negative":    `{"cid":7,"uid":-4,"login":"a","exp":1900000000}`,
		"login empty":     `{"cid":7,"uid":42,"login":"","exp":1900000000}`,
		"login object":    `{"cid":7,"uid":42,"login":{"$ne":""},"exp":1900000000}`,
		"exp in the past": `{"cid":7,"uid":42,"login":"a","exp":1700000000}`,
		"not an object":   `[1,2]`,
		// now is 1,800,000,000: an hour ahead, and two minutes ahead.
		"nbf an hour ahead":  `{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":1800003600}`,
		"nbf 2 min ahead":    `{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":1800000120}`,
		"iat an hour ahead":  `{"cid":7,"uid":42,"login":"a","exp":1900000000,"iat":1800003600}`,
		"iat 2 min ahead":    `{"cid":7,"uid":42,"login":"a","exp":1900000000,"iat":1800000120}`,
		"nbf a string":       `{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":"1"}`,
		"iat an object":      `{"cid":7,"uid":42,"login":"a","exp":1900000000,"iat":{}}`,
		"amr a string":       `{"cid":7,"uid":42,"login":"a","exp":1900000000,"amr":"pwd"}`,
		"auth_time a string": `{"cid":7,"uid":42,"login":"a","exp":1900000000,"auth_time":"1"}`,
	} {
		if _, err := tokens.Verify(sign(claims), now); err == nil {
			t.Errorf("%s: token accepted", name)
		}
	}
	if u, err := tokens.Verify(sign(`{"cid":7,"uid":42,"login":"a","exp":1900000000,"auth_time":1799999000,"amr":["pwd","mfa"]}`), now); err != nil ||
		u.User.UserID != 42 || !u.AuthTime.Equal(time.Unix(1799999000, 0)) || !slices.Equal(u.AMR, []string{"pwd", "mfa"}) {
		t.Fatalf("hand-signed valid token: %+v, %v", u, err)
	}
	// nbf and iat in the past, or within the clock skew ahead, are fine.
	for _, claims := range []string{
		`{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":1799990000,"iat":1799990000}`,
		`{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":1800000030,"iat":1800000030}`,
		`{"cid":7,"uid":42,"login":"a","exp":1900000000,"nbf":null}`,
	} {
		if _, err := tokens.Verify(sign(claims), now); err != nil {
			t.Errorf("%s refused: %v", claims, err)
		}
	}
	if _, err := tokens.Verify(strings.Repeat("a", 16<<10+1), now); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a token over 16 KiB: %v", err)
	}
	// A claim error names the claim, under the names it was looked for.
	_, err = UserClaims([]byte(`{"exp":1900000000,"ox_context":1,"ox_user":"2","email":"a"}`), now, ClaimNames{Context: "ox_context", User: "ox_user", Login: "email"})
	if err == nil || !strings.Contains(err.Error(), "ox_user") {
		t.Errorf("a mistyped mapped claim: %v", err)
	}
	if u, err := UserClaims([]byte(`{"exp":1900000000,"ox_context":1,"ox_user":2,"email":"a@b"}`), now, ClaimNames{Context: "ox_context", User: "ox_user", Login: "email"}); err != nil || u.User != (User{ContextID: 1, UserID: 2, Login: "a@b"}) {
		t.Errorf("mapped claims: %+v, %v", u, err)
	}
}

// testHeader is the header Mint signs.
var testHeader = `{"alg":"HS256","typ":"JWT"}`

// signHS256 signs header and claims as they are, with the tokens' key: a
// token whose every byte the test chose.
func signHS256(t *UserTokens, header, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signed := enc([]byte(header)) + "." + enc([]byte(claims))
	return signed + "." + enc(hmacOf(t, signed))
}
