package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/client"
)

// identity is who an app password belongs to, as the sidecar says.
type identity struct {
	UUID      string
	ContextID string
	UserID    string
	Login     string
	Scopes    string // comma-separated
	// Expires is when the password expires (zero: it does not); a session
	// ends then at the latest.
	Expires time.Time
}

// attempt is one login to check with the sidecar.
type attempt struct {
	Login, Password string
	Protocol        string
	IP, UserAgent   string
}

// Outcomes other than success.
var (
	errRejected = errors.New("app password not accepted")
	errSidecar  = errors.New("the sidecar cannot authenticate now")
)

// limitedError is the sidecar's throttle: try again after RetryAfter.
type limitedError struct{ RetryAfter int }

func (e *limitedError) Error() string {
	return fmt.Sprintf("too many failed logins; retry after %d s", e.RetryAfter)
}

// authenticator asks the sidecar whether an app password is good.
type authenticator interface {
	authenticate(ctx context.Context, a attempt) (identity, error)
}

// basicAuth uses the sidecar's nginx auth_request endpoint, GET /auth/basic.
type basicAuth struct {
	endpoint string // http://sidecar/auth/basic
	key      string
	client   *http.Client
}

func (b *basicAuth) authenticate(ctx context.Context, a attempt) (identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint, nil)
	if err != nil {
		return identity{}, err
	}
	req.SetBasicAuth(a.Login, a.Password)
	req.Header.Set("X-AppPass-Gateway-Key", b.key)
	req.Header.Set("X-AppPass-Protocol", a.Protocol)
	if a.IP != "" {
		req.Header.Set("X-Real-IP", a.IP)
	}
	req.Header.Set("User-Agent", a.UserAgent)
	resp, err := b.client.Do(req)
	if err != nil {
		return identity{}, fmt.Errorf("%w: %v", errSidecar, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		h := resp.Header
		id := identity{UUID: h.Get("X-AppPass-UUID"), ContextID: h.Get("X-AppPass-Context"), UserID: h.Get("X-AppPass-User"),
			Login: h.Get("X-AppPass-Login"), Scopes: h.Get("X-AppPass-Scopes")}
		if v := h.Get("X-AppPass-Expires"); v != "" {
			if id.Expires, err = time.Parse(time.RFC3339, v); err != nil {
				return identity{}, fmt.Errorf("%w: X-AppPass-Expires %q", errSidecar, v)
			}
		}
		if id.UUID == "" {
			return identity{}, fmt.Errorf("%w: 200 without X-AppPass-UUID", errSidecar)
		}
		return id, nil
	case http.StatusUnauthorized:
		return identity{}, errRejected
	case http.StatusTooManyRequests:
		retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return identity{}, &limitedError{RetryAfter: max(retry, 1)}
	case http.StatusForbidden:
		return identity{}, fmt.Errorf("%w: the sidecar refused the gateway key (403)", errSidecar)
	}
	return identity{}, fmt.Errorf("%w: /auth/basic answered %s", errSidecar, resp.Status)
}

// rpcAuth calls appPasswords.authenticate over JSON-RPC, POST /rpc.
type rpcAuth struct{ rpc *client.Client }

func (r *rpcAuth) authenticate(ctx context.Context, a attempt) (identity, error) {
	res, err := r.rpc.Authenticate(ctx, apppass.LoginAttempt{Login: a.Login, Password: a.Password, Protocol: a.Protocol, IP: a.IP, UserAgent: a.UserAgent})
	var answered *client.Error
	switch {
	case errors.Is(err, apppass.ErrRejected):
		return identity{}, errRejected
	case errors.As(err, &answered) && answered.Kind() == apppass.KindLimit:
		return identity{}, &limitedError{RetryAfter: max(int(answered.RetryAfter().Seconds()), 1)}
	case err != nil:
		return identity{}, fmt.Errorf("%w: %v", errSidecar, err)
	case res.UUID == "":
		return identity{}, fmt.Errorf("%w: no result", errSidecar)
	}
	id := identity{UUID: res.UUID, ContextID: strconv.FormatInt(res.ContextID, 10), UserID: strconv.FormatInt(res.UserID, 10),
		Login: res.Login, Scopes: strings.Join(res.Scopes, ",")}
	if res.Expires != nil {
		id.Expires = *res.Expires
	}
	return id, nil
}

// newAuthenticator returns the client for method ("basic" or "rpc").
func newAuthenticator(method string, sidecar *url.URL, key string) (authenticator, error) {
	// The sidecar answers; it never redirects a credential elsewhere.
	hc := client.HTTPClient(nil, 10*time.Second)
	switch method {
	case "basic":
		return &basicAuth{endpoint: sidecar.JoinPath("auth", "basic").String(), key: key, client: hc}, nil
	case "rpc":
		return &rpcAuth{rpc: &client.Client{URL: sidecar.JoinPath("rpc").String(), Bearer: key, HTTP: hc}}, nil
	}
	return nil, fmt.Errorf("unknown auth method %q (basic or rpc)", method)
}
