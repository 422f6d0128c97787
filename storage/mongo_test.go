package storage_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage"
	"github.com/apppass/apppass/storage/storagetest"
)

// TestMongo runs the conformance suite on the embedded FerretDB, or on the
// MongoDB named by APPPASS_TEST_MONGODB_URI.
func TestMongo(t *testing.T) {
	storagetest.RunTests(t, func(t *testing.T) storagetest.Backend { return testenv.Store(t) })

	t.Run("Unavailable", testUnavailable)
}

// testUnavailable stops the server under an open store: every operation
// must fail as KindUnavailable, and promptly rather than hang.
func testUnavailable(t *testing.T) {
	if os.Getenv("APPPASS_TEST_MONGODB_URI") != "" {
		t.Skip("cannot stop an external MongoDB")
	}
	e, err := storage.StartEmbedded(t.TempDir(), testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	s := testenv.StoreAt(t, e.URI)
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "user"}
	ctx := context.Background()
	if _, err := s.List(ctx, owner); err != nil {
		t.Fatalf("List while the server is up: %v", err)
	}
	e.Stop()

	p := &apppass.Password{UUID: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", Owner: owner, AppScope: "mail", Name: "n",
		Created: time.Now().UTC().Truncate(time.Millisecond), Digest: "d", KeyID: "k"}
	ev := apppass.Event{ID: testenv.RandomHex(12), Type: apppass.EventCreated, Timestamp: p.Created}
	ops := map[string]func() error{
		"List":   func() error { _, err := s.List(ctx, owner); return err },
		"Insert": func() error { return s.Insert(ctx, p, ev, 5) },
		"Revoke": func() error {
			_, err := s.Revoke(ctx, owner, p.UUID, func(*apppass.Password) (apppass.Event, error) { return ev, nil })
			return err
		},
		"FindByDigest": func() error { _, err := s.FindByDigest(ctx, "d"); return err },
		"RecordLogin": func() error {
			_, err := s.RecordLogin(ctx, p.UUID, apppass.LastLogin{}, nil, nil)
			return err
		},
		"Expired":       func() error { _, err := s.Expired(ctx, time.Now(), 10); return err },
		"AddFailure":    func() error { _, err := s.AddFailure(ctx, "k", time.Now(), time.Now()); return err },
		"Failures":      func() error { _, err := s.Failures(ctx, []string{"k"}); return err },
		"Pending":       func() error { _, err := s.Pending(ctx, 10); return err },
		"MarkPublished": func() error { return s.MarkPublished(ctx, p.UUID, ev) },
		"PendingCount":  func() error { _, err := s.PendingCount(ctx); return err },
		"Ping":          func() error { return s.Ping(ctx) },
	}
	// The context has no deadline: the store itself must give up (its
	// server selection timeout is 3 s). 30 s only catches a hang.
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for name, op := range ops {
		wg.Go(func() {
			err := op()
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("store operations still running 30 s after the server stopped")
	}
	for name := range ops {
		err := errs[name]
		if k := apppass.KindOf(err); k != apppass.KindUnavailable {
			t.Errorf("%s with the server stopped: error %v has kind %d, want KindUnavailable (%d)", name, err, k, apppass.KindUnavailable)
		}
	}
}
