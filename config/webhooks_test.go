package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/stdwebhook"
)

func TestWebhookDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Webhooks) != 0 || c.WebhookTimeout != 10*time.Second || c.WebhookRetryBase != 5*time.Second ||
		c.WebhookRetryMaxDelay != time.Hour || c.WebhookRetryFor != 72*time.Hour || c.WebhookAllowPrivate ||
		c.WebhookRetention != 7*24*time.Hour || len(c.ProvisioningSecrets) != 0 || c.RevokeOnPasswordChange {
		t.Fatalf("webhook defaults: %+v", c)
	}
	if c.WebhookRetryFor < 24*time.Hour {
		t.Fatal("deliveries must be retried for at least a day by default")
	}
}

func TestWebhooksFile(t *testing.T) {
	dir := t.TempDir()
	secret := stdwebhook.GenerateSecret()
	good := filepath.Join(dir, "hooks.yaml")
	os.WriteFile(good, []byte(`endpoints:
  - name: crm
    url: https://crm.example.com/hooks/apppass
    secret: `+secret+`
    events: [apppassword.revoked]
  - {name: local, url: "http://10.0.0.5:8080/in", secret: "`+secret+`", allowPrivate: true}
`), 0o600)
	prov := stdwebhook.GenerateSecret()
	c, err := Load([]string{"--webhooks-file", good, "--webhook-retry-for", "26h", "--webhook-allow-private", "true",
		"--revoke-on-password-change=true"},
		env(map[string]string{"APPPASS_PROVISIONING_SECRET": prov + ", " + stdwebhook.GenerateSecret()}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []apppass.WebhookEndpoint{
		{Name: "crm", URL: "https://crm.example.com/hooks/apppass", Secret: secret, Events: []string{apppass.EventRevoked}},
		{Name: "local", URL: "http://10.0.0.5:8080/in", Secret: secret, AllowPrivate: true},
	}
	if len(c.Webhooks) != 2 || c.Webhooks[0].Name != want[0].Name || c.Webhooks[0].Events[0] != want[0].Events[0] ||
		c.Webhooks[1].URL != want[1].URL || !c.Webhooks[1].AllowPrivate || c.Webhooks[0].Secret != secret {
		t.Fatalf("endpoints %+v", c.Webhooks)
	}
	if c.WebhookRetryFor != 26*time.Hour || !c.WebhookAllowPrivate || !c.RevokeOnPasswordChange ||
		len(c.ProvisioningSecrets) != 2 || c.ProvisioningSecrets[0].String() != prov {
		t.Fatalf("config %+v", c)
	}

	for name, body := range map[string]string{
		"unknown field": "endpoints:\n  - {name: a, url: 'https://x.example', secret: '" + secret + "', colour: red}\n",
		"bad secret":    "endpoints:\n  - {name: a, url: 'https://x.example', secret: 'not-a-whsec'}\n",
		"bad url":       "endpoints:\n  - {name: a, url: 'gopher://x.example', secret: '" + secret + "'}\n",
		"bad event":     "endpoints:\n  - {name: a, url: 'https://x.example', secret: '" + secret + "', events: [user.deleted]}\n",
		"twice":         "endpoints:\n  - {name: a, url: 'https://x.example', secret: '" + secret + "'}\n  - {name: a, url: 'https://y.example', secret: '" + secret + "'}\n",
		"no endpoints":  "endpoints: []\n",
		"not yaml":      "{{{",
	} {
		bad := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		os.WriteFile(bad, []byte(body), 0o600)
		_, err := Load([]string{"--webhooks-file", bad}, env(nil), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "APPPASS_WEBHOOKS_FILE") {
			t.Errorf("%s: error %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	if _, err := Load([]string{"--webhooks-file", filepath.Join(dir, "missing.yaml")}, env(nil), &bytes.Buffer{}); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestWebhookSettingsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--provisioning-secret", "whsec_c2hvcnQ="},
		{"--provisioning-secret", "plain-text-secret-that-is-long-enough"},
		{"--webhook-timeout", "0s"},
		{"--webhook-retry-for", "40d"},
		{"--webhook-allow-private", "maybe"},
		{"--revoke-on-password-change", "yes please"},
	} {
		_, err := Load(args, env(nil), &bytes.Buffer{})
		if err == nil {
			t.Errorf("%v accepted", args)
			continue
		}
		if strings.Contains(args[0], "secret") && strings.Contains(err.Error(), args[1]) {
			t.Errorf("%v: the error shows the secret: %v", args, err)
		}
	}
}
