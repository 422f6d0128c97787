package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/stdwebhook"
)

// TestWebhooksFromOutside runs apppassd with an outbound webhook endpoint
// and the provisioning webhook configured: a provisioning message revokes
// a user's passwords, the revocations reach NATS with their reason, and the
// endpoint receives every event, signed.
func TestWebhooksFromOutside(t *testing.T) {
	outSecret := stdwebhook.GenerateSecret()
	outKey, _ := stdwebhook.ParseSecret(outSecret)
	verifier := &stdwebhook.Verifier{Secrets: []stdwebhook.Secret{outKey}}
	var mu sync.Mutex
	got := map[string]apppass.Event{} // webhook-id -> event
	var bad []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, err := verifier.Verify(r.Header.Get, body)
		var ev apppass.Event
		if err == nil {
			err = json.Unmarshal(body, &ev)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil || ev.ID != id {
			bad = append(bad, string(body))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got[id] = ev
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	received := func(typ, uuid, reason string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range got {
			if ev.Type == typ && ev.Data.UUID == uuid && ev.Data.Reason == reason {
				return true
			}
		}
		return false
	}

	dir := t.TempDir()
	hooksFile := filepath.Join(dir, "webhooks.yaml")
	if err := os.WriteFile(hooksFile, []byte("endpoints:\n  - name: crm\n    url: "+recv.URL+"/apppass\n    secret: "+outSecret+
		"\n    allowPrivate: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	provSecret := stdwebhook.GenerateSecret()
	provKey, _ := stdwebhook.ParseSecret(provSecret)
	key := strings.Repeat("k", 32)
	admin := "ops-admin-key-0123456789"
	natsAddr := freeAddr(t)
	d := start(t, "APPPASS_DATA_DIR="+dir, "APPPASS_EMBEDDED_NATS_LISTEN="+natsAddr, "APPPASS_USER_TOKEN_KEY="+key,
		"APPPASS_SERVICE_KEYS=ops:admin:"+admin, "APPPASS_WEBHOOKS_FILE="+hooksFile,
		"APPPASS_WEBHOOK_RETRY_BASE=100ms", "APPPASS_PROVISIONING_SECRET="+provSecret)
	w := watchStream(t, d.NATSURL(t))
	tokens, _ := apppass.NewUserTokens([]byte(key))
	user := apppass.User{ContextID: 4, UserID: 8, Login: "zoe@example.com"}
	token := tokens.Mint(user, time.Hour, time.Now())

	var first added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "phone"}, &first)
	var removed map[string]any
	d.call(t, token, "appPasswords.remove", map[string]any{"uuid": first.UUID}, &removed)
	var second, third added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "caldav", "appName": "calendar"}, &second)
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "eas", "appName": "tablet"}, &third)

	post := func(body string, secret stdwebhook.Secret, at time.Time) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, d.URL+"/webhooks/provisioning", strings.NewReader(body))
		stdwebhook.SetHeaders(req.Header.Set, "msg_"+testenv.RandomHex(8), at, []byte(body), secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	msg := `{"type":"user.deleted","timestamp":"` + time.Now().UTC().Format(time.RFC3339) + `","data":{"contextId":4,"userId":8}}`
	if status, out := post(msg, outKey, time.Now()); status != http.StatusUnauthorized {
		t.Fatalf("signed with the wrong secret: HTTP %d %s", status, out)
	}
	status, out := post(msg, provKey, time.Now())
	if status != http.StatusOK || !strings.Contains(out, `"revoked":2`) {
		t.Fatalf("user.deleted: HTTP %d %s", status, out)
	}
	var left []any
	d.call(t, token, "appPasswords.list", nil, &left)
	if len(left) != 0 {
		t.Fatalf("after user.deleted the user still has %d passwords", len(left))
	}
	for _, uuid := range []string{second.UUID, third.UUID} {
		if ev := w.waitFor(t, "apppassword.revoked", uuid); ev.Data.Reason != apppass.ReasonUserDeleted {
			t.Fatalf("revoked event of %s has reason %q", uuid, ev.Data.Reason)
		}
	}

	deadline := time.Now().Add(30 * time.Second)
	for !(received(apppass.EventCreated, first.UUID, "") && received(apppass.EventRevoked, first.UUID, apppass.ReasonUser) &&
		received(apppass.EventRevoked, second.UUID, apppass.ReasonUserDeleted) &&
		received(apppass.EventRevoked, third.UUID, apppass.ReasonUserDeleted)) {
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("webhook receiver got %d events (%d refused) within 30 s", len(got), len(bad))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var deliveries []struct {
		State    string `json:"state"`
		Endpoint string `json:"endpoint"`
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		d.call(t, admin, "webhooks.deliveries", map[string]any{"state": "delivered", "endpoint": "crm"}, &deliveries)
		if len(deliveries) == 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(deliveries) != 6 { // 3 created, 3 revoked
		t.Fatalf("%d delivered deliveries, want 6", len(deliveries))
	}
	if r := d.call(t, token, "webhooks.deliveries", nil, nil); r.Error == nil || r.Error.Code != -32003 {
		t.Fatalf("a user could read delivery state: %+v", r)
	}
	mu.Lock()
	if len(bad) != 0 {
		t.Errorf("the receiver refused %d deliveries: %v", len(bad), bad)
	}
	mu.Unlock()
	if code := d.Stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
