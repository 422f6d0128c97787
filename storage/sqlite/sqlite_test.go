package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/apppass/apppass/storage/sqlite"
	"github.com/apppass/apppass/storage/storetest"
)

// TestConformance runs the storage suite on a fresh file per case; the
// cross-handle cases open the same file twice.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) (storetest.Backend, func(*testing.T) storetest.Backend) {
		path := filepath.Join(t.TempDir(), "apppass.db")
		return open(t, path, sqlite.Options{}), func(t *testing.T) storetest.Backend { return open(t, path, sqlite.Options{}) }
	}})
}

func open(t *testing.T, path string, o sqlite.Options) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
