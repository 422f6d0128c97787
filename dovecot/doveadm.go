// Package dovecot is a client of Dovecot's doveadm HTTP API: kick a user's
// sessions, flush the auth cache. dovecot.Kicker (kicker.go) calls it on the events of
// the APPPASSWORDS stream, durably and at least once.
package dovecot

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIPath is where Dovecot serves the doveadm HTTP API below its
// listener's base URL.
const APIPath = "/doveadm/v1"

// exitNoUser is doveadm's exit code (EX_NOUSER) for a kick that matched no
// session: for us that is success, the user has nothing left to kick.
const exitNoUser = 68

// maxResponse bounds what is read of one doveadm answer.
const maxResponse = 1 << 20

// Client calls one Dovecot's doveadm HTTP API with its API key.
type Client struct {
	endpoint string // base URL + APIPath
	name     string // the base URL, for logs and metrics
	auth     string // the Authorization header value
	http     *http.Client
}

// ParseBaseURL checks a doveadm HTTP listener's base URL (such as
// http://127.0.0.1:8080): http or https, a host, nothing else. It returns
// the URL without a trailing slash.
func ParseBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("%q is not a base URL like http://127.0.0.1:8080", raw)
	}
	if u.User != nil {
		return "", fmt.Errorf("%q holds credentials: give the API key in APPPASS_DOVEADM_API_KEY instead", redact(u))
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", fmt.Errorf("%q has a query or fragment", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("%q has a path: give the listener's base URL, apppassd adds %s itself", raw, APIPath)
	}
	return u.Scheme + "://" + u.Host, nil
}

func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// NewClient returns a client of the doveadm HTTP API at baseURL (see
// ParseBaseURL) with the given API key (doveadm_api_key). hc sets the
// timeout; nil means a 5 s one.
func NewClient(baseURL, apiKey string, hc *http.Client) (*Client, error) {
	base, err := ParseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if apiKey == "" {
		return nil, errors.New("doveadm API key is empty")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return &Client{endpoint: base + APIPath, name: base, http: hc,
		auth: "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(apiKey))}, nil
}

// Name is the base URL, which logs and metrics show (never the key).
func (c *Client) Name() string { return c.name }

// Errors of a doveadm request, by what an operator must do about them.
var (
	// ErrUnreachable: no HTTP answer (refused, timed out, reset).
	ErrUnreachable = errors.New("doveadm unreachable")
	// ErrUnauthorized: 401 or 403, the API key is wrong.
	ErrUnauthorized = errors.New("doveadm refused the API key")
	// ErrFailed: another HTTP status, an answer we cannot read, or a
	// command that failed in Dovecot.
	ErrFailed = errors.New("doveadm failed")
)

// command is one doveadm command of a request: [name, parameters, tag].
type command struct {
	name   string
	params map[string]any
}

// run sends the commands in one request and returns an error if the
// request or any command failed (a kick that found no session excepted).
func (c *Client) run(ctx context.Context, cmds ...command) error {
	body := make([][3]any, len(cmds))
	for i, cmd := range cmds {
		body[i] = [3]any{cmd.name, cmd.params, fmt.Sprint(i)}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// The error names the URL, which holds no secret (ParseBaseURL).
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%w: reading the answer: %v", ErrUnreachable, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w (HTTP %d)", ErrUnauthorized, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%w: HTTP %d", ErrFailed, resp.StatusCode)
	}
	return checkAnswer(answer, cmds)
}

// checkAnswer reads doveadm's answer: one [type, result, tag] per command,
// type "doveadmResponse" or "error" (with an exitCode).
func checkAnswer(answer []byte, cmds []command) error {
	var replies [][]json.RawMessage
	if err := json.Unmarshal(answer, &replies); err != nil {
		return fmt.Errorf("%w: unreadable answer: %v", ErrFailed, err)
	}
	seen := make([]bool, len(cmds))
	for _, r := range replies {
		var typ, tag string
		if len(r) != 3 || json.Unmarshal(r[0], &typ) != nil || json.Unmarshal(r[2], &tag) != nil {
			return fmt.Errorf("%w: unreadable answer %.200s", ErrFailed, answer)
		}
		var i int
		if _, err := fmt.Sscan(tag, &i); err != nil || i < 0 || i >= len(cmds) || fmt.Sprint(i) != tag {
			return fmt.Errorf("%w: answer for unknown tag %q", ErrFailed, tag)
		}
		seen[i] = true
		switch typ {
		case "doveadmResponse":
		case "error":
			var e struct {
				Type     string `json:"type"`
				ExitCode int    `json:"exitCode"`
			}
			_ = json.Unmarshal(r[1], &e)
			if cmds[i].name == "kick" && e.ExitCode == exitNoUser {
				continue // nobody to kick
			}
			return fmt.Errorf("%w: %s: %s exit code %d", ErrFailed, cmds[i].name, orDefault(e.Type, "error"), e.ExitCode)
		default:
			return fmt.Errorf("%w: %s: answer of type %q", ErrFailed, cmds[i].name, typ)
		}
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("%w: no answer for %s", ErrFailed, cmds[i].name)
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

// KickUser ends every session of user on this Dovecot (doveadm kick
// <user>) and flushes its auth cache entries for user. Kicking a user
// without sessions succeeds.
func (c *Client) KickUser(ctx context.Context, user string) error {
	return c.run(ctx, kickUser(user), flushUser(user))
}

// FlushAuthCache drops Dovecot's auth cache entries of user (doveadm auth
// cache flush <user>), so a password created a moment ago is not refused
// from a cached negative answer.
func (c *Client) FlushAuthCache(ctx context.Context, user string) error {
	return c.run(ctx, flushUser(user))
}

// kickUser is doveadm kick for a user name. Dovecot matches the mask
// against its sessions' user names with the wildcards "*" and "?", which
// it cannot escape; a "*" in a login would kick every user, so it is sent
// as "?", which matches the "*" itself (and any other one character there:
// at worst a few same-length names are kicked too, and log in again).
func kickUser(user string) command {
	return command{name: "kick", params: map[string]any{"mask": []string{strings.ReplaceAll(user, "*", "?")}}}
}

func flushUser(user string) command {
	return command{name: "authCacheFlush", params: map[string]any{"user": []string{user}}}
}
