package rpc

import (
	"net/http"

	"github.com/apppass/apppass/docs"
)

// serveAsyncAPI answers GET /asyncapi.yaml without a token, for the same
// reasons as serveOpenRPC: the document describes the public events only
// and holds nothing about any user or key, and AsyncAPI tools (Studio runs
// in a browser) fetch it without credentials.
func serveAsyncAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(docs.AsyncAPI)
}
