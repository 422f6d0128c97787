package mongo

import (
	"context"
	"errors"
	"slices"
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

// MarkPublished implements apppass.Outbox: each event moves from the
// outbox to the published ones in one conditional update that only
// matches while it is in the outbox, so of two relays marking it, one
// counts it out. The last one ends owner's claim in the same update when
// owner holds it, so the common case is one write per event.
func (s *Store) MarkPublished(ctx context.Context, uuid, owner string, evs []apppass.Event) error {
	defer s.isolate(passwordsCollection, uuid)()
	now := time.Now().UTC()
	for i, ev := range evs {
		field := "outbox." + ev.ID
		queued := bson.D{{Key: "_id", Value: uuid}, {Key: field, Value: bson.D{{Key: "$exists", Value: true}}}}
		update := bson.D{
			{Key: "$unset", Value: bson.D{{Key: field, Value: ""}}},
			{Key: "$inc", Value: bson.D{{Key: "pending", Value: -1}}},
			{Key: "$set", Value: bson.D{{Key: "published." + ev.ID, Value: toEventDoc(ev)}}},
			{Key: "$max", Value: bson.D{{Key: "publishedAt", Value: now}}},
		}
		if i == len(evs)-1 && owner != "" {
			held := append(slices.Clone(queued), bson.E{Key: "outboxClaim.owner", Value: owner})
			released := slices.Clone(update)
			released[0].Value = bson.D{{Key: field, Value: ""}, {Key: "outboxClaim", Value: ""}}
			res, err := s.passwords.UpdateOne(ctx, held, released)
			if err != nil {
				return wrap(err)
			}
			if res.MatchedCount == 1 {
				return nil
			}
		}
		if _, err := s.passwords.UpdateOne(ctx, queued, update); err != nil {
			return wrap(err)
		}
	}
	return s.releaseClaim(ctx, uuid, owner)
}

// PurgePublished implements apppass.Outbox. A document's published events
// go together, once the last of them is old enough, in one write
// conditional on that time: a relay marking another one meanwhile makes
// it wait for the next purge.
func (s *Store) PurgePublished(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.eachPublished(ctx, bson.D{{Key: "publishedAt", Value: bson.D{{Key: "$lt", Value: before}}}}, limit, s.purgePublished)
}

func (s *Store) purgePublished(ctx context.Context, d passwordDoc) (int, error) {
	defer s.isolate(passwordsCollection, d.UUID)()
	same := bson.D{{Key: "_id", Value: d.UUID}, {Key: "publishedAt", Value: *d.PublishedAt}}
	if d.Revoked != nil {
		// Nothing is kept of a password after its revoked event is out.
		res, err := s.passwords.DeleteOne(ctx, append(same, bson.E{Key: "pending", Value: 0},
			bson.E{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}))
		if err != nil {
			return 0, wrap(err)
		}
		if res.DeletedCount == 1 {
			return len(d.Published), nil
		}
	}
	res, err := s.passwords.UpdateOne(ctx, same,
		bson.D{{Key: "$unset", Value: bson.D{{Key: "published", Value: ""}, {Key: "publishedAt", Value: ""}}}})
	if err != nil || res.ModifiedCount == 0 {
		return 0, wrap(err)
	}
	return len(d.Published), nil
}

// eachPublished reads up to limit documents matching filter that hold
// published events (limit 0: all of them), hands each to fn and returns
// the sum of the events fn counted.
func (s *Store) eachPublished(ctx context.Context, filter bson.D, limit int, fn func(context.Context, passwordDoc) (int, error)) (int, error) {
	cur, err := s.passwords.Find(ctx, filter, options.Find().SetLimit(int64(limit)).SetProjection(bson.D{
		{Key: "published", Value: 1}, {Key: "publishedAt", Value: 1}, {Key: "revoked", Value: 1}, {Key: "pending", Value: 1}}))
	if err != nil {
		return 0, wrap(err)
	}
	var docs []passwordDoc
	if err := cur.All(ctx, &docs); err != nil {
		return 0, wrap(err)
	}
	n := 0
	for _, d := range docs {
		if d.PublishedAt == nil {
			continue
		}
		counted, err := fn(ctx, d)
		if err != nil {
			return n, err
		}
		n += counted
	}
	return n, nil
}

// RequeuePublished implements apppass.Outbox: a document's published
// events go back into its outbox in one write.
func (s *Store) RequeuePublished(ctx context.Context) (int64, error) {
	n, err := s.eachPublished(ctx, bson.D{{Key: "publishedAt", Value: bson.D{{Key: "$exists", Value: true}}}}, 0, s.requeuePublished)
	return int64(n), err
}

func (s *Store) requeuePublished(ctx context.Context, d passwordDoc) (int, error) {
	defer s.isolate(passwordsCollection, d.UUID)()
	set := bson.D{}
	for id, ev := range d.Published {
		set = append(set, bson.E{Key: "outbox." + id, Value: ev})
	}
	update := bson.D{{Key: "$unset", Value: bson.D{{Key: "published", Value: ""}, {Key: "publishedAt", Value: ""}}}}
	if len(set) > 0 {
		update = append(update, bson.E{Key: "$set", Value: set},
			bson.E{Key: "$inc", Value: bson.D{{Key: "pending", Value: len(set)}}})
	}
	res, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: d.UUID}, {Key: "publishedAt", Value: *d.PublishedAt}}, update)
	if err != nil || res.ModifiedCount == 0 {
		return 0, wrap(err)
	}
	return len(set), nil
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
func (s *Store) ReleaseClaim(ctx context.Context, uuid, owner string) error {
	defer s.isolate(passwordsCollection, uuid)()
	return s.releaseClaim(ctx, uuid, owner)
}

func (s *Store) releaseClaim(ctx context.Context, uuid, owner string) error {
	_, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}, {Key: "outboxClaim.owner", Value: owner}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "outboxClaim", Value: ""}}}})
	return wrap(err)
}
