package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.DataDir != "./data" || c.MongoDatabase != "apppass" ||
		c.EmbeddedNATSListen != "127.0.0.1:4222" || c.MaxPerUser != 50 || !c.EmbeddedStore() || !c.EmbeddedNATS() {
		t.Fatalf("defaults: %+v", c)
	}
	cat, err := c.Catalogue()
	if err != nil || len(cat.Apps()) != 7 {
		t.Fatalf("built-in catalogue: %v %v", cat, err)
	}
}

func TestPrecedenceFlagOverEnvOverFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "apppass.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:1111\nAPPPASS_MAX_PER_USER: 7\ndata-dir: /from/file\n"), 0o600)
	c, err := Load([]string{"--config", file, "--listen", "127.0.0.1:3333"},
		env(map[string]string{"APPPASS_LISTEN": "127.0.0.1:2222", "APPPASS_DATA_DIR": "/from/env"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:3333" || c.DataDir != "/from/env" || c.MaxPerUser != 7 {
		t.Fatalf("got listen %s dataDir %s max %d", c.Listen, c.DataDir, c.MaxPerUser)
	}
}

func TestServiceKeys(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"APPPASS_SERVICE_KEYS": "imap:gateway:0123456789abcdef, ops:admin:fedcba9876543210"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []apppass.ServiceKey{{Name: "imap", Role: apppass.RoleGateway, Secret: "0123456789abcdef"}, {Name: "ops", Role: apppass.RoleAdmin, Secret: "fedcba9876543210"}}
	if len(c.ServiceKeys) != 2 || c.ServiceKeys[0] != want[0] || c.ServiceKeys[1] != want[1] {
		t.Fatalf("keys %+v", c.ServiceKeys)
	}
}

func TestBadSettingsNameTheSetting(t *testing.T) {
	secret := "s3cr3t-s3cr3t-s3cr3t"
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"APPPASS_MAX_PER_USER": "many"}, nil, "APPPASS_MAX_PER_USER"},
		{map[string]string{"APPPASS_MAX_PER_USER": "0"}, nil, "APPPASS_MAX_PER_USER"},
		{map[string]string{"APPPASS_LISTEN": "8080"}, nil, "APPPASS_LISTEN"},
		{nil, []string{"--embedded-nats-listen", "x:y"}, "APPPASS_EMBEDDED_NATS_LISTEN"},
		{map[string]string{"APPPASS_MONGODB_URI": "http://x"}, nil, "APPPASS_MONGODB_URI"},
		{map[string]string{"APPPASS_MONGODB_URI": "mongodb://db", "APPPASS_USER_TOKEN_KEY": strings.Repeat("k", 32)}, nil, "APPPASS_PEPPER"},
		{map[string]string{"APPPASS_MONGODB_URI": "mongodb://db", "APPPASS_PEPPER": strings.Repeat("p", 32)}, nil, "APPPASS_USER_TOKEN_KEY"},
		{map[string]string{"APPPASS_PEPPER": "short"}, nil, "APPPASS_PEPPER"},
		{map[string]string{"APPPASS_USER_TOKEN_KEY": "short"}, nil, "APPPASS_USER_TOKEN_KEY"},
		{map[string]string{"APPPASS_SERVICE_KEYS": "a:root:" + secret}, nil, "APPPASS_SERVICE_KEYS"},
		{map[string]string{"APPPASS_SERVICE_KEYS": "a:gateway:short"}, nil, "APPPASS_SERVICE_KEYS"},
		{map[string]string{"APPPASS_SERVICE_KEYS": "a:gateway:" + secret + ",b:admin:" + secret}, nil, "APPPASS_SERVICE_KEYS"},
		{map[string]string{"APPPASS_SERVICE_KEYS": "nocolons"}, nil, "APPPASS_SERVICE_KEYS"},
		{map[string]string{"APPPASS_LOG_LEVEL": "loud"}, nil, "APPPASS_LOG_LEVEL"},
		{map[string]string{"APPPASS_CONFIG": "/does/not/exist"}, nil, "APPPASS_CONFIG"},
		{nil, []string{"stray"}, "unexpected argument"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "127.0.0.1:8080", "APPPASS_DOVEADM_API_KEY": secret}, nil, "APPPASS_DOVEADM_URLS"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://doveadm:" + secret + "@127.0.0.1:8080", "APPPASS_DOVEADM_API_KEY": secret}, nil, "APPPASS_DOVEADM_URLS"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://127.0.0.1:8080/doveadm/v1", "APPPASS_DOVEADM_API_KEY": secret}, nil, "adds /doveadm/v1"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://a:8080,http://a:8080/", "APPPASS_DOVEADM_API_KEY": secret}, nil, "listed twice"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://a:8080"}, nil, "needs the API key"},
		{map[string]string{"APPPASS_DOVEADM_API_KEY": secret}, nil, "APPPASS_DOVEADM_URLS is empty"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://a:8080", "APPPASS_DOVEADM_API_KEY_FILE": "/does/not/exist"}, nil, "APPPASS_DOVEADM_API_KEY_FILE"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://a:8080", "APPPASS_DOVEADM_API_KEY_FILE": "/dev/null"}, nil, "is empty"},
		{map[string]string{"APPPASS_DOVEADM_URLS": "http://a:8080", "APPPASS_DOVEADM_API_KEY": secret, "APPPASS_DOVEADM_API_KEY_FILE": "/dev/null"}, nil, "not both"},
		{map[string]string{"APPPASS_DOVEADM_TIMEOUT": "forever"}, nil, "APPPASS_DOVEADM_TIMEOUT"},
		{map[string]string{"APPPASS_OIDC_ISSUER": "login.example.com", "APPPASS_OIDC_AUDIENCE": "apppass"}, nil, "APPPASS_OIDC_ISSUER"},
		{map[string]string{"APPPASS_OIDC_ISSUER": "https://login.example.com"}, nil, "APPPASS_OIDC_AUDIENCE"},
		{map[string]string{"APPPASS_OIDC_CLAIMS": "cid=ox_context,user=ox_user"}, nil, "APPPASS_OIDC_CLAIMS"},
		{map[string]string{"APPPASS_OIDC_CLAIMS": "cid=a,cid=b"}, nil, "APPPASS_OIDC_CLAIMS"},
		{map[string]string{"APPPASS_OIDC_CLAIMS": "login="}, nil, "APPPASS_OIDC_CLAIMS"},
		{map[string]string{"APPPASS_OIDC_CLIENT_ID": "apppass-page"}, nil, "APPPASS_OIDC_CLIENT_ID"},
		{map[string]string{"APPPASS_OIDC_SCOPE": "email profile"}, nil, "APPPASS_OIDC_SCOPE"},
		{map[string]string{"APPPASS_ADD_MAX_AUTH_AGE": "soon"}, nil, "APPPASS_ADD_MAX_AUTH_AGE"},
		{map[string]string{"APPPASS_ADD_REQUIRE_AMR": "mfa otp"}, nil, "APPPASS_ADD_REQUIRE_AMR"},
	} {
		_, err := Load(tc.args, env(tc.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: error %v, want one line naming %s", tc.env, tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error reveals a secret: %v", err)
		}
	}
}

