// Package config reads the settings of apppassd and apppass-gateway from
// the environment and command-line flags (and, for apppassd, a config
// file; in rising precedence: file, environment, flags), validates them,
// and documents every one in --help. Each binary's settings are one table
// (settings in config.go, gatewaySettings in gateway.go) read by one
// loader (table.go).
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/dovecot"
	"github.com/apppass/apppass/stdwebhook"
)

// Config is the validated configuration of apppassd.
type Config struct {
	Listen             string
	HTTPReadTimeout    time.Duration
	HTTPWriteTimeout   time.Duration
	HTTPIdleTimeout    time.Duration
	DataDir            string
	MongoURI           string
	MongoDatabase      string
	SQLiteSynchronous  string
	NATSURL            string
	EmbeddedNATSListen string
	StreamMaxAge       time.Duration
	UserTokenKey       string
	ServiceKeys        []apppass.ServiceKey
	Pepper             string
	MaxPerUser         int
	AppsFile           string
	ServiceHost        string
	LogLevel           slog.Level
	LogFormat          string
	// MailBackends overrides the default backend of imap, pop3 or smtp.
	MailBackends       map[string]netip.AddrPort
	MailMasterUser     string
	MailMasterPassword string
	BasicRealm         string
	PprofListen        string
	AuthCacheTTL       time.Duration
	Throttle           apppass.ThrottlePolicy
	SweepInterval      time.Duration
	// Outbound webhooks (config/webhooks.go) and the provisioning webhook.
	Webhooks               []apppass.WebhookEndpoint
	WebhookTimeout         time.Duration
	WebhookRetryBase       time.Duration
	WebhookRetryMaxDelay   time.Duration
	WebhookRetryFor        time.Duration
	WebhookAllowPrivate    bool
	WebhookRetention       time.Duration
	ProvisioningSecrets    []stdwebhook.Secret
	RevokeOnPasswordChange bool
	// UI is "auto" (the settings page at / with the embedded store only),
	// "on" or "off".
	UI string
	// CORSOrigins may call /rpc and the OX-compatible API from a browser.
	CORSOrigins []string
	// Metrics serves Prometheus metrics at /metrics.
	Metrics bool
	// Dovecots whose doveadm HTTP API apppassd calls on revocations (base
	// URLs, checked by dovecot.ParseBaseURL), with their API key.
	DoveadmURLs    []string
	DoveadmAPIKey  string
	doveadmKeyFile string
	DoveadmTimeout time.Duration
	// An OIDC issuer whose tokens are user tokens, beside HS256 ones.
	OIDCIssuer   string
	OIDCAudience string
	OIDCClaims   apppass.ClaimNames
	// The settings page's public client at the issuer, and the scope it
	// asks for: with a client id the page signs users in by itself.
	OIDCClientID string
	OIDCScope    string
	// Reauth is what add asks of a user's sign-in.
	Reauth apppass.ReauthPolicy
}

// ServeUI reports whether the settings page is served at /.
func (c *Config) ServeUI() bool {
	return c.UI == "on" || (c.UI == "auto" && c.EmbeddedStore())
}

// EmbeddedStore reports whether the store is the embedded SQLite file.
func (c *Config) EmbeddedStore() bool { return c.MongoURI == "" }

// DataFile is the path of a file in the data dir (one of package
// datadir's names).
func (c *Config) DataFile(name string) string { return filepath.Join(c.DataDir, name) }

// EmbeddedNATS reports whether NATS is the embedded server.
func (c *Config) EmbeddedNATS() bool { return c.NATSURL == "" }

// UsesDataDir reports whether apppassd keeps anything in the data dir: the
// embedded store's file or the embedded NATS server's.
func (c *Config) UsesDataDir() bool { return c.EmbeddedStore() || c.EmbeddedNATS() }

