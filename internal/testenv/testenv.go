// Package testenv starts the real servers tests run against: the embedded
// FerretDB (or a real MongoDB named by APPPASS_TEST_MONGODB_URI) and an
// embedded nats-server with JetStream. Nothing here is a mock.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/storage"
)

// MongoURI returns a MongoDB URI for a test: APPPASS_TEST_MONGODB_URI when
// set, else a fresh embedded FerretDB stopped at the end of the test.
func MongoURI(t testing.TB) string {
	if uri := os.Getenv("APPPASS_TEST_MONGODB_URI"); uri != "" {
		return uri
	}
	e, err := storage.StartEmbedded(t.TempDir(), Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e.URI
}

// Store opens a Store on a database of its own.
func Store(t testing.TB) *storage.Store {
	return StoreAt(t, MongoURI(t))
}

// StoreAt opens a Store on a fresh database at uri.
func StoreAt(t testing.TB, uri string) *storage.Store {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, uri, "apppass_test_"+RandomHex(6))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// NATS starts an embedded nats-server with JetStream on a free loopback
// port, stopped at the end of the test.
func NATS(t testing.TB) *events.EmbeddedNATS {
	return NATSAt(t, "127.0.0.1:0", t.TempDir())
}

// NATSAt starts an embedded nats-server on listen storing in dir; restart
// one with the same address and dir to simulate an outage.
func NATSAt(t testing.TB, listen, dir string) *events.EmbeddedNATS {
	n, err := events.StartEmbeddedNATS(listen, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// Quiet is a logger for servers under test: errors only.
func Quiet() *slog.Logger {
	if os.Getenv("APPPASS_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
