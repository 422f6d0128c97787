// Package mongo keeps every storage port of the domain in MongoDB, through
// the official driver. A deployment with several apppassd replicas runs on
// it.
//
// Every rule is one conditional write of one document, or a unique index,
// so it holds however many replicas write at once, without transactions:
// a password, its revocation and its unpublished events live in one
// document, the per-user limit is a unique index on numbered slots, and a
// relay's claim on a password's events is a conditional update of that
// document. Authenticate is one lookup in the unique digest index.
//
// FerretDB, which speaks MongoDB's wire protocol, is the server the tests
// start; what it needs differently is in ferretdb.go and used only when the
// server says it is FerretDB.
package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/apppass/apppass"
)

// Collections of one apppass database.
const (
	passwordsCollection  = "app_passwords"
	failuresCollection   = "login_failures"     // throttle tallies
	deliveriesCollection = "webhook_deliveries" // the outbound webhook queue
	endpointsCollection  = "webhook_endpoints"  // disabled endpoints
	seenCollection       = "webhook_seen"       // processed provisioning webhook-ids
	metaCollection       = "meta"               // the digest key id
	instancesCollection  = "instances"          // running apppassd, for store copy
	// digestsCollection was an authenticate index of earlier releases
	// (digest -> uuid); Open drops it.
	digestsCollection = "password_digests"
)

// Store implements apppass.Store on one MongoDB database.
type Store struct {
	client    *mongo.Client
	db        *mongo.Database
	passwords *mongo.Collection
	failures  *mongo.Collection
	// ferret is set when the server is FerretDB (ferretdb.go).
	ferret *ferretLocks
}

var _ apppass.Store = (*Store)(nil)

// Open connects to uri, uses database db, creates or updates the indexes
// and asks the server what it is. It waits for the server only as long as
// ctx allows.
func Open(ctx context.Context, uri, db string) (*Store, error) {
	opts := options.Client().ApplyURI(uri).
		// Fail fast when MongoDB is away: callers get -32050 within seconds.
		SetServerSelectionTimeout(3 * time.Second).
		SetConnectTimeout(3 * time.Second)
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connecting to MongoDB at %s: %s", apppass.RedactURL(uri), apppass.RedactIn(err.Error(), uri))
	}
	d := client.Database(db)
	s := &Store{client: client, db: d, passwords: d.Collection(passwordsCollection), failures: d.Collection(failuresCollection)}
	if err := s.prepare(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		// The driver's errors may quote the URI it was given.
		return nil, redactedError{err: err, text: apppass.RedactIn(err.Error(), uri)}
	}
	return s, nil
}

func (s *Store) prepare(ctx context.Context) error {
	var info bson.M
	if err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return fmt.Errorf("asking MongoDB for its build info: %w", wrap(err))
	}
	if isFerretDB(info) {
		s.ferret = &ferretLocks{}
	}
	for coll, wanted := range indexes {
		if err := ensureIndexes(ctx, s.db.Collection(coll), wanted); err != nil {
			return err
		}
	}
	names, err := s.db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: digestsCollection}})
	if err != nil {
		return fmt.Errorf("listing MongoDB collections: %w", wrap(err))
	}
	if len(names) > 0 {
		if err := s.db.Collection(digestsCollection).Drop(ctx); err != nil {
			return fmt.Errorf("dropping %s: %w", digestsCollection, wrap(err))
		}
	}
	return nil
}

// index is one wanted index.
type index struct {
	name   string
	keys   bson.D
	unique bool
}