// settings is apppassd's table.
var settings = []setting[Config]{
	{"APPPASS_CONFIG", "config", "", "optional YAML or JSON file of settings, keyed by variable or flag name", nil},
	{"APPPASS_LISTEN", "listen", "127.0.0.1:8080", "HTTP address for /rpc, /healthz and /readyz", func(c *Config, v string) error {
		c.Listen = v
		return checkHostPort(v)
	}},
	{"APPPASS_HTTP_READ_TIMEOUT", "http-read-timeout", "30s", "longest time to read one HTTP request, headers and body (a body trickling in is cut off)", func(c *Config, v string) error {
		return duration(v, time.Second, time.Hour, &c.HTTPReadTimeout)
	}},
	{"APPPASS_HTTP_WRITE_TIMEOUT", "http-write-timeout", "60s", "longest time to answer one HTTP request; WebSocket connections are not cut by it", func(c *Config, v string) error {
		return duration(v, time.Second, time.Hour, &c.HTTPWriteTimeout)
	}},
	{"APPPASS_HTTP_IDLE_TIMEOUT", "http-idle-timeout", "120s", "how long an idle keep-alive connection is kept open", func(c *Config, v string) error {
		return duration(v, time.Second, 24*time.Hour, &c.HTTPIdleTimeout)
	}},
	{"APPPASS_DATA_DIR", "data-dir", "./data", "directory for the embedded store, embedded NATS and generated keys", func(c *Config, v string) error {
		c.DataDir = v
		return nonEmpty(v)
	}},
	{"APPPASS_MONGODB_URI", "mongodb-uri", "", "MongoDB connection string; empty keeps the store in SQLite in the data dir (apppass.db)", func(c *Config, v string) error {
		c.MongoURI = v
		if v != "" && !strings.HasPrefix(v, "mongodb://") && !strings.HasPrefix(v, "mongodb+srv://") {
			return errors.New("must start with mongodb:// or mongodb+srv://")
		}
		return nil
	}},
	{"APPPASS_SQLITE_SYNCHRONOUS", "sqlite-synchronous", "full", "the embedded store's fsync: full (an answered call survives a power loss) or normal (it survives a crash of apppassd; a power loss may take back the last calls)", func(c *Config, v string) error {
		c.SQLiteSynchronous = strings.ToUpper(v)
		if c.SQLiteSynchronous != "FULL" && c.SQLiteSynchronous != "NORMAL" {
			return errors.New("must be full or normal")
		}
		return nil
	}},
	{"APPPASS_MONGODB_DATABASE", "mongodb-database", "apppass", "MongoDB database name", func(c *Config, v string) error {
		c.MongoDatabase = v
		if v == "" || strings.ContainsAny(v, "/\\. \"$") {
			return errors.New("must be a non-empty database name without / \\ . space \" or $")
		}
		return nil
	}},
	{"APPPASS_NATS_URL", "nats-url", "", "NATS server URL; empty runs an embedded NATS server with JetStream", func(c *Config, v string) error {
		c.NATSURL = v
		return nil
	}},
	{"APPPASS_STREAM_MAX_AGE", "stream-max-age", "168h", "how long the APPPASSWORDS stream keeps an event, when apppassd creates the stream", func(c *Config, v string) error {
		return duration(v, time.Hour, 365*24*time.Hour, &c.StreamMaxAge)
	}},
	{"APPPASS_EMBEDDED_NATS_LISTEN", "embedded-nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server", func(c *Config, v string) error {
		c.EmbeddedNATSListen = v
		return checkHostPort(v)
	}},
	{"APPPASS_USER_TOKEN_KEY", "user-token-key", "", "HS256 key (32+ bytes) for user tokens; generated in the data dir when the store is embedded", func(c *Config, v string) error {
		c.UserTokenKey = v
		return minLen(v, 32)
	}},
	{"APPPASS_SERVICE_KEYS", "service-keys", "", "comma-separated name:role:secret, role gateway or admin, secret 16+ characters", func(c *Config, v string) error {
		keys, err := parseServiceKeys(v)
		c.ServiceKeys = keys
		return err
	}},
	{"APPPASS_PEPPER", "pepper", "", "hashing key (32+ bytes) for password digests; required with an external MongoDB, generated in the data dir otherwise", func(c *Config, v string) error {
		c.Pepper = v
		return minLen(v, 32)
	}},
	{"APPPASS_MAX_PER_USER", "max-per-user", "50", "most active app passwords one user may have", func(c *Config, v string) error {
		return count(v, 1, 10000, &c.MaxPerUser)
	}},
	{"APPPASS_APPS_FILE", "apps-file", "", "YAML or JSON app catalogue replacing the built-in one", func(c *Config, v string) error {
		c.AppsFile = v
		return nil
	}},
	{"APPPASS_SERVICE_HOST", "service-host", "localhost", "host name the built-in catalogue's connection settings show", func(c *Config, v string) error {
		c.ServiceHost = v
		return nonEmpty(v)
	}},
	{"APPPASS_MAIL_BACKENDS", "mail-backends", "", "nginx mail proxy backends as imap=IP:port,pop3=IP:port,smtp=IP:port; unset ones use the standard port on 127.0.0.1", func(c *Config, v string) error {
		backends, err := parseMailBackends(v)
		c.MailBackends = backends
		return err
	}},
	{"APPPASS_MAIL_MASTER_USER", "mail-master-user", "", "optional master user nginx logs in to the mail backend as (<login>*<master>)", func(c *Config, v string) error {
		c.MailMasterUser = v
		return nil
	}},
	{"APPPASS_MAIL_MASTER_PASSWORD", "mail-master-password", "", "the master user's password", func(c *Config, v string) error {
		c.MailMasterPassword = v
		return nil
	}},
	{"APPPASS_BASIC_REALM", "basic-realm", "App password", "realm of the HTTP Basic challenge on /auth/basic", func(c *Config, v string) error {
		c.BasicRealm = v
		return checkRealm(v)
	}},
	{"APPPASS_PPROF_LISTEN", "pprof-listen", "", "if set, serve Go's /debug/pprof profiles on this (loopback!) address", func(c *Config, v string) error {
		c.PprofListen = v
		if v == "" {
			return nil
		}
		return checkHostPort(v)
	}},
	{"APPPASS_AUTH_CACHE_TTL", "auth-cache-ttl", "30s", "how long a successful authenticate is remembered (0 turns the cache off)", func(c *Config, v string) error {
		return duration(v, 0, time.Hour, &c.AuthCacheTTL)
	}},
	{"APPPASS_THROTTLE_PAIR_LIMIT", "throttle-pair-limit", "5", "failed logins of one login from one IP before its logins are refused for a growing time (0: off)", func(c *Config, v string) error {
		return count(v, 0, 1_000_000, &c.Throttle.PairLimit)
	}},
	{"APPPASS_THROTTLE_IP_LIMIT", "throttle-ip-limit", "50", "failed logins from one IP, any login, before its logins are refused (0: off)", func(c *Config, v string) error {
		return count(v, 0, 1_000_000, &c.Throttle.IPLimit)
	}},
	{"APPPASS_THROTTLE_WINDOW", "throttle-window", "15m", "failed logins older than this are forgotten", func(c *Config, v string) error {
		return duration(v, time.Second, 24*time.Hour, &c.Throttle.Window)
	}},
	{"APPPASS_THROTTLE_MAX_BLOCK", "throttle-max-block", "15m", "the longest a throttled login or IP waits", func(c *Config, v string) error {
		return duration(v, time.Second, 24*time.Hour, &c.Throttle.MaxBlock)
	}},
	{"APPPASS_SWEEP_INTERVAL", "sweep-interval", "1m", "how often expired and idle passwords are revoked", func(c *Config, v string) error {
		return duration(v, 10*time.Millisecond, time.Hour, &c.SweepInterval)
	}},
	{"APPPASS_WEBHOOKS_FILE", "webhooks-file", "", "YAML or JSON file of outbound webhook endpoints: endpoints: [{name, url, secret (whsec_...), events, allowPrivate}]", func(c *Config, v string) error {
		eps, err := readWebhooksFile(v)
		c.Webhooks = eps
		return err
	}},
	{"APPPASS_WEBHOOK_TIMEOUT", "webhook-timeout", "10s", "time limit of one webhook request", func(c *Config, v string) error {
		return duration(v, 100*time.Millisecond, 5*time.Minute, &c.WebhookTimeout)
	}},
	{"APPPASS_WEBHOOK_RETRY_BASE", "webhook-retry-base", "5s", "longest wait before a webhook's first retry; it doubles with each further retry (full jitter)", func(c *Config, v string) error {
		return duration(v, 10*time.Millisecond, time.Hour, &c.WebhookRetryBase)
	}},
	{"APPPASS_WEBHOOK_RETRY_MAX_DELAY", "webhook-retry-max-delay", "1h", "longest wait between two webhook retries", func(c *Config, v string) error {
		return duration(v, 10*time.Millisecond, 24*time.Hour, &c.WebhookRetryMaxDelay)
	}},
	{"APPPASS_WEBHOOK_RETRY_FOR", "webhook-retry-for", "72h", "how long a webhook delivery is retried before it is given up as failed", func(c *Config, v string) error {
		return duration(v, time.Second, 30*24*time.Hour, &c.WebhookRetryFor)
	}},
	{"APPPASS_WEBHOOK_ALLOW_PRIVATE", "webhook-allow-private", "false", "let every webhook endpoint reach loopback, private and link-local addresses (per endpoint: allowPrivate)", func(c *Config, v string) error {
		return boolean(v, &c.WebhookAllowPrivate)
	}},
	{"APPPASS_WEBHOOK_RETENTION", "webhook-retention", "168h", "how long delivered and failed webhook deliveries stay visible", func(c *Config, v string) error {
		return duration(v, time.Minute, 365*24*time.Hour, &c.WebhookRetention)
	}},
	{"APPPASS_PROVISIONING_SECRET", "provisioning-secret", "", "whsec_... secret (comma-separated for a rotation) that signs POST /webhooks/provisioning; empty turns it off", func(c *Config, v string) error {
		secrets, err := parseSecrets(v)
		c.ProvisioningSecrets = secrets
		return err
	}},
	{"APPPASS_REVOKE_ON_PASSWORD_CHANGE", "revoke-on-password-change", "false", "a user.password_changed provisioning webhook revokes all of the user's app passwords", func(c *Config, v string) error {
		return boolean(v, &c.RevokeOnPasswordChange)
	}},
	{"APPPASS_UI", "ui", "auto", "the settings page at /: on, off, or auto (on with the embedded store only)", func(c *Config, v string) error {
		c.UI = v
		if v != "auto" && v != "on" && v != "off" {
			return errors.New("must be auto, on or off")
		}
		return nil
	}},
	{"APPPASS_CORS_ORIGINS", "cors-origins", "", "comma-separated origins (https://groupware.example.com) whose pages may call /rpc and /appsuite/api from a browser", func(c *Config, v string) error {
		origins, err := parseOrigins(v)
		c.CORSOrigins = origins
		return err
	}},
	{"APPPASS_METRICS", "metrics", "true", "serve Prometheus metrics at /metrics", func(c *Config, v string) error {
		return boolean(v, &c.Metrics)
	}},
	{"APPPASS_DOVEADM_URLS", "doveadm-urls", "", "comma-separated base URLs of Dovecot's doveadm HTTP listeners (http://127.0.0.1:8080): their sessions of a revoked mail password are kicked", func(c *Config, v string) error {
		urls, err := parseDoveadmURLs(v)
		c.DoveadmURLs = urls
		return err
	}},
	{"APPPASS_DOVEADM_API_KEY", "doveadm-api-key", "", "Dovecot's doveadm_api_key, for APPPASS_DOVEADM_URLS", func(c *Config, v string) error {
		c.DoveadmAPIKey = v
		return nil
	}},
	{"APPPASS_DOVEADM_API_KEY_FILE", "doveadm-api-key-file", "", "file holding the doveadm API key, instead of APPPASS_DOVEADM_API_KEY", func(c *Config, v string) error {
		c.doveadmKeyFile = v
		return nil
	}},
	{"APPPASS_DOVEADM_TIMEOUT", "doveadm-timeout", "5s", "time limit of one doveadm request", func(c *Config, v string) error {
		return duration(v, 100*time.Millisecond, time.Minute, &c.DoveadmTimeout)
	}},
	{"APPPASS_OIDC_ISSUER", "oidc-issuer", "", "OIDC issuer URL (its tokens' iss) whose RS256/PS256/ES256/EdDSA tokens are user tokens, beside HS256 ones", func(c *Config, v string) error {
		c.OIDCIssuer = v
		if v == "" {
			return nil
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return errors.New("must be an issuer URL like https://login.example.com/realms/ox")
		}
		return nil
	}},
	{"APPPASS_OIDC_AUDIENCE", "oidc-audience", "", "the aud every issuer token must name (required with APPPASS_OIDC_ISSUER)", func(c *Config, v string) error {
		c.OIDCAudience = v
		return nil
	}},
	{"APPPASS_OIDC_CLIENT_ID", "oidc-client-id", "", "the settings page's public client at the issuer (authorization code with PKCE, no secret); its ID tokens (aud = this id) are user tokens too", func(c *Config, v string) error {
		c.OIDCClientID = v
		return nil
	}},
	{"APPPASS_OIDC_SCOPE", "oidc-scope", "openid profile email", "the scope the settings page asks the issuer for (add offline_access for refresh tokens where the issuer allows it)", func(c *Config, v string) error {
		c.OIDCScope = v
		if !slices.Contains(strings.Fields(v), "openid") {
			return errors.New("must contain openid")
		}
		return nil
	}},
	{"APPPASS_OIDC_CLAIMS", "oidc-claims", "cid=cid,uid=uid,login=login", "which issuer claims name the user: cid=CLAIM,uid=CLAIM,login=CLAIM", func(c *Config, v string) error {
		names, err := parseClaimNames(v)
		c.OIDCClaims = names
		return err
	}},
	{"APPPASS_ADD_MAX_AUTH_AGE", "add-max-auth-age", "0", "if set, add needs a token whose auth_time is at most this old (else -32003 with data.reauth); 0: off", func(c *Config, v string) error {
		if v == "0" {
			c.Reauth.MaxAge = 0
			return nil
		}
		return duration(v, time.Second, 30*24*time.Hour, &c.Reauth.MaxAge)
	}},
	{"APPPASS_ADD_REQUIRE_AMR", "add-require-amr", "", "if set, add needs a token whose amr holds this (e.g. mfa)", func(c *Config, v string) error {
		c.Reauth.AMR = v
		if strings.ContainsAny(v, " ,") {
			return errors.New("must be one amr value, such as mfa")
		}
		return nil
	}},
	{"APPPASS_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *Config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
	{"APPPASS_LOG_FORMAT", "log-format", "text", "text or json", func(c *Config, v string) error {
		c.LogFormat = v
		if v != "text" && v != "json" {
			return errors.New("must be text or json")
		}
		return nil
	}},
}

// daemon is apppassd's table with its --help.
var daemon = table[Config]{program: "apppassd", settings: settings,
	usage: "apppassd: the app-password sidecar.\n\nEvery setting is a flag and an environment variable; flags win over the\nenvironment, which wins over the config file.\n\n"}

// Load builds apppassd's configuration from args (without the program
// name), the environment and the config file, and checks the settings that
// go together. It returns flag.ErrHelp after printing --help to out.
func Load(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c, err := daemon.load(args, getenv, out)
	if err != nil {
		return nil, err
	}
	if (c.MailMasterUser == "") != (c.MailMasterPassword == "") {
		return nil, errors.New("config: APPPASS_MAIL_MASTER_USER (--mail-master-user) and APPPASS_MAIL_MASTER_PASSWORD (--mail-master-password) must be set together")
	}
	if !c.EmbeddedStore() && c.Pepper == "" {
		return nil, errors.New("config: APPPASS_PEPPER (--pepper) is required when APPPASS_MONGODB_URI is set: every replica must digest passwords with the same key")
	}
	if c.OIDCIssuer != "" && c.OIDCAudience == "" && c.OIDCClientID == "" {
		return nil, errors.New("config: APPPASS_OIDC_AUDIENCE (--oidc-audience) or APPPASS_OIDC_CLIENT_ID (--oidc-client-id) is required with APPPASS_OIDC_ISSUER: the aud its tokens must name")
	}
	if c.OIDCClientID != "" && c.OIDCIssuer == "" {
		return nil, errors.New("config: APPPASS_OIDC_CLIENT_ID (--oidc-client-id) needs APPPASS_OIDC_ISSUER (--oidc-issuer)")
	}
	if err := c.resolveDoveadmKey(); err != nil {
		return nil, err
	}
	if !c.EmbeddedStore() && c.UserTokenKey == "" {
		return nil, errors.New("config: APPPASS_USER_TOKEN_KEY (--user-token-key) is required when APPPASS_MONGODB_URI is set")
	}
	return c, nil
}

// parseClaimNames reads APPPASS_OIDC_CLAIMS: cid=…,uid=…,login=…, each
// once, any left out keeping its default.
func parseClaimNames(v string) (apppass.ClaimNames, error) {
	names := apppass.DefaultClaimNames
	seen := map[string]bool{}
	for _, pair := range strings.Split(v, ",") {
		k, claim, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || claim == "" || seen[k] {
			return names, fmt.Errorf("%q is not cid=CLAIM, uid=CLAIM or login=CLAIM (each once)", pair)
		}
		seen[k] = true
		switch k {
		case "cid":
			names.Context = claim
		case "uid":
			names.User = claim
		case "login":
			names.Login = claim
		default:
			return names, fmt.Errorf("%q: %s is not cid, uid or login", pair, k)
		}
	}
	return names, nil
}

// parseDoveadmURLs reads APPPASS_DOVEADM_URLS: base URLs, each once.
func parseDoveadmURLs(v string) ([]string, error) {
	var urls []string
	for _, raw := range strings.Split(v, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := dovecot.ParseBaseURL(raw)
		if err != nil {
			return nil, err
		}
		if slices.Contains(urls, u) {
			return nil, fmt.Errorf("%s is listed twice", u)
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// resolveDoveadmKey reads the doveadm API key file, if one is named, and
// checks that URLs and key come together.
func (c *Config) resolveDoveadmKey() error {
	if c.doveadmKeyFile != "" {
		if c.DoveadmAPIKey != "" {
			return errors.New("config: set APPPASS_DOVEADM_API_KEY or APPPASS_DOVEADM_API_KEY_FILE, not both")
		}
		raw, err := os.ReadFile(c.doveadmKeyFile)
		if err != nil {
			return fmt.Errorf("config: APPPASS_DOVEADM_API_KEY_FILE (--doveadm-api-key-file): %v", err)
		}
		c.DoveadmAPIKey = strings.TrimRight(string(raw), "\r\n")
		if c.DoveadmAPIKey == "" {
			return fmt.Errorf("config: APPPASS_DOVEADM_API_KEY_FILE (--doveadm-api-key-file): %s is empty", c.doveadmKeyFile)
		}
	}
	switch {
	case len(c.DoveadmURLs) > 0 && c.DoveadmAPIKey == "":
		return errors.New("config: APPPASS_DOVEADM_URLS needs the API key: APPPASS_DOVEADM_API_KEY or APPPASS_DOVEADM_API_KEY_FILE")
	case len(c.DoveadmURLs) == 0 && c.DoveadmAPIKey != "":
		return errors.New("config: a doveadm API key is set but APPPASS_DOVEADM_URLS is empty")
	}
	return nil
}

// parseOrigins reads a comma-separated list of browser origins: a scheme,
// a host and an optional port, nothing else (what an Origin header carries).
func parseOrigins(v string) ([]string, error) {
	var origins []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("%q is not an origin like https://groupware.example.com", o)
		}
		// Browsers send an origin without its scheme's default port.
		host := strings.ToLower(u.Host)
		if (u.Scheme == "https" && strings.HasSuffix(host, ":443")) || (u.Scheme == "http" && strings.HasSuffix(host, ":80")) {
			host = host[:strings.LastIndexByte(host, ':')]
		}
		origins = append(origins, strings.ToLower(u.Scheme)+"://"+host)
	}
	return origins, nil
}

func parseServiceKeys(v string) ([]apppass.ServiceKey, error) {
	var keys []apppass.ServiceKey
	for entry := range strings.SplitSeq(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, rest, ok1 := strings.Cut(entry, ":")
		role, secret, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || name == "" {
			return nil, fmt.Errorf("entry %d: must be name:role:secret", len(keys)+1)
		}
		k := apppass.ServiceKey{Name: name, Secret: secret}
		switch role {
		case "gateway":
			k.Role = apppass.RoleGateway
		case "admin":
			k.Role = apppass.RoleAdmin
		default:
			return nil, fmt.Errorf("key %q: role must be gateway or admin, not %q", name, role)
		}
		if len(secret) < 16 {
			return nil, fmt.Errorf("key %q: secret must be at least 16 characters", name)
		}
		if slices.ContainsFunc(keys, func(o apppass.ServiceKey) bool { return o.Name == name || o.Secret == secret }) {
			return nil, fmt.Errorf("key %q: name or secret used twice", name)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Catalogue returns the apps file's catalogue, or the built-in one.
func (c *Config) Catalogue() (*apppass.Catalogue, error) {
	if c.AppsFile == "" {
		return apppass.NewCatalogue(apppass.BuiltinApps(c.ServiceHost))
	}
	raw, err := os.ReadFile(c.AppsFile)
	if err != nil {
		return nil, fmt.Errorf("config: APPPASS_APPS_FILE (--apps-file): %v", err)
	}
	var file struct {
		Apps []apppass.App `yaml:"apps"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("config: APPPASS_APPS_FILE (--apps-file): %s: %v", filepath.Base(c.AppsFile), err)
	}
	cat, err := apppass.NewCatalogue(file.Apps)
	if err != nil {
		return nil, fmt.Errorf("config: APPPASS_APPS_FILE (--apps-file): %v", err)
	}
	return cat, nil
}

func parseMailBackends(v string) (map[string]netip.AddrPort, error) {
	out := map[string]netip.AddrPort{}
	for entry := range strings.SplitSeq(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		protocol, addr, ok := strings.Cut(entry, "=")
		if !ok || (protocol != "imap" && protocol != "pop3" && protocol != "smtp") {
			return nil, fmt.Errorf("entry %q: must be imap=, pop3= or smtp= followed by IP:port", entry)
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("entry %q: nginx needs an IP address and port, e.g. 127.0.0.1:143", entry)
		}
		out[protocol] = ap
	}
	return out, nil
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	_ = host
	return nil
}

// checkRealm checks an HTTP Basic realm, which goes between quotes.
func checkRealm(v string) error {
	if strings.ContainsAny(v, "\"\\\r\n") {
		return errors.New("must not contain quotes, backslashes or line breaks")
	}
	return nil
}

func count(v string, lo, hi int, into *int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return fmt.Errorf("must be a whole number from %d to %d", lo, hi)
	}
	*into = n
	return nil
}

func duration(v string, lo, hi time.Duration, into *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return fmt.Errorf("must be a duration (such as 30s, 15m) from %s to %s", lo, hi)
	}
	*into = d
	return nil
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func minLen(v string, n int) error {
	if v != "" && len(v) < n {
		return fmt.Errorf("must be at least %d bytes long", n)
	}
	return nil
}
