package main_test

import (
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/apppass/apppass/internal/oidctest"
)

// TestOIDCIssuerDownAtStart: apppassd starts while the issuer does not
// answer, says so once, answers its tokens -32050 and keeps HS256 tokens
// working; once the issuer answers, its tokens work, under the mapped
// claims.
func TestOIDCIssuerDownAtStart(t *testing.T) {
	ti := oidctest.Start(t)
	key := oidctest.NewKey(t, "k1", jose.RS256)
	ti.SetKeys(key.Public(t))
	ti.SetDown(true)
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t),
		"APPPASS_OIDC_ISSUER="+ti.URL(), "APPPASS_OIDC_AUDIENCE=apppass", "APPPASS_OIDC_CLAIMS=cid=ox_context,uid=ox_user,login=email")
	hs256, _ := d.credentials(t)
	claims := ti.Claims(time.Now(), "cid", nil, "uid", nil, "login", nil, "ox_context", 1, "ox_user", 3, "email", "demo@example.com")
	token := key.Sign(t, claims)

	if r := d.call(t, token, "appPasswords.list", map[string]any{}, nil); r.Error == nil || r.Error.Code != -32050 {
		t.Fatalf("an issuer token while the issuer is away: %+v", r)
	}
	var added struct{ UUID string }
	d.call(t, hs256, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "phone"}, &added)

	ti.SetDown(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var listed []struct{ UUID string }
		r := d.call(t, token, "appPasswords.list", map[string]any{}, nil)
		if r.Error == nil {
			d.call(t, token, "appPasswords.list", map[string]any{}, &listed)
			if len(listed) != 1 || listed[0].UUID != added.UUID {
				t.Fatalf("the issuer's demo user lists %+v", listed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("issuer tokens still refused: %d %s", r.Error.Code, r.Error.Message)
		}
		time.Sleep(200 * time.Millisecond)
	}
	logs := d.Stderr.String()
	if n := strings.Count(logs, "cannot fetch the issuer's keys"); n != 1 {
		t.Errorf("the issuer's outage was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "keys are fetched") {
		t.Errorf("recovery not logged:\n%s", logs)
	}
}
