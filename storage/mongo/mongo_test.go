package mongo_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage/ferretdb"
	"github.com/apppass/apppass/storage/storetest"
)

// TestConformance runs the storage suite on FerretDB, or on the MongoDB
// named by APPPASS_TEST_MONGODB_URI: a database of its own per case, and
// the cross-handle cases on two stores on one database.
func TestConformance(t *testing.T) {
	uri := testenv.MongoURI(t)
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) (storetest.Backend, func(*testing.T) storetest.Backend) {
		db := testenv.NewDatabaseName()
		s := testenv.MongoStoreAt(t, uri, db)
		return s, func(t *testing.T) storetest.Backend { return testenv.MongoStoreAt(t, uri, db) }
	}, NotIsolated: notIsolated(t, uri)})

	t.Run("Unavailable", testUnavailable)
	t.Run("ChangedIndex", testChangedIndex)
	t.Run("DropsDigestsCollection", testDropsDigests)
}

// notIsolated says why the server cannot isolate two stores, if it cannot.
func notIsolated(t *testing.T, uri string) string {
	if testenv.MongoStoreAt(t, uri, testenv.NewDatabaseName()).IsFerretDB() {
		return "FerretDB v1 applies conditional updates without isolation (storage/mongo/ferretdb.go); set APPPASS_TEST_MONGODB_URI to run them on MongoDB"
	}
	return ""
}

// testUnavailable stops the server under an open store: every operation
// must fail as KindUnavailable, and promptly rather than hang.
func testUnavailable(t *testing.T) {
	if os.Getenv("APPPASS_TEST_MONGODB_URI") != "" {
		t.Skip("cannot stop an external MongoDB")
	}
	e, err := ferretdb.Start(t.TempDir(), testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	s := testenv.MongoStoreAt(t, e.URI, testenv.NewDatabaseName())
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
		"Insert": func() error { _, err := s.Insert(ctx, p, ev, 5, nil); return err },
		"Revoke": func() error {
			_, err := s.Revoke(ctx, owner, p.UUID, func(*apppass.Password) (apppass.Event, error) { return ev, nil }, nil)
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
		"Pending":       func() error { _, err := s.Pending(ctx, 10, ""); return err },
		"MarkPublished": func() error { return s.MarkPublished(ctx, p.UUID, "relay", []apppass.Event{ev}) },
		"PendingCount":  func() error { _, err := s.PendingCount(ctx); return err },
		"ClaimPending":  func() error { _, err := s.ClaimPending(ctx, p.UUID, "relay", time.Minute); return err },
		"ReleaseClaim":  func() error { return s.ReleaseClaim(ctx, p.UUID, "relay") },
		"PurgePublished": func() error {
			_, err := s.PurgePublished(ctx, time.Now(), 10)
			return err
		},
		"RequeuePublished": func() error { _, err := s.RequeuePublished(ctx); return err },
		"EnqueueWebhook": func() error {
			_, err := s.EnqueueWebhook(ctx, apppass.WebhookDelivery{ID: "e:a", EventID: "e", Endpoint: "a", Created: p.Created})
			return err
		},
		"ClaimWebhooks": func() error {
			_, err := s.ClaimWebhooks(ctx, time.Now(), time.Now().Add(time.Minute), "t", nil, 5)
			return err
		},
		"SeenWebhookID":   func() error { _, err := s.SeenWebhookID(ctx, "m"); return err },
		"BindDigestKey":   func() error { return s.BindDigestKey(ctx, "k") },
		"ExportPasswords": func() error { _, err := s.ExportPasswords(ctx, "", 10); return err },
		"ImportPasswords": func() error {
			_, err := s.ImportPasswords(ctx, []apppass.PasswordRecord{{Password: *p}})
			return err
		},
		"Ping": func() error { return s.Ping(ctx) },
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

// testChangedIndex: an index whose definition changed under its old name
// is replaced at Open, not kept because the name matches.
func testChangedIndex(t *testing.T) {
	uri, db := testenv.MongoURI(t), testenv.NewDatabaseName()
	ctx := context.Background()
	client := connect(t, uri)
	coll := client.Database(db).Collection("app_passwords")
	// An earlier release's digest index, not unique.
	if _, err := coll.Indexes().CreateOne(ctx, driver.IndexModel{Keys: bson.D{{Key: "digest", Value: 1}},
		Options: options.Index().SetName("digest")}); err != nil {
		t.Fatal(err)
	}
	testenv.MongoStoreAt(t, uri, db)
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		if s.Name == "digest" {
			if s.Unique == nil || !*s.Unique {
				t.Fatalf("the digest index is still %+v, want it unique", s)
			}
			return
		}
	}
	t.Fatal("no digest index after Open")
}

// testDropsDigests: the digest collection of earlier releases, which grew
// with every password ever made, is dropped at Open.
func testDropsDigests(t *testing.T) {
	uri, db := testenv.MongoURI(t), testenv.NewDatabaseName()
	ctx := context.Background()
	client := connect(t, uri)
	if _, err := client.Database(db).Collection("password_digests").InsertOne(ctx, bson.D{{Key: "_id", Value: "d"}, {Key: "uuid", Value: "u"}}); err != nil {
		t.Fatal(err)
	}
	testenv.MongoStoreAt(t, uri, db)
	names, err := client.Database(db).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "password_digests") {
		t.Fatalf("password_digests is still there: %v", names)
	}
}

// connect is a plain driver client, to set up what a test then opens.
func connect(t *testing.T, uri string) *driver.Client {
	t.Helper()
	client, err := driver.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return client
}
