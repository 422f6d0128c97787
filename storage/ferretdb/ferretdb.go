// Package ferretdb runs FerretDB (v1, SQLite handler) inside the process:
// the MongoDB-wire server the tests and the bench start for the MongoDB
// adapter, since no MongoDB can be installed on the machines they run on.
// apppassd itself never links it.
package ferretdb

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Server is a FerretDB server running inside this process. It listens on
// a loopback port and is reached through the real driver like any MongoDB.
type Server struct {
	URI    string
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts FerretDB on a free loopback port with its SQLite files
// under dir.
func Start(dir string, logger *slog.Logger) (*Server, error) {
	return StartAt("127.0.0.1:0", dir, logger)
}

// StartAt starts FerretDB on addr; restarting one on the same address and
// dir brings back the same data, for outage tests.
func StartAt(addr, dir string, logger *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating FerretDB's directory: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("starting FerretDB: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Server{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		_ = f.Run(ctx)
	}()
	e.URI = f.MongoDBURI() // blocks until the listener is up
	return e, nil
}

// Stop closes the listener and the SQLite files.
func (e *Server) Stop() {
	e.cancel()
	<-e.done
}