// indexes are the indexes of every collection. Every uniqueness a rule
// relies on is a unique index here or _id's.
var indexes = map[string][]index{
	passwordsCollection: {
		// authenticate: one lookup by digest.
		{name: "digest", keys: bson.D{{Key: "digest", Value: 1}}, unique: true},
		// The per-user limit: an active password holds one of its owner's
		// numbered slots, and a slot can be held only once.
		{name: "slot", keys: bson.D{{Key: "slot", Value: 1}}, unique: true},
		// list: a user's passwords, newest first.
		{name: "owner_created", keys: bson.D{{Key: "contextId", Value: 1}, {Key: "userId", Value: 1}, {Key: "created", Value: -1}}},
		// the outbox relay's sweep.
		{name: "pending", keys: bson.D{{Key: "pending", Value: 1}}},
		// the purge of published events.
		{name: "publishedAt", keys: bson.D{{Key: "publishedAt", Value: 1}}},
		// the expiry sweeper.
		{name: "expires", keys: bson.D{{Key: "expires", Value: 1}}},
		{name: "idleDeadline", keys: bson.D{{Key: "idleDeadline", Value: 1}}},
	},
	failuresCollection: {
		{name: "lastFailure", keys: bson.D{{Key: "lastFailure", Value: 1}}},
	},
	deliveriesCollection: {
		// The dispatcher's claim: due pending deliveries.
		{name: "state_nextAttempt", keys: bson.D{{Key: "state", Value: 1}, {Key: "nextAttempt", Value: 1}}},
		// The admin listing, newest first, and the per-endpoint counts.
		{name: "created", keys: bson.D{{Key: "created", Value: -1}}},
		{name: "endpoint_state", keys: bson.D{{Key: "endpoint", Value: 1}, {Key: "state", Value: 1}}},
		// The purge of old finished deliveries.
		{name: "finished", keys: bson.D{{Key: "finished", Value: 1}}},
	},
	seenCollection: {
		{name: "seen", keys: bson.D{{Key: "seen", Value: 1}}},
	},
}

// ensureIndexes creates the wanted indexes of coll that are missing, and
// replaces one whose definition changed under its name. (Only the missing
// ones are created: FerretDB v1 fails on a createIndexes that repeats one.)
func ensureIndexes(ctx context.Context, coll *mongo.Collection, wanted []index) error {
	existing, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("listing the indexes of %s: %w", coll.Name(), wrap(err))
	}
	var missing []mongo.IndexModel
	for _, w := range wanted {
		i := slices.IndexFunc(existing, func(e mongo.IndexSpecification) bool { return e.Name == w.name })
		if i >= 0 && sameIndex(existing[i], w) {
			continue
		}
		if i >= 0 {
			if err := coll.Indexes().DropOne(ctx, w.name); err != nil {
				return fmt.Errorf("dropping the changed index %s of %s: %w", w.name, coll.Name(), wrap(err))
			}
		}
		missing = append(missing, mongo.IndexModel{Keys: w.keys, Options: options.Index().SetName(w.name).SetUnique(w.unique)})
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := coll.Indexes().CreateMany(ctx, missing); err != nil {
		return fmt.Errorf("creating the indexes of %s: %w", coll.Name(), wrap(err))
	}
	return nil
}

// sameIndex reports whether an existing index has the wanted keys, in
// order and direction, and uniqueness.
func sameIndex(e mongo.IndexSpecification, w index) bool {
	if (e.Unique != nil && *e.Unique) != w.unique {
		return false
	}
	elems, err := e.KeysDocument.Elements()
	if err != nil || len(elems) != len(w.keys) {
		return false
	}
	for i, el := range elems {
		want, ok := w.keys[i].Value.(int)
		got, isNum := el.Value().AsInt64OK()
		if !isNum {
			if f, isDouble := el.Value().DoubleOK(); isDouble {
				got, isNum = int64(f), true
			}
		}
		if el.Key() != w.keys[i].Key || !ok || !isNum || got != int64(want) {
			return false
		}
	}
	return true
}

// Ping implements apppass.Store.
func (s *Store) Ping(ctx context.Context) error { return wrap(s.client.Ping(ctx, nil)) }

// Close implements apppass.Store.
func (s *Store) Close() error { return s.client.Disconnect(context.Background()) }

// redactedError is an error whose text had a password taken out; it still
// unwraps to the driver's error, for its kind.
type redactedError struct {
	err  error
	text string
}

func (e redactedError) Error() string { return e.text }
func (e redactedError) Unwrap() error { return e.err }

// wrap turns driver errors that mean "MongoDB cannot be reached" into
// apppass unavailable errors; others stay internal.
func wrap(err error) error {
	if err == nil || apppass.KindOf(err) != apppass.KindInternal {
		return err
	}
	// A cleared connection pool means another operation just lost the
	// server: the driver reports it to the operations queued behind it.
	var poolCleared driver.RetryablePoolError
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &topology.ServerSelectionError{}) || errors.As(err, &poolCleared) {
		return apppass.Unavailable("MongoDB", err)
	}
	return err
}
