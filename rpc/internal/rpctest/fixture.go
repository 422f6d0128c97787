// Package rpctest is what the tests of rpc and its edges share: a real
// rpc.Server on a real store served over loopback HTTP (Fixture), clients
// for POST /rpc, WebSocket and the OX API, checks of JSON-RPC answers, the
// fuzz targets' fixture and a fixture with NATS events and the provisioning
// webhook. The test files dot-import it.
package rpctest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/storage/ferretdb"
)

const (
	GatewaySecret = "gateway-secret-123456"
	AdminSecret   = "admin-secret-1234567"
)

var (
	Alice = apppass.User{ContextID: 1, UserID: 5, Login: "alice@example.com"}
	Bob   = apppass.User{ContextID: 1, UserID: 6, Login: "bob@example.com"}
	// carol has alice's user id in another context: a different user.
	Carol = apppass.User{ContextID: 2, UserID: 5, Login: "carol@example.org"}
)

var (
	PasswordRE = regexp.MustCompile(`^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$`)
	UUIDRE     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

// fixture is a real rpc.Server on a real store, served over loopback HTTP.
type Fixture struct {
	URL      string
	Server   *rpc.Server
	Service  *apppass.Service
	Tokens   *apppass.UserTokens
	TokenKey []byte
	Digester *apppass.Digester
	Store    apppass.Store
	// authOffset moves the Authenticator's clock (nanoseconds).
	AuthOffset atomic.Int64
}

type FixtureOptions struct {
	// mongoURI puts the fixture on the MongoDB adapter instead (FerretDB
	// from stoppableStore, which the test may stop).
	MongoURI   string
	MaxPerUser int
	// ready replaces the store's Ping as the readiness check.
	Ready func(context.Context) error
}

func RandomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func NewFixture(t testing.TB, o FixtureOptions) *Fixture {
	t.Helper()
	if o.MaxPerUser == 0 {
		o.MaxPerUser = 50
	}
	var store apppass.Store
	switch {
	case o.MongoURI != "":
		store = testenv.MongoStoreAt(t, o.MongoURI, testenv.NewDatabaseName())
	default:
		store = testenv.Store(t)
	}
	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	digester, err := apppass.NewDigester(RandomBytes(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	tokenKey := RandomBytes(t, 32)
	tokens, err := apppass.NewUserTokens(tokenKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &Fixture{Tokens: tokens, TokenKey: tokenKey, Digester: digester, Store: store}
	// A clock that moves one second per reading, so that every password
	// has its own creation time and "newest first" is well defined.
	var tick atomic.Int64
	base := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	f.Service = &apppass.Service{
		Store: store, Apps: apps, Digester: digester, MaxPerUser: o.MaxPerUser,
		Now: func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) },
	}
	ready := o.Ready
	if ready == nil {
		ready = func(ctx context.Context) error { return store.Ping(ctx) }
	}
	f.Server = &rpc.Server{
		Service: f.Service,
		Auth: &rpc.Callers{
			Tokens: tokens,
			ServiceKeys: []apppass.ServiceKey{
				{Name: "gw", Role: apppass.RoleGateway, Secret: GatewaySecret},
				{Name: "adm", Role: apppass.RoleAdmin, Secret: AdminSecret},
			},
			Now: func() time.Time { return time.Now().Add(time.Duration(f.AuthOffset.Load())) },
		},
		Ready:  ready,
		Logger: testenv.Quiet(),
	}
	hs := httptest.NewServer(f.Server.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Server.CloseWebSockets(ctx)
		hs.Close()
	})
	f.URL = hs.URL
	return f
}

// token mints a user token valid for an hour.
func (f *Fixture) Token(u apppass.User, amr ...string) string {
	return f.Tokens.Mint(u, time.Hour, time.Now(), amr...)
}

// rpcError is a JSON-RPC error object as it arrives.
type RPCError struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// errorData is our errors' "data" member.
type ErrorData struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
	OX     string `json:"ox"`
}