func TestDoveadmSettings(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "doveadm.key")
	os.WriteFile(keyFile, []byte("from-the-file\n"), 0o600)
	c, err := Load(nil, env(map[string]string{"APPPASS_DOVEADM_URLS": " http://10.0.0.5:8080/ , https://mail2.example.com ",
		"APPPASS_DOVEADM_API_KEY_FILE": keyFile}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.DoveadmURLs, []string{"http://10.0.0.5:8080", "https://mail2.example.com"}) || c.DoveadmAPIKey != "from-the-file" || c.DoveadmTimeout != 5*time.Second {
		t.Fatalf("%q %q %s", c.DoveadmURLs, c.DoveadmAPIKey, c.DoveadmTimeout)
	}
}

func TestOIDCSettings(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"APPPASS_OIDC_ISSUER": "https://login.example.com/realms/ox", "APPPASS_OIDC_AUDIENCE": "apppass",
		"APPPASS_OIDC_CLAIMS": "cid=ox_context, login=email", "APPPASS_ADD_MAX_AUTH_AGE": "5m", "APPPASS_ADD_REQUIRE_AMR": "mfa"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.OIDCIssuer != "https://login.example.com/realms/ox" || c.OIDCAudience != "apppass" ||
		c.OIDCClaims != (apppass.ClaimNames{Context: "ox_context", User: "uid", Login: "email"}) ||
		c.Reauth != (apppass.ReauthPolicy{MaxAge: 5 * time.Minute, AMR: "mfa"}) {
		t.Fatalf("%+v", c)
	}
	if c, _ := Load(nil, env(nil), &bytes.Buffer{}); c.OIDCClaims != apppass.DefaultClaimNames || c.Reauth != (apppass.ReauthPolicy{}) {
		t.Fatalf("defaults: %+v %+v", c.OIDCClaims, c.Reauth)
	}
	// A client id alone is the audience: the page's own ID tokens.
	c, err = Load(nil, env(map[string]string{"APPPASS_OIDC_ISSUER": "https://login.example.com/realms/ox", "APPPASS_OIDC_CLIENT_ID": "apppass-page",
		"APPPASS_OIDC_SCOPE": "openid email offline_access"}), &bytes.Buffer{})
	if err != nil || c.OIDCClientID != "apppass-page" || c.OIDCScope != "openid email offline_access" {
		t.Fatalf("%+v, %v", c, err)
	}
}

