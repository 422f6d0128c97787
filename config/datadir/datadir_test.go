package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadyFile checks that the ready file round-trips, holds no
// credentials, is mode 0600, leaves no temporary file and is removed.
func TestReadyFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadReady(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no file yet: %v", err)
	}
	in := Ready{PID: 42, HTTP: "http://127.0.0.1:8080", NATS: "nats://gateway:s3cr3t@127.0.0.1:4222, nats://tok3n@10.0.0.2:4222",
		Metrics: "http://127.0.0.1:8080/metrics?key=s3cr3t", Pprof: "http://127.0.0.1:6060/debug/pprof/"}
	if err := WriteReady(dir, in); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ReadyFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "s3cr3t") || strings.Contains(string(raw), "tok3n") {
		t.Fatalf("the ready file holds a credential:\n%s", raw)
	}
	got, err := ReadReady(dir)
	want := Ready{PID: 42, HTTP: "http://127.0.0.1:8080", NATS: "nats://127.0.0.1:4222,nats://10.0.0.2:4222",
		Metrics: "http://127.0.0.1:8080/metrics", Pprof: "http://127.0.0.1:6060/debug/pprof/"}
	if err != nil || got != want {
		t.Fatalf("read %+v, %v; want %+v", got, err, want)
	}
	info, err := os.Stat(filepath.Join(dir, ReadyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", info.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	if err := RemoveReady(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReady(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after RemoveReady: %v", err)
	}
	if err := RemoveReady(dir); err != nil {
		t.Fatalf("removing it twice: %v", err)
	}
}