// response is a JSON-RPC response as it arrives; Raw keeps the bytes.
type Response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *RPCError       `json:"error"`
	Raw     json.RawMessage `json:"-"`
}

// parseResponse decodes one response object and checks its envelope:
// "jsonrpc":"2.0", an id, and exactly one of result and error.
func ParseResponse(t testing.TB, raw []byte) Response {
	t.Helper()
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, raw)
	}
	_, hasResult := members["result"]
	_, hasError := members["error"]
	_, hasID := members["id"]
	if hasResult == hasError || !hasID || len(members) != 3 {
		t.Fatalf("response must have jsonrpc, id and exactly one of result and error: %s", raw)
	}
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("decoding response: %v: %s", err, raw)
	}
	if r.JSONRPC != "2.0" {
		t.Fatalf(`response "jsonrpc" = %q, want "2.0": %s`, r.JSONRPC, raw)
	}
	r.Raw = raw
	return r
}

func ParseBatch(t testing.TB, raw []byte) []Response {
	t.Helper()
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatalf("batch answer is not a JSON array: %v: %s", err, raw)
	}
	out := make([]Response, len(items))
	for i, item := range items {
		out[i] = ParseResponse(t, item)
	}
	return out
}

// postAsync is post for other goroutines: it reports instead of failing.
func (f *Fixture) PostAsync(authorization, body string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, f.URL+"/rpc", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, out, err := roundTrip(req, "", authorization)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, out, nil
}

// roundTrip sends req with the Content-Type and Authorization headers
// given (none where "") and reads the whole answer.
func roundTrip(req *http.Request, contentType, authorization string) (*http.Response, []byte, error) {
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp, raw, err
}

// post sends body to POST /rpc with an Authorization header (none if "").
func (f *Fixture) Post(t testing.TB, authorization string, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.URL+"/rpc", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, out, err := roundTrip(req, "application/json", authorization)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// request builds a request with id 1; params "" leaves them out.
func Request(method, params string) string {
	m, _ := json.Marshal(method)
	if params == "" {
		return `{"jsonrpc":"2.0","id":1,"method":` + string(m) + `}`
	}
	return `{"jsonrpc":"2.0","id":1,"method":` + string(m) + `,"params":` + params + `}`
}

// call makes one call with id 1 as bearer over POST /rpc and expects
// HTTP 200 and a well-formed answer for id 1.
func (f *Fixture) Call(t testing.TB, bearer, method, params string) Response {
	t.Helper()
	status, body := f.Post(t, "Bearer "+bearer, Request(method, params))
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d, want 200: %s", method, status, body)
	}
	r := ParseResponse(t, body)
	if string(r.ID) != "1" {
		t.Fatalf("%s: id %s, want 1", method, r.ID)
	}
	return r
}

// ok returns the result of r, failing on an error answer.
func OK(t testing.TB, r Response) json.RawMessage {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("want a result, got error %d %q %s", r.Error.Code, r.Error.Message, r.Error.Data)
	}
	return r.Result
}

// wantError checks r is an error with code and returns its data.
func WantError(t testing.TB, r Response, code int64) ErrorData {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("want error %d, got result %s", code, r.Result)
	}
	if r.Error.Code != code {
		t.Fatalf("error code %d (%q), want %d", r.Error.Code, r.Error.Message, code)
	}
	if r.Error.Message == "" {
		t.Fatalf("error %d has no message", code)
	}
	var d ErrorData
	if len(r.Error.Data) > 0 {
		if err := json.Unmarshal(r.Error.Data, &d); err != nil {
			t.Fatalf("error data %s: %v", r.Error.Data, err)
		}
	}
	return d
}

// wantInvalid checks r is -32602 naming field.
func WantInvalid(t testing.TB, r Response, field string) ErrorData {
	t.Helper()
	d := WantError(t, r, errcode.InvalidParams)
	if d.Field != field {
		t.Fatalf("data.field = %q, want %q (%s)", d.Field, field, r.Raw)
	}
	if d.Reason == "" {
		t.Fatalf("data.reason is empty: %s", r.Raw)
	}
	return d
}

