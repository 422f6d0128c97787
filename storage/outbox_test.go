package storage_test

import (
	"testing"

	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage"
	"github.com/apppass/apppass/storage/storagetest"
)

// TestMongoConditionalOutbox runs the conformance suite with the outbox
// on its MongoDB code path (conditional updates), which TestMongo only
// reaches against a real MongoDB: on FerretDB the outbox reads and writes
// by _id instead.
func TestMongoConditionalOutbox(t *testing.T) {
	storagetest.RunTests(t, func(t *testing.T) storagetest.Backend {
		s := testenv.Store(t)
		storage.UseConditionalUpdates(s)
		return s
	})
}
