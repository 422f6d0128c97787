package mongo

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/apppass/apppass"
)

// failureDoc is one throttle tally, shared by every replica.
type failureDoc struct {
	Key         string    `bson:"_id"`
	Failures    int       `bson:"failures"`
	WindowStart time.Time `bson:"windowStart"`
	LastFailure time.Time `bson:"lastFailure"`
}

// Failures implements apppass.ThrottleStore.
func (s *Store) Failures(ctx context.Context, keys []string) (map[string]apppass.FailureCount, error) {
	cur, err := s.failures.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}})
	if err != nil {
		return nil, wrap(err)
	}
	var docs []failureDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make(map[string]apppass.FailureCount, len(docs))
	for _, d := range docs {
		out[d.Key] = d.count()
	}
	return out, nil
}

// AddFailure implements apppass.ThrottleStore: an increment within the
// current window, or else a fresh tally replacing a stale one. Both are
// single atomic updates; when two replicas race to start a tally, the
// loser's upsert hits the unique _id and it increments instead.
func (s *Store) AddFailure(ctx context.Context, key string, now, windowStart time.Time) (apppass.FailureCount, error) {
	defer s.isolate(failuresCollection, key)()
	for range 4 {
		var d failureDoc
		err := s.failures.FindOneAndUpdate(ctx,
			bson.D{{Key: "_id", Value: key}, {Key: "windowStart", Value: bson.D{{Key: "$gte", Value: windowStart}}}},
			bson.D{{Key: "$inc", Value: bson.D{{Key: "failures", Value: 1}}}, {Key: "$max", Value: bson.D{{Key: "lastFailure", Value: now}}}},
			options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d)
		if err == nil {
			return d.count(), nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return apppass.FailureCount{}, wrap(err)
		}
		d = failureDoc{Key: key, Failures: 1, WindowStart: now, LastFailure: now}
		_, err = s.failures.UpdateOne(ctx,
			bson.D{{Key: "_id", Value: key}, {Key: "windowStart", Value: bson.D{{Key: "$lt", Value: windowStart}}}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "failures", Value: 1}, {Key: "windowStart", Value: now}, {Key: "lastFailure", Value: now}}}},
			options.UpdateOne().SetUpsert(true))
		if err == nil {
			return d.count(), nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return apppass.FailureCount{}, wrap(err)
		}
		// Someone else started the tally: count this failure in it.
	}
	return apppass.FailureCount{}, apppass.Unavailable("MongoDB", errors.New("too much contention counting a login failure"))
}

func (d failureDoc) count() apppass.FailureCount {
	return apppass.FailureCount{Failures: d.Failures, WindowStart: d.WindowStart.UTC(), LastFailure: d.LastFailure.UTC()}
}

// ClearFailures implements apppass.ThrottleStore.
func (s *Store) ClearFailures(ctx context.Context, key string) error {
	defer s.isolate(failuresCollection, key)()
	_, err := s.failures.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}})
	return wrap(err)
}

// PurgeFailures implements apppass.ThrottleStore. (The sweeper purges,
// rather than a TTL index, so the rule is the same on every backend.)
func (s *Store) PurgeFailures(ctx context.Context, before time.Time) error {
	_, err := s.failures.DeleteMany(ctx, bson.D{{Key: "lastFailure", Value: bson.D{{Key: "$lt", Value: before}}}})
	return wrap(err)
}
