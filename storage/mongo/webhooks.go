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

func (s *Store) coll(name string) *mongo.Collection { return s.db.Collection(name) }

// deliveryDoc is the stored shape of a webhook delivery. leaseUntil is
// always set (the zero time when not leased), so one range query finds
// the unleased ones.
type deliveryDoc struct {
	ID          string     `bson:"_id"`
	EventID     string     `bson:"eventId"`
	EventType   string     `bson:"eventType"`
	Endpoint    string     `bson:"endpoint"`
	Body        string     `bson:"body,omitempty"`
	State       string     `bson:"state"`
	Attempts    int        `bson:"attempts"`
	Created     time.Time  `bson:"created"`
	NextAttempt *time.Time `bson:"nextAttempt,omitempty"`
	LastAttempt *time.Time `bson:"lastAttempt,omitempty"`
	LastStatus  int        `bson:"lastStatus,omitempty"`
	LastError   string     `bson:"lastError,omitempty"`
	Finished    *time.Time `bson:"finished,omitempty"`
	LeaseUntil  time.Time  `bson:"leaseUntil"`
	LeaseToken  string     `bson:"leaseToken"`
}

var noLease = time.Unix(0, 0).UTC()

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func (d *deliveryDoc) delivery() apppass.WebhookDelivery {
	return apppass.WebhookDelivery{
		ID: d.ID, EventID: d.EventID, EventType: d.EventType, Endpoint: d.Endpoint, Body: []byte(d.Body),
		State: d.State, Attempts: d.Attempts, Created: d.Created.UTC(), NextAttempt: utcPtr(d.NextAttempt),
		LastAttempt: utcPtr(d.LastAttempt), LastStatus: d.LastStatus, LastError: d.LastError,
		Finished: utcPtr(d.Finished), LeaseToken: d.LeaseToken,
	}
}

// EnqueueWebhook implements apppass.WebhookStore: one insert, and the
// unique _id makes a second one (a redelivered NATS message) a no-op.
func (s *Store) EnqueueWebhook(ctx context.Context, d apppass.WebhookDelivery) (bool, error) {
	next := d.Created
	_, err := s.coll(deliveriesCollection).InsertOne(ctx, deliveryDoc{
		ID: d.ID, EventID: d.EventID, EventType: d.EventType, Endpoint: d.Endpoint, Body: string(d.Body),
		State: apppass.DeliveryPending, Created: d.Created, NextAttempt: &next, LeaseUntil: noLease,
	})
	if mongo.IsDuplicateKeyError(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// ClaimWebhooks implements apppass.WebhookStore. It reads a few more
// candidates than it needs, then takes each with a conditional update on
// its state, due time and lease, so of two claimers only one gets it.
func (s *Store) ClaimWebhooks(ctx context.Context, now, leaseUntil time.Time, token string, skip []string, limit int) ([]apppass.WebhookDelivery, error) {
	due := bson.D{
		{Key: "state", Value: apppass.DeliveryPending},
		{Key: "nextAttempt", Value: bson.D{{Key: "$lte", Value: now}}},
		{Key: "leaseUntil", Value: bson.D{{Key: "$lte", Value: now}}},
	}
	filter := due
	if len(skip) > 0 {
		filter = append(append(bson.D{}, due...), bson.E{Key: "endpoint", Value: bson.D{{Key: "$nin", Value: skip}}})
	}
	coll := s.coll(deliveriesCollection)
	cur, err := coll.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "nextAttempt", Value: 1}}).
		SetLimit(int64(limit)+8).SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, wrap(err)
	}
	var ids []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &ids); err != nil {
		return nil, wrap(err)
	}
	var out []apppass.WebhookDelivery
	for _, c := range ids {
		if len(out) >= limit {
			break
		}
		d, err := s.claimOne(ctx, coll, c.ID, due, leaseUntil, token)
		if err != nil {
			return out, err
		}
		if d != nil {
			out = append(out, *d)
		}
	}
	return out, nil
}

