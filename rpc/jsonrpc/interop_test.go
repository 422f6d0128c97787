package jsonrpc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
	jsonrpc2ws "github.com/sourcegraph/jsonrpc2/websocket"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

// TestSourcegraphClientOverWebSocket talks to the WebSocket endpoint with
// sourcegraph/jsonrpc2, the client library Go programs reach for, so our
// own stack stays interoperable with it: calls, results, errors with
// their code, and several calls in flight on one connection.
func TestSourcegraphClientOverWebSocket(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	ws := f.DialWS(t, f.Token(Alice))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := jsonrpc2.NewConn(ctx, jsonrpc2ws.NewObjectStream(ws.Conn), nil)
	defer conn.Close()

	var created struct {
		UUID     string `json:"uuid"`
		Password string `json:"password"`
	}
	if err := conn.Call(ctx, "appPasswords.add", map[string]string{"appScope": "mail", "appName": "interop"}, &created); err != nil {
		t.Fatalf("add: %v", err)
	}
	if created.UUID == "" || !PasswordRE.MatchString(created.Password) {
		t.Fatalf("add = %+v", created)
	}
	// Calls in flight at once come back to their callers.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var list []struct {
				UUID string `json:"uuid"`
			}
			err := conn.Call(ctx, "appPasswords.list", nil, &list)
			if err == nil && (len(list) != 1 || list[0].UUID != created.UUID) {
				err = errors.New("list does not hold the added password")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatalf("list: %v", err)
		}
	}
	var rpcErr *jsonrpc2.Error
	err := conn.Call(ctx, "appPasswords.remove", map[string]string{"uuid": "00000000-0000-4000-8000-000000000000"}, nil)
	if !errors.As(err, &rpcErr) || rpcErr.Code != errcode.NotFound {
		t.Fatalf("remove of an unknown uuid = %v, want code %d", err, errcode.NotFound)
	}
	err = conn.Call(ctx, "appPasswords.nope", nil, nil)
	if !errors.As(err, &rpcErr) || rpcErr.Code != errcode.MethodNotFound {
		t.Fatalf("unknown method = %v, want code %d", err, errcode.MethodNotFound)
	}
}