func Decode[T any](t testing.TB, raw json.RawMessage) T {
	t.Helper()
	var v T
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, raw, err)
	}
	return v
}

// keysOf returns the member names of a JSON object, sorted.
func KeysOf(t testing.TB, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not an object: %s", raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func WantKeys(t testing.TB, raw json.RawMessage, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := KeysOf(t, raw); !slices.Equal(got, want) {
		t.Fatalf("members %v, want %v: %s", got, want, raw)
	}
}

type Created struct {
	UUID     string `json:"uuid"`
	Login    string `json:"login"`
	Password string `json:"password"`
	NewLogin bool   `json:"newLogin"`
	AppScope string `json:"appScope"`
	Name     string `json:"name"`
	Created  string `json:"created"`
	Limits
	Settings []apppass.Setting `json:"settings"`
}

// limits are the per-password limits add and list show (null when unset).
type Limits struct {
	Expires    *string  `json:"expires"`
	IdleExpiry *string  `json:"idleExpiry"`
	AllowedIPs []string `json:"allowedIPs"`
}

type Listed struct {
	UUID      string             `json:"uuid"`
	Name      string             `json:"name"`
	AppScope  string             `json:"appScope"`
	Created   string             `json:"created"`
	LastLogin *apppass.LastLogin `json:"lastLogin"`
	Limits
}

type Authenticated struct {
	UUID      string   `json:"uuid"`
	ContextID int64    `json:"contextId"`
	UserID    int64    `json:"userId"`
	Login     string   `json:"login"`
	AppScope  string   `json:"appScope"`
	Scopes    []string `json:"scopes"`
}

func Params(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (f *Fixture) Add(t testing.TB, bearer, appScope, appName string) Created {
	t.Helper()
	r := f.Call(t, bearer, "appPasswords.add", Params(t, map[string]string{"appScope": appScope, "appName": appName}))
	return Decode[Created](t, OK(t, r))
}

func (f *Fixture) List(t testing.TB, bearer string) []Listed {
	t.Helper()
	return Decode[[]Listed](t, OK(t, f.Call(t, bearer, "appPasswords.list", "")))
}

func (f *Fixture) ListRaw(t testing.TB, bearer string) string {
	t.Helper()
	return string(OK(t, f.Call(t, bearer, "appPasswords.list", "")))
}

func (f *Fixture) Authenticate(t testing.TB, login, password, protocol string) Response {
	t.Helper()
	return f.Call(t, GatewaySecret, "appPasswords.authenticate",
		Params(t, map[string]string{"login": login, "password": password, "protocol": protocol}))
}

// rfc3339UTC parses an RFC 3339 timestamp and checks it is in UTC.
func RFC3339UTC(t testing.TB, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("timestamp %q is not RFC 3339: %v", s, err)
	}
	if !strings.HasSuffix(s, "Z") {
		t.Fatalf("timestamp %q is not UTC", s)
	}
	return ts
}

// stallingReader yields n bytes of filler, then blocks until released: a
// request body whose end the server can never reach.
type StallingReader struct {
	N       int
	Release chan struct{}
}

func (r *StallingReader) Read(p []byte) (int, error) {
	if r.N == 0 {
		<-r.Release
		return 0, errors.New("released")
	}
	k := min(len(p), r.N)
	for i := range p[:k] {
		p[i] = ' '
	}
	r.N -= k
	return k, nil
}

// stoppableStore starts a FerretDB of the test's own, which the test may
// stop (once) to see how the server answers without MongoDB.
func StoppableStore(t *testing.T) (uri string, stop func()) {
	t.Helper()
	e, err := ferretdb.Start(t.TempDir(), testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(e.Stop) }
	t.Cleanup(stop)
	return e.URI, stop
}
