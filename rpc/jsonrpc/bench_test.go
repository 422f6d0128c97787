package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/internal/edge"
)

// keysOnly stands in for rpc.Callers (which imports this package):
// the benchmark's caller is a service key, which stays valid.
type keysOnly struct{}

func (keysOnly) Identify(string) (edge.Caller, error) {
	return edge.Caller{}, errors.New("the benchmark authenticates no one")
}
func (keysOnly) StillValid(c edge.Caller) bool { return c.Expires.IsZero() }

// BenchmarkDecodeAndDispatch measures parsing a request, checking its
// params and routing it, up to (not including) the service call: the
// method is getApps, which touches no storage.
func BenchmarkDecodeAndDispatch(b *testing.B) {
	cat, _ := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	h := Handler{Service: &apppass.Service{Apps: cat}, Auth: keysOnly{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c := edge.Caller{Caller: apppass.Caller{Role: apppass.RoleAdmin, Name: "bench"}}
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"appPasswords.getApps","params":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		out, _ := h.handleMessage(context.Background(), c, body, false)
		if _, err := json.Marshal(out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateParams measures strict decoding of authenticate's params.
func BenchmarkAuthenticateParams(b *testing.B) {
	raw := json.RawMessage(`{"login":"alice@example.com","password":"abcd-efgh-ijkl-mnop","protocol":"imap","ip":"192.0.2.1","device":"iPhone","userAgent":"Mail/1.0"}`)
	b.ReportAllocs()
	for b.Loop() {
		var a apppass.LoginAttempt
		if err := decodeParams(raw, str("login", &a.Login, true), str("password", &a.Password, true), str("protocol", &a.Protocol, true),
			str("ip", &a.IP, false), str("device", &a.Device, false), str("userAgent", &a.UserAgent, false)); err != nil {
			b.Fatal(err)
		}
	}
}
