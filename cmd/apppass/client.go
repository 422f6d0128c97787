package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/rpc/client"
)

// defaultURL is where apppassd listens by default.
const defaultURL = "http://127.0.0.1:8080"

// defaultTimeout bounds one call to the sidecar: a login should rather fail
// as temporarily unavailable than hang.
const defaultTimeout = 5 * time.Second

// sidecar is how to reach apppassd.
type sidecar struct {
	base     string // APPPASS_URL without a trailing slash
	endpoint string // …/rpc
	bearer   string
	timeout  time.Duration
}

// errConfig marks a problem with the environment apppass runs in, as
// opposed to a failure of the sidecar.
var errConfig = errors.New("configuration")

// bearerSource says where a subcommand's bearer credential comes from: a
// variable, or else a file named by another (secrets are better kept out of
// configuration files and process environments), or else (dataFile set) the
// file apppassd generated in its data dir on the embedded default.
type bearerSource struct {
	env, fileEnv, dataFile, what string
}

// gatewayKey is the bearer of gateway subcommands (checkpassword). Dovecot
// runs it in its own directory, so it never looks in a data dir.
var gatewayKey = bearerSource{env: "APPPASS_GATEWAY_KEY", fileEnv: "APPPASS_GATEWAY_KEY_FILE", what: "gateway key"}

// adminKey is the bearer of the admin subcommands; demoGatewayKey is
// authenticate's first choice.
var (
	adminKey       = bearerSource{env: "APPPASS_ADMIN_KEY", fileEnv: "APPPASS_ADMIN_KEY_FILE", dataFile: datadir.AdminKeyFile, what: "admin key"}
	demoGatewayKey = bearerSource{env: "APPPASS_GATEWAY_KEY", fileEnv: "APPPASS_GATEWAY_KEY_FILE", dataFile: datadir.GatewayKeyFile, what: "gateway key"}
)

// keyError is a credential apppass could not find or read: a configuration
// problem (errors.Is errConfig), which the admin subcommands tell apart
// from others as "cannot authenticate to apppassd".
type keyError struct{ msg string }

func (e *keyError) Error() string        { return errConfig.Error() + ": " + e.msg }
func (e *keyError) Is(target error) bool { return target == errConfig }

// dataDir is apppassd's data dir as the embedded default sets it.
func dataDir(getenv func(string) string) string {
	if d := getenv("APPPASS_DATA_DIR"); d != "" {
		return d
	}
	return "./data"
}

// read returns the credential, or "" when none of its places holds one. A
// file that is named but unreadable is an error; a data-dir file that does
// not exist is not.
func (b bearerSource) read(getenv func(string) string) (string, error) {
	if v := strings.TrimSpace(getenv(b.env)); v != "" {
		return v, nil
	}
	if b.fileEnv != "" {
		if path := getenv(b.fileEnv); path != "" {
			raw, err := os.ReadFile(path)
			if err != nil {
				return "", &keyError{fmt.Sprintf("%s: %v", b.fileEnv, err)}
			}
			return strings.TrimSpace(string(raw)), nil
		}
	}
	if b.dataFile != "" {
		path := filepath.Join(dataDir(getenv), b.dataFile)
		raw, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", &keyError{fmt.Sprintf("reading the %s: %v", b.what, err)}
		}
		return strings.TrimSpace(string(raw)), nil
	}
	return "", nil
}

// missing explains where a credential was looked for.
func missing(getenv func(string) string, sources ...bearerSource) error {
	var whats, places []string
	for _, b := range sources {
		whats = append(whats, b.what)
		places = append(places, b.env)
		if b.fileEnv != "" {
			places = append(places, b.fileEnv)
		}
	}
	msg := fmt.Sprintf("no %s: set %s", strings.Join(whats, " or "), strings.Join(places, " or "))
	var files []string
	for _, b := range sources {
		if b.dataFile != "" {
			files = append(files, filepath.Join(dataDir(getenv), b.dataFile))
		}
	}
	if len(files) > 0 {
		msg += fmt.Sprintf(" (%s not found: APPPASS_DATA_DIR names apppassd's data dir)", strings.Join(files, ", "))
	}
	return &keyError{msg}
}

// sidecarFromEnv reads APPPASS_URL, the bearer (from the first of bearers
// that holds one) and APPPASS_TIMEOUT.
func sidecarFromEnv(getenv func(string) string, bearers ...bearerSource) (*sidecar, error) {
	s, err := endpointFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	for _, b := range bearers {
		if s.bearer, err = b.read(getenv); err != nil {
			return nil, err
		}
		if s.bearer != "" {
			if strings.ContainsAny(s.bearer, "\r\n\x00") {
				return nil, &keyError{fmt.Sprintf("the %s contains a line break", b.what)}
			}
			return s, nil
		}
	}
	return nil, missing(getenv, bearers...)
}

// endpointFromEnv reads APPPASS_URL and APPPASS_TIMEOUT: a sidecar without
// a bearer, enough for the public /healthz and /readyz.
func endpointFromEnv(getenv func(string) string) (*sidecar, error) {
	base := getenv("APPPASS_URL")
	if base == "" {
		base = defaultURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: APPPASS_URL must be an http:// or https:// URL, got %q", errConfig, base)
	}
	s := &sidecar{base: strings.TrimRight(base, "/"), timeout: defaultTimeout}
	s.endpoint = s.base + "/rpc"
	if v := getenv("APPPASS_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: APPPASS_TIMEOUT must be a positive duration such as 5s, got %q", errConfig, v)
		}
		s.timeout = d
	}
	return s, nil
}

// call makes one JSON-RPC call, within the timeout, and decodes the
// result into out. A JSON-RPC error comes back as *client.Error; anything
// else (the sidecar unreachable, a timeout, an HTTP error without a
// JSON-RPC answer) as another error.
func (s *sidecar) call(ctx context.Context, method string, params, out any) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.rpc().Call(ctx, method, params, out)
}

// authenticate calls appPasswords.authenticate within the timeout; a
// refusal errors.Is apppass.ErrRejected.
func (s *sidecar) authenticate(a apppass.LoginAttempt) (*apppass.Authenticated, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.rpc().Authenticate(ctx, a)
}

func (s *sidecar) rpc() *client.Client {
	return &client.Client{URL: s.endpoint, Bearer: s.bearer, HTTP: s.client()}
}

// client is the HTTP client of every request to the sidecar: a connection
// each (a CLI run makes one or two calls), no proxy.
func (s *sidecar) client() *http.Client {
	return client.HTTPClient(&http.Transport{Proxy: nil, DisableKeepAlives: true, ResponseHeaderTimeout: s.timeout}, 0)
}

// get fetches one of the sidecar's public paths (/healthz, /readyz),
// without a bearer, and returns the status and body (at most 64 KiB).
func (s *sidecar) get(ctx context.Context, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, fmt.Errorf("calling %s: %w", s.base+path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer of %s: %w", s.base+path, err)
	}
	return resp.StatusCode, body, nil
}
