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
	"strings"
	"time"
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
	endpoint string // …/rpc
	bearer   string
	timeout  time.Duration
}

// errConfig marks a problem with the environment apppass runs in, as
// opposed to a failure of the sidecar.
var errConfig = errors.New("configuration")

// bearerSource says where a subcommand's bearer credential comes from: a
// variable, or else a file named by another (secrets are better kept out of
// configuration files and process environments).
type bearerSource struct {
	env, fileEnv, what string
}

// gatewayKey is the bearer of gateway subcommands (checkpassword).
var gatewayKey = bearerSource{env: "APPPASS_GATEWAY_KEY", fileEnv: "APPPASS_GATEWAY_KEY_FILE", what: "gateway key"}

// sidecarFromEnv reads APPPASS_URL, the bearer (from the variable or file
// bearer names) and APPPASS_TIMEOUT.
func sidecarFromEnv(getenv func(string) string, bearer bearerSource) (*sidecar, error) {
	base := getenv("APPPASS_URL")
	if base == "" {
		base = defaultURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: APPPASS_URL must be an http:// or https:// URL, got %q", errConfig, base)
	}
	s := &sidecar{endpoint: strings.TrimRight(base, "/") + "/rpc", timeout: defaultTimeout}
	s.bearer = strings.TrimSpace(getenv(bearer.env))
	if s.bearer == "" {
		if path := getenv(bearer.fileEnv); path != "" {
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", errConfig, bearer.fileEnv, err)
			}
			s.bearer = strings.TrimSpace(string(raw))
		}
	}
	if s.bearer == "" {
		return nil, fmt.Errorf("%w: no %s: set %s or %s", errConfig, bearer.what, bearer.env, bearer.fileEnv)
	}
	if strings.ContainsAny(s.bearer, "\r\n\x00") {
		return nil, fmt.Errorf("%w: the %s contains a line break", errConfig, bearer.what)
	}
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
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, ResponseHeaderTimeout: s.timeout},
		// A redirect would carry the password elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
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
