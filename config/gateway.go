package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Gateway is the validated configuration of apppass-gateway.
type Gateway struct {
	Listen         string
	Upstream       string
	Sidecar        string
	GatewayKey     string
	Protocol       string
	Auth           string
	NATSURL        string
	SessionTTL     time.Duration
	Realm          string
	ClientIPHeader string
	TLSCert        string
	TLSKey         string
	LogLevel       slog.Level
}

// GatewayProtocols are the protocols the sidecar knows for HTTP services.
var GatewayProtocols = []string{"caldav", "carddav", "webdav", "eas", "drive"}

// gatewaySettings is apppass-gateway's table.
var gatewaySettings = []setting[Gateway]{
	{"APPPASS_GATEWAY_LISTEN", "listen", "127.0.0.1:8443", "address to listen on", func(c *Gateway, v string) error {
		c.Listen = v
		return checkHostPort(v)
	}},
	{"APPPASS_GATEWAY_UPSTREAM", "upstream", "", "URL of the service behind the gateway (required)", func(c *Gateway, v string) error {
		c.Upstream = v
		return httpURL(v)
	}},
	{"APPPASS_GATEWAY_SIDECAR", "sidecar", "http://127.0.0.1:8080", "URL of apppassd", func(c *Gateway, v string) error {
		c.Sidecar = v
		return httpURL(v)
	}},
	{"APPPASS_GATEWAY_KEY", "gateway-key", "", "a gateway key of apppassd (required; prefer the environment to the command line)", func(c *Gateway, v string) error {
		c.GatewayKey = v
		return nil
	}},
	{"APPPASS_GATEWAY_PROTOCOL", "protocol", "", "protocol the upstream speaks: " + strings.Join(GatewayProtocols, ", ") + " (required)", func(c *Gateway, v string) error {
		c.Protocol = v
		if v != "" && !slices.Contains(GatewayProtocols, v) {
			return fmt.Errorf("must be one of %s", strings.Join(GatewayProtocols, ", "))
		}
		return nil
	}},
	{"APPPASS_GATEWAY_AUTH", "auth", "basic", "how to ask apppassd: basic (GET /auth/basic) or rpc (appPasswords.authenticate)", func(c *Gateway, v string) error {
		c.Auth = v
		if v != "basic" && v != "rpc" {
			return errors.New("must be basic or rpc")
		}
		return nil
	}},
	{"APPPASS_GATEWAY_NATS_URL", "nats-url", "nats://127.0.0.1:4222", "NATS with the APPPASSWORDS stream (empty: no sessions)", func(c *Gateway, v string) error {
		c.NATSURL = v
		return nil
	}},
	{"APPPASS_GATEWAY_SESSION_TTL", "session-ttl", "5m", "how long an authenticated password is not asked about again (0: never kept)", func(c *Gateway, v string) error {
		return duration(v, 0, 24*time.Hour, &c.SessionTTL)
	}},
	{"APPPASS_GATEWAY_REALM", "realm", "App password", "realm of the HTTP Basic challenge", func(c *Gateway, v string) error {
		c.Realm = v
		return checkRealm(v)
	}},
	{"APPPASS_GATEWAY_CLIENT_IP_HEADER", "client-ip-header", "", "header a trusted proxy in front sets to the client address (X-Forwarded-For: its last entry); empty: the peer address", func(c *Gateway, v string) error {
		c.ClientIPHeader = v
		return nil
	}},
	{"APPPASS_GATEWAY_TLS_CERT", "tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)", func(c *Gateway, v string) error {
		c.TLSCert = v
		return nil
	}},
	{"APPPASS_GATEWAY_TLS_KEY", "tls-key", "", "TLS key file", func(c *Gateway, v string) error {
		c.TLSKey = v
		return nil
	}},
	{"APPPASS_GATEWAY_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *Gateway, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
}

var gateway = table[Gateway]{program: "apppass-gateway", settings: gatewaySettings,
	usage: "apppass-gateway: a reference gateway for app passwords.\n\nEvery setting is a flag and an environment variable; flags win over the\nenvironment.\n\n"}

// LoadGateway builds apppass-gateway's configuration from args (without
// the program name) and the environment, and checks that the required
// settings are there. It returns flag.ErrHelp after printing --help to out.
func LoadGateway(args []string, getenv func(string) string, out io.Writer) (*Gateway, error) {
	c, err := gateway.load(args, getenv, out)
	if err != nil {
		return nil, err
	}
	for _, required := range []struct{ env, flag, v string }{
		{"APPPASS_GATEWAY_UPSTREAM", "upstream", c.Upstream}, {"APPPASS_GATEWAY_SIDECAR", "sidecar", c.Sidecar},
		{"APPPASS_GATEWAY_KEY", "gateway-key", c.GatewayKey}, {"APPPASS_GATEWAY_PROTOCOL", "protocol", c.Protocol},
	} {
		if required.v == "" {
			return nil, fmt.Errorf("config: %s (--%s) is required", required.env, required.flag)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("config: APPPASS_GATEWAY_TLS_CERT (--tls-cert) and APPPASS_GATEWAY_TLS_KEY (--tls-key) go together")
	}
	return c, nil
}

// httpURL checks an http(s) URL, if one is given.
func httpURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http(s) URL")
	}
	return nil
}
