package jsonrpc

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
)

// openrpcDocument describes every JSON-RPC method (OpenRPC 1.3.2). It is
// written by hand next to the method table; openrpc_test.go checks it
// against the table, the error codes and real responses.
//
//go:embed openrpc.json
var openrpcDocument []byte

// rpcDiscover answers rpc.discover, the OpenRPC service discovery method.
func rpcDiscover(_ context.Context, r request) (any, error) {
	if err := decodeParams(r.Params); err != nil {
		return nil, err
	}
	return json.RawMessage(openrpcDocument), nil
}

// ServeOpenRPC answers GET /openrpc.json without a token: the document
// describes the public interface only (the same as docs/methods.md), holds no
// secret and nothing about any user, and OpenRPC tools (playground, client
// generators) fetch it without credentials. For the same reason any web
// page may read it (the OpenRPC playground runs in a browser); no
// credentials are involved, so "*" grants nothing else.
func ServeOpenRPC(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(openrpcDocument)
}