func TestSecretsNotEchoed(t *testing.T) {
	_, err := Load(nil, env(map[string]string{"APPPASS_PEPPER": "tooshort-secret"}), &bytes.Buffer{})
	if err == nil || strings.Contains(err.Error(), "tooshort-secret") {
		t.Fatalf("error %v", err)
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"listen":"127.0.0.1:1","colour":"blue"}`), 0o600)
	if _, err := Load([]string{"--config", file}, env(nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("error %v", err)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if _, err := Load([]string{"--help"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v", err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), s.env) {
			t.Errorf("--help does not list %s / --%s", s.env, s.flag)
		}
	}
}

func TestAppsFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "apps.yaml")
	os.WriteFile(good, []byte(`apps:
  - name: mail
    displayName: Mail
    sort: 1
    protocols: [imap, smtp]
    scopes: [read_mail]
    settings:
      - {protocol: imap, host: imap.example.com, port: 993, security: ssl}
`), 0o600)
	c := &Config{AppsFile: good}
	cat, err := c.Catalogue()
	if err != nil || len(cat.Apps()) != 1 || cat.Apps()[0].Settings[0].Host != "imap.example.com" {
		t.Fatalf("catalogue %+v, %v", cat, err)
	}
	for name, body := range map[string]string{
		"unknown field":    "apps:\n  - name: a\n    displayName: A\n    protocols: [imap]\n    colour: red\n",
		"unknown protocol": "apps:\n  - name: a\n    displayName: A\n    protocols: [gopher]\n",
		"no apps":          "apps: []\n",
		"not yaml":         "{{{",
	} {
		bad := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		os.WriteFile(bad, []byte(body), 0o600)
		if _, err := (&Config{AppsFile: bad}).Catalogue(); err == nil || !strings.Contains(err.Error(), "APPPASS_APPS_FILE") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func TestUICORSAndMetricsSettings(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !c.ServeUI() || !c.Metrics || len(c.CORSOrigins) != 0 {
		t.Fatalf("defaults: ui %v metrics %v cors %v", c.ServeUI(), c.Metrics, c.CORSOrigins)
	}
	external := map[string]string{"APPPASS_MONGODB_URI": "mongodb://db", "APPPASS_PEPPER": strings.Repeat("p", 32), "APPPASS_USER_TOKEN_KEY": strings.Repeat("k", 32)}
	if c, err = Load(nil, env(external), &bytes.Buffer{}); err != nil || c.ServeUI() {
		t.Fatalf("auto with external MongoDB: ui %v, %v", c.ServeUI(), err)
	}
	external["APPPASS_UI"] = "on"
	external["APPPASS_CORS_ORIGINS"] = "https://Groupware.example.com, http://127.0.0.1:8081"
	external["APPPASS_METRICS"] = "false"
	if c, err = Load(nil, env(external), &bytes.Buffer{}); err != nil || !c.ServeUI() || c.Metrics {
		t.Fatalf("ui on, metrics off: %+v %v", c, err)
	}
	if strings.Join(c.CORSOrigins, " ") != "https://groupware.example.com http://127.0.0.1:8081" {
		t.Fatalf("origins %q", c.CORSOrigins)
	}
	for name, v := range map[string]string{"APPPASS_UI": "maybe", "APPPASS_CORS_ORIGINS": "https://a.example/path", "APPPASS_METRICS": "yes please"} {
		_, err := Load(nil, env(map[string]string{name: v}), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: %v", name, v, err)
		}
	}
	if got, err := parseOrigins("https://a.example:443,http://b.example:80,https://c.example:8443"); err != nil ||
		strings.Join(got, " ") != "https://a.example http://b.example https://c.example:8443" {
		t.Fatalf("default ports: %q %v", got, err)
	}
	for _, bad := range []string{"*", "ftp://x.example", "https://", "https://u:p@x.example", "https://x.example/?q"} {
		if _, err := parseOrigins(bad); err == nil {
			t.Errorf("origin %q accepted", bad)
		}
	}
}
