package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apppass/apppass/config/datadir"
)

// defaultURL is where apppassd listens by default.
const defaultURL = "http://127.0.0.1:8080"

// defaultTimeout bounds one call to the sidecar: a login should rather fail
// as temporarily unavailable than hang.
const defaultTimeout = 5 * time.Second

// JSON-RPC error codes of apppassd that subcommands tell apart (README,
// "Errors").
const (
	codeInvalidParams   = -32602
	codeUnauthenticated = -32001
	codeForbidden       = -32003
	codeRejected        = -32010
	codeLimit           = -32029
	codeUnavailable     = -32050
)

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

// rpcError is an error answered by the sidecar.
type rpcError struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("error %d: %s", e.Code, e.Message) }

// retryAfter returns data.retryAfter (seconds), or 0.
func (e *rpcError) retryAfter() int {
	var d struct {
		RetryAfter int `json:"retryAfter"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.RetryAfter
}

// call makes one JSON-RPC call over HTTP POST and decodes the result into
// out. A JSON-RPC error comes back as *rpcError; anything else (the sidecar
// unreachable, a timeout, an HTTP error without a JSON-RPC answer) as
// another error. The request body, which may hold a password, is wiped
// after use and never appears in an error.
func (s *sidecar) call(ctx context.Context, method string, params, out any) error {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return err
	}
	defer clear(body)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.bearer)
	resp, err := s.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("calling %s: %w", s.endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", s.endpoint, err)
	}
	var reply struct {
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	if err := json.Unmarshal(raw, &reply); err != nil || (reply.Error == nil && reply.Result == nil) {
		return fmt.Errorf("%s answered HTTP %d without a JSON-RPC response", s.endpoint, resp.StatusCode)
	}
	if reply.Error != nil {
		return reply.Error
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d", s.endpoint, resp.StatusCode)
	}
	if out != nil {
		if err := json.Unmarshal(reply.Result, out); err != nil {
			return fmt.Errorf("%s: unexpected result: %w", method, err)
		}
	}
	return nil
}

// client is the HTTP client of every request to the sidecar.
func (s *sidecar) client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, ResponseHeaderTimeout: s.timeout},
		// A redirect would carry the password elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
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