func (s *Store) claimOne(ctx context.Context, coll *mongo.Collection, id string, due bson.D, leaseUntil time.Time, token string) (*apppass.WebhookDelivery, error) {
	defer s.isolate(deliveriesCollection, id)()
	var d deliveryDoc
	err := coll.FindOneAndUpdate(ctx, append(bson.D{{Key: "_id", Value: id}}, due...),
		bson.D{{Key: "$set", Value: bson.D{{Key: "leaseUntil", Value: leaseUntil}, {Key: "leaseToken", Value: token}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil // another claimer was first
	}
	if err != nil {
		return nil, wrap(err)
	}
	if d.LeaseToken != token {
		return nil, nil
	}
	out := d.delivery()
	return &out, nil
}

// FinishWebhookAttempt implements apppass.WebhookStore.
func (s *Store) FinishWebhookAttempt(ctx context.Context, id, token string, o apppass.WebhookOutcome) error {
	defer s.isolate(deliveriesCollection, id)()
	set := bson.D{{Key: "state", Value: o.State}, {Key: "leaseUntil", Value: noLease}, {Key: "leaseToken", Value: ""}}
	unset := bson.D{}
	update := bson.D{}
	if o.Counted {
		set = append(set, bson.E{Key: "lastAttempt", Value: o.At}, bson.E{Key: "lastStatus", Value: o.Status},
			bson.E{Key: "lastError", Value: o.Error})
		update = append(update, bson.E{Key: "$inc", Value: bson.D{{Key: "attempts", Value: 1}}})
	}
	if o.State == apppass.DeliveryPending {
		set = append(set, bson.E{Key: "nextAttempt", Value: o.NextAttempt})
	} else {
		set = append(set, bson.E{Key: "finished", Value: o.At})
		unset = append(unset, bson.E{Key: "nextAttempt", Value: ""})
		if o.State == apppass.DeliveryDelivered {
			// The body is not needed any more; failed ones keep it for a
			// manual look.
			unset = append(unset, bson.E{Key: "body", Value: ""})
		}
	}
	update = append(update, bson.E{Key: "$set", Value: set})
	if len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	res, err := s.coll(deliveriesCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "leaseToken", Value: token}}, update)
	if err != nil {
		return wrap(err)
	}
	if res.MatchedCount == 0 {
		return apppass.ErrLeaseLost
	}
	return nil
}

// WebhookDeliveries implements apppass.WebhookStore.
func (s *Store) WebhookDeliveries(ctx context.Context, q apppass.WebhookQuery) ([]apppass.WebhookDelivery, error) {
	filter := bson.D{}
	if q.State != "" {
		filter = append(filter, bson.E{Key: "state", Value: q.State})
	}
	if q.Endpoint != "" {
		filter = append(filter, bson.E{Key: "endpoint", Value: q.Endpoint})
	}
	return s.findDeliveries(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "created", Value: -1}, {Key: "_id", Value: 1}}).
		SetLimit(int64(q.Limit)).SetProjection(bson.D{{Key: "body", Value: 0}}))
}

// findDeliveries runs a find on the deliveries, without their lease tokens.
func (s *Store) findDeliveries(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]apppass.WebhookDelivery, error) {
	cur, err := s.coll(deliveriesCollection).Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap(err)
	}
	var docs []deliveryDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.WebhookDelivery, len(docs))
	for i := range docs {
		out[i] = docs[i].delivery()
		out[i].LeaseToken = ""
	}
	return out, nil
}

// CountWebhookDeliveries implements apppass.WebhookStore.
func (s *Store) CountWebhookDeliveries(ctx context.Context, endpoint, state string) (int64, error) {
	n, err := s.coll(deliveriesCollection).CountDocuments(ctx, bson.D{{Key: "endpoint", Value: endpoint}, {Key: "state", Value: state}})
	return n, wrap(err)
}

// PurgeWebhookDeliveries implements apppass.WebhookStore.
func (s *Store) PurgeWebhookDeliveries(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.coll(deliveriesCollection).DeleteMany(ctx, bson.D{
		{Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{apppass.DeliveryDelivered, apppass.DeliveryFailed}}}},
		{Key: "finished", Value: bson.D{{Key: "$lt", Value: before}}},
	})
	if err != nil {
		return 0, wrap(err)
	}
	return res.DeletedCount, nil
}

type endpointDoc struct {
	Name     string    `bson:"_id"`
	URL      string    `bson:"url"`
	Disabled time.Time `bson:"disabled"`
	Reason   string    `bson:"reason"`
}

// DisableWebhookEndpoint implements apppass.WebhookStore.
func (s *Store) DisableWebhookEndpoint(ctx context.Context, st apppass.WebhookEndpointState) error {
	defer s.isolate(endpointsCollection, st.Name)()
	_, err := s.coll(endpointsCollection).ReplaceOne(ctx, bson.D{{Key: "_id", Value: st.Name}},
		endpointDoc{Name: st.Name, URL: st.URL, Disabled: st.Disabled, Reason: st.Reason},
		options.Replace().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return nil // another replica disabled it at the same moment
	}
	return wrap(err)
}

// EnableWebhookEndpoint implements apppass.WebhookStore.
func (s *Store) EnableWebhookEndpoint(ctx context.Context, name string) (bool, error) {
	defer s.isolate(endpointsCollection, name)()
	res, err := s.coll(endpointsCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: name}})
	if err != nil {
		return false, wrap(err)
	}
	return res.DeletedCount > 0, nil
}

// WebhookEndpointStates implements apppass.WebhookStore.
func (s *Store) WebhookEndpointStates(ctx context.Context) ([]apppass.WebhookEndpointState, error) {
	cur, err := s.coll(endpointsCollection).Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap(err)
	}
	var docs []endpointDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.WebhookEndpointState, len(docs))
	for i, d := range docs {
		out[i] = apppass.WebhookEndpointState{Name: d.Name, URL: d.URL, Disabled: d.Disabled.UTC(), Reason: d.Reason}
	}
	return out, nil
}

// SeenWebhookID implements apppass.ReplayStore.
func (s *Store) SeenWebhookID(ctx context.Context, id string) (bool, error) {
	err := s.coll(seenCollection).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// RememberWebhookID implements apppass.ReplayStore: one insert; the
// unique _id keeps the first record.
func (s *Store) RememberWebhookID(ctx context.Context, id string, at time.Time) error {
	_, err := s.coll(seenCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "seen", Value: at}})
	if mongo.IsDuplicateKeyError(err) {
		return nil
	}
	return wrap(err)
}

// PurgeWebhookIDs implements apppass.ReplayStore.
func (s *Store) PurgeWebhookIDs(ctx context.Context, before time.Time) error {
	_, err := s.coll(seenCollection).DeleteMany(ctx, bson.D{{Key: "seen", Value: bson.D{{Key: "$lt", Value: before}}}})
	return wrap(err)
}
