package gatewayauth_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/apppass/apppass/rpc"
	"github.com/apppass/apppass/rpc/gatewayauth"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

func FuzzNginxMailAuth(f *testing.F) {
	fx := NewFuzzFixture(f)
	f.Fuzz(func(t *testing.T, user, pass, protocol, method, clientIP, attempt string) {
		fx.EnsurePassword(t)
		user, pass = fx.Fill(user), fx.Fill(pass)
		if !ValidHeader(user, pass, protocol, method, clientIP, attempt) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/auth/mail", nil)
		for k, v := range map[string]string{"Auth-User": user, "Auth-Pass": pass, "Auth-Protocol": protocol,
			"Auth-Method": method, "Client-IP": clientIP, "Auth-Login-Attempt": attempt, gatewayauth.KeyHeader: GatewaySecret} {
			req.Header.Set(k, v)
		}
		w := fx.Serve(req)
		status := w.Header().Get("Auth-Status")
		if w.Code != http.StatusOK || status == "" {
			t.Fatalf("HTTP %d, Auth-Status %q", w.Code, status)
		}
		_, hasBackend := rpc.DefaultMailBackends()[protocol]
		_, ipErr := netip.ParseAddr(clientIP)
		if hasBackend && (clientIP == "" || ipErr == nil) && strings.HasPrefix(status, "Temporary") {
			t.Fatalf("input caused %q (user %q protocol %q)", status, user, protocol)
		}
		if status != "OK" {
			return
		}
		login, _ := url.PathUnescape(user)
		password, _ := url.PathUnescape(pass)
		if !fx.FuzzLogin(login, password) || !hasBackend || w.Header().Get("Auth-Server") == "" || w.Header().Get("Auth-Port") == "" {
			t.Fatalf("OK for user %q pass %q protocol %q: %v", user, pass, protocol, w.Header())
		}
		if w.Header().Get("X-AppPass-UUID") != fx.UUID {
			t.Fatalf("OK names uuid %q, want %q", w.Header().Get("X-AppPass-UUID"), fx.UUID)
		}
	})
}

func FuzzNginxBasicAuth(f *testing.F) {
	fx := NewFuzzFixture(f)
	f.Fuzz(func(t *testing.T, authorization, protocol, realIP, device string) {
		fx.EnsurePassword(t)
		authorization = fx.Fill(authorization)
		if !ValidHeader(authorization, protocol, realIP, device) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/auth/basic", nil)
		for k, v := range map[string]string{"Authorization": authorization, "X-AppPass-Protocol": protocol,
			"X-Real-IP": realIP, "X-AppPass-Device": device, gatewayauth.KeyHeader: GatewaySecret} {
			req.Header.Set(k, v)
		}
		w := fx.Serve(req)
		switch w.Code {
		case http.StatusOK:
			login, password, ok := req.BasicAuth()
			if !ok || !fx.FuzzLogin(login, password) || w.Header().Get("X-AppPass-UUID") != fx.UUID {
				t.Fatalf("200 for Authorization %q protocol %q: %v", authorization, protocol, w.Header())
			}
			if got := w.Header().Get("X-AppPass-User"); got != strconv.FormatInt(Alice.UserID, 10) {
				t.Fatalf("200 names user %q", got)
			}
		case http.StatusUnauthorized:
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic realm=") {
				t.Fatalf("401 without a Basic challenge: %v", w.Header())
			}
		case http.StatusTooManyRequests:
			if n, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || n < 1 {
				t.Fatalf("429 with Retry-After %q", w.Header().Get("Retry-After"))
			}
		case http.StatusBadRequest: // the gateway's configuration: no or an unknown protocol
		default:
			t.Fatalf("HTTP %d for Authorization %q protocol %q ip %q: %s", w.Code, authorization, protocol, realIP, w.Body.Bytes())
		}
	})
}
