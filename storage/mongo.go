// Package storage keeps app passwords in MongoDB (or FerretDB, which speaks
// its wire protocol) through the official driver. Every change touches one
// document, because FerretDB has no multi-document transactions: a password,
// its revocation and its unpublished events live in the same document.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/apppass/apppass"
)

// Store implements apppass.Store and apppass.Outbox on one MongoDB database.
type Store struct {
	client    *mongo.Client
	passwords *mongo.Collection
	failures  *mongo.Collection // login failure tallies for the throttle
	locks     docLocks
}

// Open connects to uri, uses database db, and creates the indexes. It waits
// for the server only as long as ctx allows.
func Open(ctx context.Context, uri, db string) (*Store, error) {
	opts := options.Client().ApplyURI(uri).
		// Fail fast when MongoDB is away: callers get -32050 within seconds.
		SetServerSelectionTimeout(3 * time.Second).
		SetConnectTimeout(3 * time.Second)
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connecting to MongoDB: %w", err)
	}
	s := &Store{client: client, passwords: client.Database(db).Collection("app_passwords"),
		failures: client.Database(db).Collection("login_failures")}
	if err := s.createIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Store) createIndexes(ctx context.Context) error {
	err := ensureIndexes(ctx, s.failures, []mongo.IndexModel{
		{Keys: bson.D{{Key: "lastFailure", Value: 1}}, Options: options.Index().SetName("lastFailure")},
	})
	if err != nil {
		return err
	}
	return ensureIndexes(ctx, s.passwords, []mongo.IndexModel{
		// authenticate: one lookup by digest.
		{Keys: bson.D{{Key: "digest", Value: 1}}, Options: options.Index().SetUnique(true).SetName("digest")},
		// The per-user limit: an active password holds one of its owner's
		// numbered slots, and a slot can be held only once.
		{Keys: bson.D{{Key: "slot", Value: 1}}, Options: options.Index().SetUnique(true).SetName("slot")},
		// list: a user's passwords, newest first.
		{Keys: bson.D{{Key: "contextId", Value: 1}, {Key: "userId", Value: 1}, {Key: "created", Value: -1}}, Options: options.Index().SetName("owner_created")},
		// the outbox relay's sweep.
		{Keys: bson.D{{Key: "pending", Value: 1}}, Options: options.Index().SetName("pending")},
		// the expiry sweeper.
		{Keys: bson.D{{Key: "expires", Value: 1}}, Options: options.Index().SetName("expires")},
		{Keys: bson.D{{Key: "idleDeadline", Value: 1}}, Options: options.Index().SetName("idleDeadline")},
	})
}

