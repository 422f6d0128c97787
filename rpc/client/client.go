// Package client is the one JSON-RPC client of apppassd that the CLI, the
// gateway and the bench use: a call over HTTP POST /rpc with a bearer, its
// reply read within a bound, and one error type, *Error, for what the
// sidecar answers. Another transport (the bench's WebSocket) frames calls
// with MarshalRequest and reads replies with DecodeReply.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
)

// DefaultMaxReply bounds a reply when Client.MaxReply is 0: apppassd's
// largest (a full list) is far below it, and a hostile or broken server
// cannot make the client hold more.
const DefaultMaxReply = 1 << 20

// Client calls one JSON-RPC endpoint with one bearer. Its zero fields take
// defaults; it is safe for concurrent use, and clients that share HTTP
// share its connections.
type Client struct {
	URL    string       // the endpoint, e.g. http://127.0.0.1:8080/rpc
	Bearer string       // sent as "Authorization: Bearer …"; "" sends none
	HTTP   *http.Client // nil: HTTPClient(nil, 0)
	// MaxReply is the most bytes of a reply read (0: DefaultMaxReply); a
	// longer one is an error.
	MaxReply int64
}

// defaultHTTP serves clients without an HTTP of their own.
var defaultHTTP = HTTPClient(nil, 0)

// HTTPClient returns an http.Client for calls to apppassd over transport
// (nil: http.DefaultTransport) that gives up after timeout (0: only when
// the context ends). It never follows a redirect: that would send the
// bearer, or a password in the body, somewhere else.
func HTTPClient(transport http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     transport,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// httpID is the id of every call over HTTP: one call per request, so one
// id serves, and a reply saved by Raw answers any later call.
const httpID = 1

// Call calls method with params and decodes the result into out (unless
// out is nil). An error the sidecar answers comes back as *Error; anything
// else (unreachable, timed out, an HTTP error without a JSON-RPC reply, a
// reply too long or to another id) as another error. The request body,
// which may hold a password, is wiped after use and never appears in an
// error.
func (c *Client) Call(ctx context.Context, method string, params, out any) error {
	_, err := c.call(ctx, method, params, out)
	return err
}

// Raw is Call returning the reply's bytes as they came instead of decoding
// its result: for a reference server that answers the same bytes.
func (c *Client) Raw(ctx context.Context, method string, params any) ([]byte, error) {
	return c.call(ctx, method, params, nil)
}

// authenticateParams are the params of appPasswords.authenticate.
type authenticateParams struct {
	Login     string `json:"login"`
	Password  string `json:"password"`
	Protocol  string `json:"protocol"`
	IP        string `json:"ip,omitempty"`
	Device    string `json:"device,omitempty"`
	UserAgent string `json:"userAgent,omitempty"`
}

// Authenticate calls appPasswords.authenticate, a gateway's one call: a
// refusal is an error that errors.Is apppass.ErrRejected.
func (c *Client) Authenticate(ctx context.Context, a apppass.LoginAttempt) (*apppass.Authenticated, error) {
	var res apppass.Authenticated
	err := c.Call(ctx, "appPasswords.authenticate", authenticateParams(a), &res)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

func (c *Client) call(ctx context.Context, method string, params, out any) ([]byte, error) {
	body, err := MarshalRequest(httpID, method, params)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.Bearer)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		// url.Error repeats the method and URL around the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("calling %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	raw, err := readBounded(resp.Body, c.maxReply())
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", c.URL, err)
	}
	result, err := decode(raw, httpID)
	var rpcErr *Error
	switch {
	case errors.As(err, &rpcErr):
		return nil, rpcErr // whatever the HTTP status
	case errors.Is(err, errNotJSONRPC):
		return nil, fmt.Errorf("%s answered HTTP %d without a JSON-RPC response", c.URL, resp.StatusCode)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", c.URL, err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s answered HTTP %d", c.URL, resp.StatusCode)
	}
	if err := decodeResult(method, result, out); err != nil {
		return nil, err
	}
	return raw, nil
}

func (c *Client) maxReply() int64 {
	if c.MaxReply > 0 {
		return c.MaxReply
	}
	return DefaultMaxReply
}

// errTooLong is a reply over the bound.
var errTooLong = errors.New("reply too long")

// readBounded reads r to its end, or fails once it holds more than limit
// bytes.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", errTooLong, limit)
	}
	return raw, nil
}

// request is a call's envelope.
type request struct {
	JSONRPC string `json:"jsonrpc"`
	ID      int64  `json:"id"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

// MarshalRequest returns the envelope of a call of method with params.
func MarshalRequest(id int64, method string, params any) ([]byte, error) {
	return json.Marshal(request{JSONRPC: "2.0", ID: id, Method: method, Params: params})
}

// reply is a reply's envelope.
type reply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
}

// errNotJSONRPC is an answer that is not a JSON-RPC reply.
var errNotJSONRPC = errors.New("not a JSON-RPC response")

// DecodeReply reads raw as the reply to the call with id: the error it
// holds as *Error, or else its result decoded into out (unless out is
// nil).
func DecodeReply(raw []byte, id int64, method string, out any) error {
	result, err := decode(raw, id)
	if err != nil {
		return err
	}
	return decodeResult(method, result, out)
}

// decode returns the result of the reply raw to the call with id, or its
// error as *Error. An error may come with the id null: the server could
// not read the call's.
func decode(raw []byte, id int64) (json.RawMessage, error) {
	var r reply
	if err := json.Unmarshal(raw, &r); err != nil || (r.Error == nil && r.Result == nil) {
		return nil, errNotJSONRPC
	}
	var want [20]byte
	if !bytes.Equal(r.ID, strconv.AppendInt(want[:0], id, 10)) && !(r.Error != nil && string(r.ID) == "null") {
		return nil, fmt.Errorf("a reply to id %.40s, not to id %d", r.ID, id)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return r.Result, nil
}

func decodeResult(method string, result json.RawMessage, out any) error {
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(result, out); err != nil {
		return fmt.Errorf("%s: unexpected result: %w", method, err)
	}
	return nil
}

// Error is an error the sidecar answered.
type Error struct {
	Code    int64           `json:"code"` // one of errcode's
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"` // errcode.Data, or absent
}

func (e *Error) Error() string { return fmt.Sprintf("error %d: %s", e.Code, e.Message) }

// Kind is the domain's kind of the error (KindInternal for a code no kind
// has).
func (e *Error) Kind() apppass.Kind { return errcode.KindOf(e.Code) }

// Is makes errors.Is(err, apppass.ErrRejected), or any other
// *apppass.Error, hold for an answer of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*apppass.Error)
	return ok && t.Kind == e.Kind()
}

// RetryAfter is, for a Limit error, how long the sidecar asks to wait
// before trying again (0: it did not say).
func (e *Error) RetryAfter() time.Duration {
	var d errcode.Data
	if e.Code != errcode.Limit || json.Unmarshal(e.Data, &d) != nil {
		return 0
	}
	return time.Duration(d.RetryAfter) * time.Second
}
