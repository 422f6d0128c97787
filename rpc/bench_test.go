package rpc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/apppass/apppass"
)

// BenchmarkDecodeAndDispatch measures parsing a request, checking its
// params and routing it, up to (not including) the service call: the
// method is getApps, which touches no storage.
func BenchmarkDecodeAndDispatch(b *testing.B) {
	cat, _ := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	s := &Server{Service: &apppass.Service{Apps: cat}, Auth: &Authenticator{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c := caller{Caller: apppass.Caller{Role: apppass.RoleAdmin, Name: "bench"}}
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"appPasswords.getApps","params":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		out, _ := s.handleMessage(context.Background(), c, body, false)
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

// BenchmarkServiceKey measures a gateway key check (constant time over all keys).
func BenchmarkServiceKey(b *testing.B) {
	a := &Authenticator{ServiceKeys: []apppass.ServiceKey{{Name: "a", Role: apppass.RoleGateway, Secret: "0123456789abcdef0123"}, {Name: "b", Role: apppass.RoleAdmin, Secret: "fedcba9876543210fedc"}}}
	for b.Loop() {
		if _, err := a.Authenticate("fedcba9876543210fedc"); err != nil {
			b.Fatal(err)
		}
	}
}
