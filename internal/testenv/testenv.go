// Package testenv starts the real servers tests run against: the embedded
// SQLite store, FerretDB (or a real MongoDB named by
// APPPASS_TEST_MONGODB_URI) for the MongoDB adapter, and an embedded
// nats-server with JetStream. Nothing here is a mock.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/natsserver"
	"github.com/apppass/apppass/storage/ferretdb"
	"github.com/apppass/apppass/storage/mongo"
	"github.com/apppass/apppass/storage/sqlite"
)

// Store opens the default store, SQLite, on a fresh file of the test's.
func Store(t testing.TB) *sqlite.Store {
	return StoreAt(t, filepath.Join(t.TempDir(), "apppass.db"))
}

// StoreAt opens the SQLite store in the file at path (another handle on
// it, if one is open), closed at the end of the test.
func StoreAt(t testing.TB, path string) *sqlite.Store {
	s, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// MongoURI returns a MongoDB URI for a test: APPPASS_TEST_MONGODB_URI when
// set, else a fresh FerretDB stopped at the end of the test.
func MongoURI(t testing.TB) string {
	if uri := os.Getenv("APPPASS_TEST_MONGODB_URI"); uri != "" {
		return uri
	}
	e, err := ferretdb.Start(t.TempDir(), Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e.URI
}

// MongoStore opens the MongoDB adapter on a database of its own.
func MongoStore(t testing.TB) *mongo.Store {
	return MongoStoreAt(t, MongoURI(t), NewDatabaseName())
}

// NewDatabaseName names a MongoDB database no other test uses.
func NewDatabaseName() string { return "apppass_test_" + RandomHex(6) }

// MongoStoreAt opens the MongoDB adapter on database db at uri.
func MongoStoreAt(t testing.TB, uri, db string) *mongo.Store {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := mongo.Open(ctx, uri, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// NATS starts an embedded nats-server with JetStream on a free loopback
// port, stopped at the end of the test.
func NATS(t testing.TB) *natsserver.Server {
	return NATSAt(t, "127.0.0.1:0", t.TempDir())
}

// NATSAt starts an embedded nats-server on listen storing in dir; restart
// one with the same address and dir to simulate an outage.
func NATSAt(t testing.TB, listen, dir string) *natsserver.Server {
	n, err := natsserver.Start(listen, dir, nil)
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

// SmallDisk returns a directory on a filesystem of its own of size bytes
// (a tmpfs, mounted for the test and unmounted after it), and a function
// that fills it up: the disk-full a store must survive. It needs root (CI
// runs as root); elsewhere the test is skipped.
func SmallDisk(t testing.TB, size int) (dir string, fill func() (free func())) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir = t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	fill = func() func() {
		filler := filepath.Join(dir, "filler")
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		block := make([]byte, 64<<10)
		for {
			if _, err := f.Write(block); err != nil {
				break // ENOSPC: full
			}
		}
		for {
			if _, err := f.Write(block[:512]); err != nil {
				break
			}
		}
		f.Close()
		return func() { _ = os.Remove(filler) }
	}
	return dir, fill
}

// ReadOnlyDir returns a directory in which nothing can be created or
// written, for root too: a read-only tmpfs as root, a mode 0500 directory
// otherwise.
func ReadOnlyDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
		return dir
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount read-only tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// StreamMessages reads every message of the events' stream on the NATS at
// url, in stream order.
func StreamMessages(t testing.TB, url string) []*jetstream.RawStreamMsg {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}
