package config

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestGatewayHelp checks that the gateway's --help lists every setting
// and shows defaults, not what the environment holds (its key).
func TestGatewayHelp(t *testing.T) {
	var out bytes.Buffer
	key := "gw-key-from-the-environment"
	if _, err := LoadGateway([]string{"--help"}, env(map[string]string{"APPPASS_GATEWAY_KEY": key}), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v", err)
	}
	for _, s := range gatewaySettings {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), s.env) {
			t.Errorf("--help does not list %s / --%s", s.env, s.flag)
		}
	}
	if strings.Contains(out.String(), key) {
		t.Errorf("--help shows the gateway key:\n%s", out.String())
	}
}

// TestGatewayErrorsNameTheSetting checks that a bad or missing setting is
// named, on one line, without the key's value.
func TestGatewayErrorsNameTheSetting(t *testing.T) {
	key := "gw-key-secret-secret"
	good := map[string]string{"APPPASS_GATEWAY_UPSTREAM": "http://127.0.0.1:9000", "APPPASS_GATEWAY_KEY": key, "APPPASS_GATEWAY_PROTOCOL": "eas"}
	if _, err := LoadGateway(nil, env(good), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--upstream", ""}, "APPPASS_GATEWAY_UPSTREAM (--upstream) is required"},
		{[]string{"--upstream", "ftp://x"}, "APPPASS_GATEWAY_UPSTREAM"},
		{[]string{"--sidecar", "127.0.0.1:8080"}, "APPPASS_GATEWAY_SIDECAR"},
		{[]string{"--gateway-key", ""}, "APPPASS_GATEWAY_KEY (--gateway-key) is required"},
		{[]string{"--protocol", "imap"}, "APPPASS_GATEWAY_PROTOCOL"},
		{[]string{"--listen", "8443"}, "APPPASS_GATEWAY_LISTEN"},
		{[]string{"--session-ttl", "25h"}, "APPPASS_GATEWAY_SESSION_TTL"},
		{[]string{"--tls-key", "k.pem"}, "go together"},
		{[]string{"stray"}, "unexpected argument"},
	} {
		_, err := LoadGateway(tc.args, env(good), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), key) {
			t.Errorf("%v: error %v, want one line naming %s without the key", tc.args, err, tc.want)
		}
	}
}