// ensureIndexes creates the wanted indexes of coll that are missing.
func ensureIndexes(ctx context.Context, coll *mongo.Collection, wanted []mongo.IndexModel) error {
	// Create only the missing ones: FerretDB v1 fails on a createIndexes
	// that repeats an existing index.
	existing, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("listing MongoDB indexes: %w", wrap(err))
	}
	var missing []mongo.IndexModel
	for _, m := range wanted {
		name := *indexName(m)
		if !slices.ContainsFunc(existing, func(e mongo.IndexSpecification) bool { return e.Name == name }) {
			missing = append(missing, m)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := coll.Indexes().CreateMany(ctx, missing); err != nil {
		return fmt.Errorf("creating MongoDB indexes: %w", wrap(err))
	}
	return nil
}

func indexName(m mongo.IndexModel) *string {
	var o options.IndexOptions
	for _, set := range m.Options.List() {
		_ = set(&o)
	}
	return o.Name
}

// Ping checks that MongoDB answers.
func (s *Store) Ping(ctx context.Context) error { return wrap(s.client.Ping(ctx, nil)) }

// Close disconnects.
func (s *Store) Close(ctx context.Context) error { return s.client.Disconnect(ctx) }

// passwordDoc is the stored shape of an app password.
type passwordDoc struct {
	UUID      string         `bson:"_id"`
	ContextID int64          `bson:"contextId"`
	UserID    int64          `bson:"userId"`
	Login     string         `bson:"login"`
	LoginKey  string         `bson:"loginKey"`
	AppScope  string         `bson:"appScope"`
	Name      string         `bson:"name"`
	Created   time.Time      `bson:"created"`
	Digest    string         `bson:"digest"`
	KeyID     string         `bson:"keyId"`
	Slot      string         `bson:"slot"`
	Revoked   *revocationDoc `bson:"revoked,omitempty"`
	LastLogin *lastLoginDoc  `bson:"lastLogin,omitempty"`
	// Limits; IdleDeadline is the last use plus IdleExpiry, for the sweeper.
	Expires      *time.Time          `bson:"expires,omitempty"`
	IdleExpiry   int64               `bson:"idleExpiryMs,omitempty"`
	IdleDeadline *time.Time          `bson:"idleDeadline,omitempty"`
	AllowedIPs   []string            `bson:"allowedIPs,omitempty"`
	KnownIPs     []string            `bson:"knownIPs,omitempty"`
	Outbox       map[string]eventDoc `bson:"outbox"`
	Pending      int                 `bson:"pending"`
}

type revocationDoc struct {
	Time   time.Time `bson:"time"`
	Reason string    `bson:"reason"`
}

type lastLoginDoc struct {
	Time      time.Time `bson:"time"`
	IP        string    `bson:"ip"`
	Device    string    `bson:"device"`
	UserAgent string    `bson:"userAgent"`
}

type eventDoc struct {
	ID        string    `bson:"id"`
	Type      string    `bson:"type"`
	Timestamp time.Time `bson:"timestamp"`
	UUID      string    `bson:"uuid"`
	ContextID int64     `bson:"contextId"`
	UserID    int64     `bson:"userId"`
	Login     string    `bson:"login"`
	AppScope  string    `bson:"appScope"`
	Name      string    `bson:"name"`
	Reason    string    `bson:"reason,omitempty"`
	IP        string    `bson:"ip,omitempty"`
	Device    string    `bson:"device,omitempty"`
	UserAgent string    `bson:"userAgent,omitempty"`
}

func toEventDoc(e apppass.Event) eventDoc {
	d := e.Data
	return eventDoc{ID: e.ID, Type: e.Type, Timestamp: e.Timestamp, UUID: d.UUID, ContextID: d.ContextID,
		UserID: d.UserID, Login: d.Login, AppScope: d.AppScope, Name: d.Name, Reason: d.Reason,
		IP: d.IP, Device: d.Device, UserAgent: d.UserAgent}
}

func (d eventDoc) event() apppass.Event {
	return apppass.Event{ID: d.ID, Type: d.Type, Timestamp: d.Timestamp.UTC(), Data: apppass.EventData{
		UUID: d.UUID, ContextID: d.ContextID, UserID: d.UserID, Login: d.Login, AppScope: d.AppScope, Name: d.Name, Reason: d.Reason,
		IP: d.IP, Device: d.Device, UserAgent: d.UserAgent}}
}

func (d *passwordDoc) password() apppass.Password {
	p := apppass.Password{
		UUID: d.UUID, Owner: apppass.User{ContextID: d.ContextID, UserID: d.UserID, Login: d.Login},
		AppScope: d.AppScope, Name: d.Name, Created: d.Created.UTC(), Digest: d.Digest, KeyID: d.KeyID,
	}
	if l := d.LastLogin; l != nil {
		p.LastLogin = &apppass.LastLogin{Time: l.Time.UTC(), IP: l.IP, Device: l.Device, UserAgent: l.UserAgent}
	}
	if d.Expires != nil {
		t := d.Expires.UTC()
		p.Expires = &t
	}
	p.IdleExpiry = time.Duration(d.IdleExpiry) * time.Millisecond
	for _, s := range d.AllowedIPs {
		if prefix, err := netip.ParsePrefix(s); err == nil {
			p.AllowedIPs = append(p.AllowedIPs, prefix)
		}
	}
	p.KnownIPs = d.KnownIPs
	return p
}

func (d *passwordDoc) pendingEvents() []apppass.Event {
	evs := make([]apppass.Event, 0, len(d.Outbox))
	for _, e := range d.Outbox {
		evs = append(evs, e.event())
	}
	slices.SortFunc(evs, apppass.PublishOrder)
	return evs
}

func slotKey(owner apppass.User, n int) string {
	return strconv.FormatInt(owner.ContextID, 10) + ":" + strconv.FormatInt(owner.UserID, 10) + ":" + strconv.Itoa(n)
}

func ownerFilter(owner apppass.User) bson.D {
	return bson.D{{Key: "contextId", Value: owner.ContextID}, {Key: "userId", Value: owner.UserID}, {Key: "revoked", Value: bson.D{{Key: "$exists", Value: false}}}}
}

// Insert implements apppass.Store. The limit holds without transactions:
// the new document takes the lowest free slot number below limit, and the
// unique slot index lets only one of two racing inserts have it; the loser
// looks again and finds the user full, or the next free slot.
func (s *Store) Insert(ctx context.Context, p *apppass.Password, created apppass.Event, limit int) error {
	for attempt := 0; attempt < limit+4; attempt++ {
		held, err := s.heldSlots(ctx, p.Owner)
		if err != nil {
			return err
		}
		if len(held) >= limit {
			return apppass.ErrLimit
		}
		free := 0
		for held[slotKey(p.Owner, free)] {
			free++
		}
		if free >= limit {
			return apppass.ErrLimit
		}
		doc := passwordDoc{
			UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID, Login: p.Owner.Login,
			LoginKey: apppass.LoginKey(p.Owner.Login), AppScope: p.AppScope, Name: p.Name, Created: p.Created,
			Digest: p.Digest, KeyID: p.KeyID, Slot: slotKey(p.Owner, free),
			Outbox: map[string]eventDoc{created.ID: toEventDoc(created)}, Pending: 1,
			Expires: p.Expires, IdleExpiry: p.IdleExpiry.Milliseconds(),
		}
		if p.IdleExpiry > 0 {
			deadline := p.Created.Add(p.IdleExpiry)
			doc.IdleDeadline = &deadline
		}
		for _, prefix := range p.AllowedIPs {
			doc.AllowedIPs = append(doc.AllowedIPs, prefix.String())
		}
		_, err = s.passwords.InsertOne(ctx, doc)
		if mongo.IsDuplicateKeyError(err) {
			continue // another insert took the slot first
		}
		return wrap(err)
	}
	return &apppass.Error{Kind: apppass.KindUnavailable, Message: "too much contention adding app passwords, try again"}
}

func (s *Store) heldSlots(ctx context.Context, owner apppass.User) (map[string]bool, error) {
	cur, err := s.passwords.Find(ctx, ownerFilter(owner), options.Find().SetProjection(bson.D{{Key: "slot", Value: 1}}))
	if err != nil {
		return nil, wrap(err)
	}
	var docs []struct {
		Slot string `bson:"slot"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	held := make(map[string]bool, len(docs))
	for _, d := range docs {
		held[d.Slot] = true
	}
	return held, nil
}

// listProjection leaves out what List never shows.
var listProjection = bson.D{{Key: "digest", Value: 0}, {Key: "outbox", Value: 0}}

// List implements apppass.Store.
func (s *Store) List(ctx context.Context, owner apppass.User) ([]apppass.Password, error) {
	cur, err := s.passwords.Find(ctx, ownerFilter(owner),
		options.Find().SetSort(bson.D{{Key: "created", Value: -1}, {Key: "_id", Value: 1}}).SetProjection(listProjection))
	if err != nil {
		return nil, wrap(err)
	}
	var docs []passwordDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.Password, len(docs))
	for i := range docs {
		out[i] = docs[i].password()
	}
	return out, nil
}

// Revoke implements apppass.Store: the revocation, the release of the
// slot and the revoked event are one update of one document.
func (s *Store) Revoke(ctx context.Context, owner apppass.User, uuid string, newEvent func(*apppass.Password) (apppass.Event, error)) ([]apppass.Event, error) {
	defer s.locks.lock(uuid)()
	filter := append(bson.D{{Key: "_id", Value: uuid}}, ownerFilter(owner)...)
	var cur passwordDoc
	err := s.passwords.FindOne(ctx, filter, options.FindOne().SetProjection(listProjection)).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, apppass.ErrNotFound
	}
	if err != nil {
		return nil, wrap(err)
	}
	p := cur.password()
	ev, err := newEvent(&p)
	if err != nil {
		return nil, err
	}
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "revoked", Value: revocationDoc{Time: ev.Timestamp, Reason: ev.Data.Reason}},
			{Key: "slot", Value: "revoked:" + uuid},
			{Key: "outbox." + ev.ID, Value: toEventDoc(ev)},
		}},
		{Key: "$inc", Value: bson.D{{Key: "pending", Value: 1}}},
	}
	var after passwordDoc
	err = s.passwords.FindOneAndUpdate(ctx, filter, update,
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, apppass.ErrNotFound // revoked by someone else in between
	}
	if err != nil {
		return nil, wrap(err)
	}
	return after.pendingEvents(), nil
}

// FindByDigest implements apppass.Store. The lookup is by keyed digest,
// so its timing tells nothing about the password.
func (s *Store) FindByDigest(ctx context.Context, digest string) (*apppass.Password, error) {
	var d passwordDoc
	err := s.passwords.FindOne(ctx, bson.D{{Key: "digest", Value: digest}, notRevoked},
		options.FindOne().SetProjection(bson.D{{Key: "outbox", Value: 0}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, apppass.ErrRejected
	}
	if err != nil {
		return nil, wrap(err)
	}
	p := d.password()
	return &p, nil
}

var notRevoked = bson.E{Key: "revoked", Value: bson.D{{Key: "$exists", Value: false}}}

// RecordLogin implements apppass.Store.
func (s *Store) RecordLogin(ctx context.Context, uuid string, login apppass.LastLogin, idleDeadline *time.Time, used *apppass.Event) (bool, error) {
	defer s.locks.lock(uuid)()
	set := bson.D{{Key: "lastLogin", Value: lastLoginDoc(login)}}
	if idleDeadline != nil {
		set = append(set, bson.E{Key: "idleDeadline", Value: *idleDeadline})
	}
	if used != nil {
		filter := bson.D{{Key: "_id", Value: uuid}, notRevoked}
		if used.Type == apppass.EventFirstUse {
			filter = append(filter, bson.E{Key: "lastLogin", Value: bson.D{{Key: "$exists", Value: false}}})
		} else {
			filter = append(filter, bson.E{Key: "knownIPs", Value: bson.D{{Key: "$ne", Value: login.IP}}})
		}
		update := bson.D{
			{Key: "$set", Value: append(set, bson.E{Key: "outbox." + used.ID, Value: toEventDoc(*used)})},
			{Key: "$inc", Value: bson.D{{Key: "pending", Value: 1}}},
		}
		if login.IP != "" {
			update = append(update, bson.E{Key: "$addToSet", Value: bson.D{{Key: "knownIPs", Value: login.IP}}})
		}
		res, err := s.passwords.UpdateOne(ctx, filter, update)
		if err != nil {
			return false, wrap(err)
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
		// Another login recorded this first use or IP first: just the login.
	}
	_, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}, notRevoked}, bson.D{{Key: "$set", Value: set}})
	return false, wrap(err)
}

// Expired implements apppass.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]apppass.Password, error) {
	cur, err := s.passwords.Find(ctx, bson.D{notRevoked, {Key: "$or", Value: bson.A{
		bson.D{{Key: "expires", Value: bson.D{{Key: "$lte", Value: now}}}},
		bson.D{{Key: "idleDeadline", Value: bson.D{{Key: "$lte", Value: now}}}},
	}}}, options.Find().SetLimit(int64(limit)).SetProjection(listProjection))
	if err != nil {
		return nil, wrap(err)
	}
	var docs []passwordDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(err)
	}
	out := make([]apppass.Password, len(docs))
	for i := range docs {
		out[i] = docs[i].password()
	}
	return out, nil
}

// Pending implements apppass.Outbox.
func (s *Store) Pending(ctx context.Context, limit int) ([]apppass.PendingEvents, error) {
	cur, err := s.passwords.Find(ctx, bson.D{{Key: "pending", Value: bson.D{{Key: "$gt", Value: 0}}}},
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

// MarkPublished implements apppass.Outbox. Once a revoked password has no
// event left to publish, nothing needs it any more and it is deleted.
func (s *Store) MarkPublished(ctx context.Context, uuid string, ev apppass.Event) error {
	defer s.locks.lock(uuid)()
	field := "outbox." + ev.ID
	_, err := s.passwords.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: uuid}, {Key: field, Value: bson.D{{Key: "$exists", Value: true}}}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: field, Value: ""}}}, {Key: "$inc", Value: bson.D{{Key: "pending", Value: -1}}}})
	if err != nil {
		return wrap(err)
	}
	if ev.Type == apppass.EventRevoked {
		_, err = s.passwords.DeleteOne(ctx, bson.D{{Key: "_id", Value: uuid},
			{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}, {Key: "pending", Value: 0}})
	}
	return wrap(err)
}

// PendingCount implements apppass.Outbox.
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
	cur, err := s.passwords.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "pending", Value: bson.D{{Key: "$gt", Value: 0}}}}}},
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

// wrap turns driver errors that mean "MongoDB cannot be reached" into
// apppass unavailable errors; others stay internal.
func wrap(err error) error {
	if err == nil {
		return nil
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
