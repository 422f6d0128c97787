package rpctest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/stdwebhook"
)

// The fuzz targets (in rpc/jsonrpc, rpc/ox, rpc/gatewayauth and
// rpc/provisioning) drive the real handler (on a real store) with what a
// caller controls, and check what must hold for any input: no panic, an
// answer of the documented shape, no internal error, and a refused request
// changes no password. Seed corpora are in testdata/fuzz/<target> of each
// package; inputs may name the fixture's live password and uuid as
// {password} and {uuid} (and {basic}: alice's Basic credentials), which the
// fuzzer could not guess. .ci/run runs each target for a few seconds;
// `go test -run '^$' -fuzz '^FuzzRPCEnvelope$' ./rpc/jsonrpc/` runs one for
// as long as you like.

// fuzzFixture is a fixture with the gateway endpoints' settings, and a
// known password of alice's that every input may use.
type FuzzFixture struct {
	*Fixture
	Handler  http.Handler
	Secret   stdwebhook.Secret
	Password string
	UUID     string
	Bearers  []string // user, app-password session, gateway, admin
}

func NewFuzzFixture(f *testing.F) *FuzzFixture {
	fx := &FuzzFixture{Fixture: NewFixture(f, FixtureOptions{})}
	fx.Secret, _ = stdwebhook.ParseSecret(stdwebhook.GenerateSecret())
	fx.Server.MailBackends = rpc.DefaultMailBackends()
	fx.Server.Provisioning = &rpc.Provisioning{Secrets: []stdwebhook.Secret{fx.Secret}, IDs: fx.Store, RevokeOnPasswordChange: true}
	fx.Handler = fx.Server.Handler()
	fx.Bearers = []string{fx.Token(Alice), fx.Token(Alice, "app_password"), GatewaySecret, AdminSecret}
	fx.EnsurePassword(f)
	return fx
}

// ensurePassword gives alice the known password again if an input removed
// it (or made room for it, at her limit).
func (fx *FuzzFixture) EnsurePassword(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	list, err := fx.Service.List(ctx, Alice)
	if err != nil {
		t.Fatal(err)
	}
	if fx.UUID != "" && slices.ContainsFunc(list, func(p apppass.Listed) bool { return p.UUID == fx.UUID }) {
		return
	}
	if len(list) >= fx.Service.MaxPerUser {
		if _, err := fx.Service.RemoveAll(ctx, Alice, nil, apppass.ReasonUser); err != nil {
			t.Fatal(err)
		}
	}
	added, err := fx.Service.Add(ctx, Alice, apppass.AddRequest{AppScope: "mail", AppName: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	fx.Password, fx.UUID = added.Password, added.UUID
}

// fill puts the live password and uuid where an input names them, and
// {basic} for alice's Basic credentials with it.
func (fx *FuzzFixture) Fill(s string) string {
	basic := base64.StdEncoding.EncodeToString([]byte(Alice.Login + ":" + fx.Password))
	return strings.NewReplacer("{password}", fx.Password, "{uuid}", fx.UUID, "{basic}", basic).Replace(s)
}

// snapshot is alice's passwords as the store has them, to compare around
// a refused request.
func (fx *FuzzFixture) Snapshot(t *testing.T) string {
	t.Helper()
	list, err := fx.Service.List(context.Background(), Alice)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(list)
	return string(raw)
}

func (fx *FuzzFixture) Serve(r *http.Request) *httptest.ResponseRecorder {
	r.RemoteAddr = "192.0.2.10:40000"
	w := httptest.NewRecorder()
	fx.Handler.ServeHTTP(w, r)
	return w
}

// knownCodes are the codes errors.go assigns.
var KnownCodes = []int64{errcode.ParseError, errcode.InvalidRequest, errcode.MethodNotFound, errcode.InvalidParams,
	errcode.Internal, errcode.Unauthenticated, errcode.Forbidden, errcode.NotFound, errcode.Rejected, errcode.Limit, errcode.Unavailable}

// checkReply checks one JSON-RPC response object: the envelope, a code
// from the table, never an internal error, and -32602 naming its field.
func CheckReply(t *testing.T, raw []byte) Response {
	t.Helper()
	r := ParseResponse(t, raw)
	if r.Error == nil {
		return r
	}
	if !slices.Contains(KnownCodes, r.Error.Code) {
		t.Fatalf("error code %d is not in errors.go: %s", r.Error.Code, raw)
	}
	if r.Error.Code == errcode.Internal || r.Error.Code == errcode.Unavailable {
		t.Fatalf("input caused %d: %s", r.Error.Code, raw)
	}
	if r.Error.Code == errcode.InvalidParams {
		var d ErrorData
		if err := json.Unmarshal(r.Error.Data, &d); err != nil || d.Field == "" || d.Reason == "" {
			t.Fatalf("-32602 without data.field and data.reason: %s", raw)
		}
	}
	return r
}

// validHeader is what net/http lets through as a header value.
func ValidHeader(vs ...string) bool {
	for _, v := range vs {
		if strings.ContainsAny(v, "\x00\r\n") {
			return false
		}
	}
	return true
}

// fuzzLogin says whether login and password are alice's live ones, in the
// forms authenticate accepts.
func (fx *FuzzFixture) FuzzLogin(login, password string) bool {
	norm := strings.NewReplacer("-", "", " ", "").Replace(strings.ToLower(password))
	return apppass.LoginKey(login) == apppass.LoginKey(Alice.Login) && norm == strings.ReplaceAll(fx.Password, "-", "")
}
