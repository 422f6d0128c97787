package rpc_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc"
)

// discardWriter is a ResponseWriter that keeps only the status and the
// headers (emptied per request), so a benchmark counts what the handler
// allocates, not what a recorder does.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// rewindBody is a request body read again from its start for each request.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

// BenchmarkHotAuthenticate drives apppassd's whole HTTP handler
// (middleware, JSON-RPC, the gateway key, the cache, the metrics) with the
// bench's hot authenticate, in process: a password answered from the
// cache, with apppassd's default throttle, metrics and logs at info.
// -benchmem counts what one call allocates on the server side, net/http's
// own reading and writing aside.
func BenchmarkHotAuthenticate(b *testing.B) {
	store := testenv.Store(b)
	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		b.Fatal(err)
	}
	digester, err := apppass.NewDigester(bytes.Repeat([]byte("p"), 32))
	if err != nil {
		b.Fatal(err)
	}
	cache := apppass.NewAuthCache(5 * time.Minute)
	cache.SetTrusted(true)
	svc := &apppass.Service{Store: store, Apps: apps, Digester: digester, MaxPerUser: 50, Cache: cache,
		Throttle: &apppass.Throttle{Store: store, Policy: apppass.DefaultThrottlePolicy}}
	const gatewayKey = "bench-gateway-key-0123456789"
	srv := &rpc.Server{Service: svc, Logger: testenv.Quiet(),
		Auth:    &rpc.Callers{ServiceKeys: []apppass.ServiceKey{{Name: "gw", Role: apppass.RoleGateway, Secret: gatewayKey}}},
		Metrics: rpc.NewMetrics(rpc.MetricsSources{Cache: cache})}
	h := srv.Handler()
	user := apppass.User{ContextID: 1, UserID: 5, Login: "alice@example.com"}
	created, err := svc.Add(context.Background(), user, apppass.AddRequest{AppScope: "mail", AppName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"appPasswords.authenticate","params":{"login":"` + user.Login +
		`","password":"` + created.Password + `","protocol":"imap","ip":"192.0.2.1"}}`)
	rb := &rewindBody{}
	req, err := http.NewRequest(http.MethodPost, "http://apppass/rpc", rb)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gatewayKey)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	w := &discardWriter{h: http.Header{}}
	serve := func() {
		rb.Reset(body)
		clear(w.h)
		w.status, w.n = 0, 0
		h.ServeHTTP(w, req)
	}
	serve() // the first login records it and fills the cache
	serve()
	if w.status != http.StatusOK || w.n == 0 {
		b.Fatalf("authenticate: HTTP %d, %d bytes", w.status, w.n)
	}
	if hits, _ := cache.Stats(); hits == 0 {
		b.Fatal("the second login was not answered from the cache")
	}
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
	if w.status != http.StatusOK {
		b.Fatalf("authenticate: HTTP %d", w.status)
	}
}
