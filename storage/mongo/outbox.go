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

// claimDoc is a relay's lease on one password's outbox.
type claimDoc struct {
	Owner string    `bson:"owner"`
	Until time.Time `bson:"until"`
}

// unclaimed matches a document whose outbox no relay but mine (if not
// "") holds now.
func unclaimed(now time.Time, mine string) bson.E {
	or := bson.A{
		bson.D{{Key: "outboxClaim", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "outboxClaim.until", Value: bson.D{{Key: "$lte", Value: now}}}},
	}
	if mine != "" {
		or = append(or, bson.D{{Key: "outboxClaim.owner", Value: mine}})
	}
	return bson.E{Key: "$or", Value: or}
}

var hasPending = bson.E{Key: "pending", Value: bson.D{{Key: "$gt", Value: 0}}}

// Pending implements apppass.Outbox. Passwords another relay is
// publishing are left out, so a sweep does not wait on them.
func (s *Store) Pending(ctx context.Context, limit int, mine string) ([]apppass.PendingEvents, error) {
	cur, err := s.passwords.Find(ctx, bson.D{hasPending, unclaimed(time.Now(), mine)},
		options.Find().SetLimit(int64(limit)).SetProjection(bson.D{{Key: "outbox", Value: 1}}))
	if err != nil {
		return nil, wrap(err)
	}
	var docs []passwordDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.PendingEvents, 0, len(docs))
	for i := range docs {
		if evs := docs[i].pendingEvents(); len(evs) > 0 {
			out = append(out, apppass.PendingEvents{PasswordUUID: docs[i].UUID, Events: evs})
		}
	}
	return out, nil
}

// PendingCount implements apppass.Outbox.
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
	cur, err := s.passwords.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{hasPending}}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: nil}, {Key: "n", Value: bson.D{{Key: "$sum", Value: "$pending"}}}}}},
	})
	if err != nil {
		return 0, wrap(err)
	}
	var res []struct {
		N int64 `bson:"n"`
	}
	if err := cur.All(ctx, &res); err != nil {
		return 0, wrap(err)
	}
	if len(res) == 0 {
		return 0, nil
	}
	return res[0].N, nil
}

// MarkPublished implements apppass.Outbox: the event leaves the outbox in
// one conditional update that only matches while it is there, so of two
// relays marking it, one counts it out. A revoked password whose last
// event this is goes instead, in one conditional delete.
func (s *Store) MarkPublished(ctx context.Context, uuid string, ev apppass.Event) error {
	defer s.isolate(passwordsCollection, uuid)()
	return s.markPublished(ctx, uuid, ev)
}

func (s *Store) markPublished(ctx context.Context, uuid string, ev apppass.Event) error {
	field := "outbox." + ev.ID
	queued := bson.D{{Key: "_id", Value: uuid}, {Key: field, Value: bson.D{{Key: "$exists", Value: true}}}}
	res, err := s.passwords.DeleteOne(ctx, append(queued,
		bson.E{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}, bson.E{Key: "pending", Value: 1}))
	if err != nil || res.DeletedCount == 1 {
		return wrap(err)
	}
	_, err = s.passwords.UpdateOne(ctx, queued,
		bson.D{{Key: "$unset", Value: bson.D{{Key: field, Value: ""}}}, {Key: "$inc", Value: bson.D{{Key: "pending", Value: -1}}}})
	if err != nil {
		return wrap(err)
	}
	// A revoked password's events can be published out of order only
	// across a takeover; if its last one just left, forget it.
	_, err = s.passwords.DeleteOne(ctx, bson.D{{Key: "_id", Value: uuid},
		{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}, {Key: "pending", Value: 0}})
	return wrap(err)
}

// ClaimPending implements apppass.Outbox: one conditional update of one
// document takes the lease.
func (s *Store) ClaimPending(ctx context.Context, uuid, owner string, lease time.Duration) ([]apppass.Event, error) {
	defer s.isolate(passwordsCollection, uuid)()
	for attempt := 0; ; attempt++ {
		now := time.Now().UTC()
		filter := bson.D{{Key: "_id", Value: uuid}, hasPending, {Key: "$or", Value: bson.A{
			bson.D{{Key: "outboxClaim", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "outboxClaim.until", Value: bson.D{{Key: "$lte", Value: now}}}},
			bson.D{{Key: "outboxClaim.owner", Value: owner}},
		}}}
		update := bson.D{{Key: "$set", Value: bson.D{{Key: "outboxClaim", Value: claimDoc{Owner: owner, Until: now.Add(lease)}}}}}
		var after passwordDoc
		err := s.passwords.FindOneAndUpdate(ctx, filter, update,
			options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
		if err == nil {
			return after.pendingEvents(), nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, wrap(err)
		}
		// Nothing to claim: tell "nothing waits" from "someone else's".
		var cur struct {
			Pending int       `bson:"pending"`
			Claim   *claimDoc `bson:"outboxClaim"`
		}
		err = s.passwords.FindOne(ctx, bson.D{{Key: "_id", Value: uuid}},
			options.FindOne().SetProjection(bson.D{{Key: "pending", Value: 1}, {Key: "outboxClaim", Value: 1}})).Decode(&cur)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			return nil, nil // published and forgotten, or never was
		case err != nil:
			return nil, wrap(err)
		case cur.Pending <= 0:
			return nil, nil
		case cur.Claim != nil && cur.Claim.Owner != owner && cur.Claim.Until.After(time.Now()):
			return nil, apppass.ErrClaimed
		case attempt > 0:
			return nil, apppass.ErrClaimed // it keeps changing under us
		}
		// The claim was released or ran out in between: try again.
	}
}

// ReleaseClaim implements apppass.Outbox.
func (s *Store) ReleaseClaim(ctx context.Context, uuid, owner string, published *apppass.Event) error {
	defer s.isolate(passwordsCollection, uuid)()
	if published != nil {
		if err := s.markPublished(ctx, uuid, *published); err != nil {
			return err
		}
	}
	_, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}, {Key: "outboxClaim.owner", Value: owner}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "outboxClaim", Value: ""}}}})
	return wrap(err)
}
