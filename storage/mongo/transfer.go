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

const digestKeyDoc = "digestKey"

// BindDigestKey implements apppass.Store: one upsert that sets the key id
// only on insert, then a read of what is stored.
func (s *Store) BindDigestKey(ctx context.Context, keyID string) error {
	meta := s.coll(metaCollection)
	_, err := meta.UpdateOne(ctx, bson.D{{Key: "_id", Value: digestKeyDoc}},
		bson.D{{Key: "$setOnInsert", Value: bson.D{{Key: "keyId", Value: keyID}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil && !mongo.IsDuplicateKeyError(err) { // two replicas binding at once: one inserts
		return wrap(err)
	}
	stored, err := s.DigestKeyID(ctx)
	if err != nil {
		return err
	}
	if stored != keyID {
		return apppass.ErrDigestKeyMismatch
	}
	return nil
}

// DigestKeyID implements apppass.Store.
func (s *Store) DigestKeyID(ctx context.Context) (string, error) {
	var d struct {
		KeyID string `bson:"keyId"`
	}
	err := s.coll(metaCollection).FindOne(ctx, bson.D{{Key: "_id", Value: digestKeyDoc}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	return d.KeyID, wrap(err)
}

// CountPasswords implements apppass.StoreTransfer.
func (s *Store) CountPasswords(ctx context.Context) (int64, error) {
	n, err := s.passwords.CountDocuments(ctx, bson.D{})
	return n, wrap(err)
}

// ExportPasswords implements apppass.StoreTransfer.
func (s *Store) ExportPasswords(ctx context.Context, after string, limit int) ([]apppass.PasswordRecord, error) {
	cur, err := s.passwords.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, wrap(err)
	}
	var docs []passwordDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.PasswordRecord, len(docs))
	for i := range docs {
		out[i] = apppass.PasswordRecord{Password: docs[i].password(), Pending: docs[i].pendingEvents()}
		if r := docs[i].Revoked; r != nil {
			out[i].Revoked = &apppass.Revocation{Time: r.Time.UTC(), Reason: r.Reason}
		}
	}
	return out, nil
}

// ImportPasswords implements apppass.StoreTransfer. An active password
// takes the lowest free slot of its owner, as Insert does, so the limit
// keeps holding for passwords added later. A batch is a few round trips:
// which UUIDs exist, each owner's held slots, one unordered insertMany.
func (s *Store) ImportPasswords(ctx context.Context, rs []apppass.PasswordRecord) (int, error) {
	if len(rs) == 0 {
		return 0, nil
	}
	ids := make([]string, len(rs))
	for i := range rs {
		ids[i] = rs[i].Password.UUID
	}
	cur, err := s.passwords.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return 0, wrap(err)
	}
	var found []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &found); err != nil {
		return 0, wrap(err)
	}
	have := make(map[string]bool, len(found))
	for _, f := range found {
		have[f.ID] = true
	}
	held := map[apppass.User]map[int]bool{}
	var docs []any
	for i := range rs {
		r := &rs[i]
		if have[r.Password.UUID] {
			continue // copied before: a resumed copy
		}
		have[r.Password.UUID] = true
		slot := "revoked:" + r.Password.UUID
		if r.Revoked == nil {
			owner := apppass.User{ContextID: r.Password.Owner.ContextID, UserID: r.Password.Owner.UserID}
			if held[owner] == nil {
				if held[owner], err = s.heldSlots(ctx, owner); err != nil {
					return 0, err
				}
			}
			free := 0
			for held[owner][free] {
				free++
			}
			held[owner][free] = true
			slot = slotKey(owner, free)
		}
		doc := newPasswordDoc(&r.Password, slot, r.Pending)
		if r.Revoked != nil {
			doc.Revoked = &revocationDoc{Time: r.Revoked.Time, Reason: r.Revoked.Reason}
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		return 0, nil
	}
	res, err := s.passwords.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err != nil {
		stored := 0
		if res != nil {
			stored = len(res.InsertedIDs)
		}
		return stored, wrap(err)
	}
	return len(docs), nil
}

// ExportWebhookDeliveries implements apppass.StoreTransfer.
func (s *Store) ExportWebhookDeliveries(ctx context.Context, after string, limit int) ([]apppass.WebhookDelivery, error) {
	return s.findDeliveries(ctx,
		bson.D{{Key: "state", Value: apppass.DeliveryPending}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit)))
}

// ImportWebhookDeliveries implements apppass.StoreTransfer.
func (s *Store) ImportWebhookDeliveries(ctx context.Context, ds []apppass.WebhookDelivery) (int, error) {
	stored := 0
	for _, d := range ds {
		_, err := s.coll(deliveriesCollection).InsertOne(ctx, deliveryDoc{
			ID: d.ID, EventID: d.EventID, EventType: d.EventType, Endpoint: d.Endpoint, Body: string(d.Body),
			State: d.State, Attempts: d.Attempts, Created: d.Created, NextAttempt: d.NextAttempt, LastAttempt: d.LastAttempt,
			LastStatus: d.LastStatus, LastError: d.LastError, Finished: d.Finished, LeaseUntil: noLease,
		})
		if mongo.IsDuplicateKeyError(err) {
			continue
		}
		if err != nil {
			return stored, wrap(err)
		}
		stored++
	}
	return stored, nil
}

// instanceDoc says that an apppassd uses this database, until Until.
type instanceDoc struct {
	ID    string    `bson:"_id"`
	Until time.Time `bson:"until"`
}

// Heartbeat records that the apppassd id uses this database for the next
// ttl; apppassd calls it well within ttl, and Leave at a clean stop.
// `store copy` refuses to write into a database with a live one.
func (s *Store) Heartbeat(ctx context.Context, id string, ttl time.Duration) error {
	_, err := s.coll(instancesCollection).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}},
		instanceDoc{ID: id, Until: time.Now().Add(ttl)}, options.Replace().SetUpsert(true))
	return wrap(err)
}

// Leave forgets the apppassd id's heartbeat.
func (s *Store) Leave(ctx context.Context, id string) error {
	_, err := s.coll(instancesCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	return wrap(err)
}

// LiveInstances returns the apppassd whose heartbeat has not run out.
func (s *Store) LiveInstances(ctx context.Context) ([]string, error) {
	cur, err := s.coll(instancesCollection).Find(ctx, bson.D{{Key: "until", Value: bson.D{{Key: "$gt", Value: time.Now()}}}})
	if err != nil {
		return nil, wrap(err)
	}
	var docs []instanceDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
	}
	return ids, nil
}
