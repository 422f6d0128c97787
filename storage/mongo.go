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
	"sync/atomic"
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
	// digests maps a digest to its password's uuid, as {_id: digest}: on
	// FerretDB only a query on _id alone uses an index (anything else scans
	// the collection), so authenticate looks up two _ids instead.
	digests *mongo.Collection
	locks   docLocks
	ferret  atomic.Int32 // isFerretDB's answer: 0 not known yet, 1 yes, 2 no
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
		failures: client.Database(db).Collection("login_failures"),
		digests:  client.Database(db).Collection("password_digests")}
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
	// The digest entry goes first: if we die before the password document
	// is written, it points at nothing and authenticates nobody. (Digests
	// are HMACs of 75 random bits: two passwords never share one.)
	entry := bson.D{{Key: "_id", Value: p.Digest}}
	if _, err := s.digests.ReplaceOne(ctx, entry, digestDoc{Digest: p.Digest, UUID: p.UUID}, options.Replace().SetUpsert(true)); err != nil {
		return wrap(err)
	}
	err := s.insertPassword(ctx, p, created, limit)
	if err != nil {
		_, _ = s.digests.DeleteOne(context.WithoutCancel(ctx), entry) // best effort: a leftover is harmless
	}
	return err
}

func (s *Store) insertPassword(ctx context.Context, p *apppass.Password, created apppass.Event, limit int) error {
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
	return s.findPasswords(ctx, ownerFilter(owner),
		options.Find().SetSort(bson.D{{Key: "created", Value: -1}, {Key: "_id", Value: 1}}).SetProjection(listProjection))
}

// ListContext implements apppass.Store.
func (s *Store) ListContext(ctx context.Context, contextID int64, limit int) ([]apppass.Password, error) {
	return s.findPasswords(ctx, bson.D{{Key: "contextId", Value: contextID}, notRevoked},
		options.Find().SetLimit(int64(limit)).SetProjection(listProjection))
}

// Revoke implements apppass.Store: the revocation, the release of the
// slot and the revoked event are one update of one document.
func (s *Store) Revoke(ctx context.Context, owner apppass.User, uuid string, newEvent func(*apppass.Password) (apppass.Event, error)) ([]apppass.Event, error) {
	defer s.locks.lock(uuid)()
	filter := append(bson.D{{Key: "_id", Value: uuid}}, ownerFilter(owner)...)
	if s.isFerretDB(ctx) {
		// Only an _id-alone filter is indexed on FerretDB; under the
		// document's lock the owner check can be made in Go.
		filter = bson.D{{Key: "_id", Value: uuid}}
	}
	var cur passwordDoc
	err := s.passwords.FindOne(ctx, filter, options.FindOne().SetProjection(listProjection)).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && (cur.Revoked != nil || cur.ContextID != owner.ContextID || cur.UserID != owner.UserID)) {
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

// digestDoc is the authenticate lookup entry of a password.
type digestDoc struct {
	Digest string `bson:"_id"`
	UUID   string `bson:"uuid"`
}

// FindByDigest implements apppass.Store: two lookups by _id, indexed on
// MongoDB and FerretDB alike. The lookup is by keyed digest, so its timing
// tells nothing about the password.
func (s *Store) FindByDigest(ctx context.Context, digest string) (*apppass.Password, error) {
	var entry digestDoc
	err := s.digests.FindOne(ctx, bson.D{{Key: "_id", Value: digest}}).Decode(&entry)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, apppass.ErrRejected
	}
	if err != nil {
		return nil, wrap(err)
	}
	var d passwordDoc
	err = s.passwords.FindOne(ctx, bson.D{{Key: "_id", Value: entry.UUID}},
		options.FindOne().SetProjection(bson.D{{Key: "outbox", Value: 0}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && (d.Revoked != nil || d.Digest != digest)) {
		return nil, apppass.ErrRejected // revoked, or a leftover entry
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
	if s.isFerretDB(ctx) {
		return s.recordLoginByID(ctx, uuid, login, idleDeadline, used)
	}
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

// recordLoginByID is RecordLogin for FerretDB: the conditions are checked
// in Go and the update filters on _id alone, which FerretDB can look up
// by index (any other filter scans the collection). The caller holds the
// document's lock, and FerretDB serves one apppassd, so no write of this
// document can come in between.
func (s *Store) recordLoginByID(ctx context.Context, uuid string, login apppass.LastLogin, idleDeadline *time.Time, used *apppass.Event) (bool, error) {
	var cur struct {
		Revoked   *revocationDoc `bson:"revoked"`
		LastLogin *lastLoginDoc  `bson:"lastLogin"`
		KnownIPs  []string       `bson:"knownIPs"`
	}
	byID := bson.D{{Key: "_id", Value: uuid}}
	err := s.passwords.FindOne(ctx, byID, options.FindOne().SetProjection(bson.D{
		{Key: "revoked", Value: 1}, {Key: "lastLogin", Value: 1}, {Key: "knownIPs", Value: 1}})).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && cur.Revoked != nil) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	set := bson.D{{Key: "lastLogin", Value: lastLoginDoc(login)}}
	if idleDeadline != nil {
		set = append(set, bson.E{Key: "idleDeadline", Value: *idleDeadline})
	}
	update := bson.D{}
	queue := used != nil && ((used.Type == apppass.EventFirstUse && cur.LastLogin == nil) ||
		(used.Type != apppass.EventFirstUse && !slices.Contains(cur.KnownIPs, login.IP)))
	if queue {
		set = append(set, bson.E{Key: "outbox." + used.ID, Value: toEventDoc(*used)})
		update = append(update, bson.E{Key: "$inc", Value: bson.D{{Key: "pending", Value: 1}}})
		if login.IP != "" {
			update = append(update, bson.E{Key: "$addToSet", Value: bson.D{{Key: "knownIPs", Value: login.IP}}})
		}
	}
	update = append(update, bson.E{Key: "$set", Value: set})
	if _, err := s.passwords.UpdateOne(ctx, byID, update); err != nil {
		return false, wrap(err)
	}
	return queue, nil
}

// Expired implements apppass.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]apppass.Password, error) {
	return s.findPasswords(ctx, bson.D{notRevoked, {Key: "$or", Value: bson.A{
		bson.D{{Key: "expires", Value: bson.D{{Key: "$lte", Value: now}}}},
		bson.D{{Key: "idleDeadline", Value: bson.D{{Key: "$lte", Value: now}}}},
	}}}, options.Find().SetLimit(int64(limit)).SetProjection(listProjection))
}

// findPasswords runs a find on the passwords and decodes the documents.
func (s *Store) findPasswords(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]apppass.Password, error) {
	cur, err := s.passwords.Find(ctx, filter, opts)
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

// Pending implements apppass.Outbox. Passwords another relay is
// publishing are left out, so a sweep does not wait on them.
func (s *Store) Pending(ctx context.Context, limit int) ([]apppass.PendingEvents, error) {
	filter := bson.D{{Key: "pending", Value: bson.D{{Key: "$gt", Value: 0}}}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "outboxClaim", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "outboxClaim.until", Value: bson.D{{Key: "$lte", Value: time.Now()}}}},
	}}}
	cur, err := s.passwords.Find(ctx, filter,
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
	return s.markPublished(ctx, uuid, ev, nil)
}

// markPublished removes ev from the outbox of uuid; with releaseBy set, it
// also ends that owner's claim in the same write, if the owner still holds
// it. The caller holds the document's lock.
func (s *Store) markPublished(ctx context.Context, uuid string, ev apppass.Event, releaseBy *string) error {
	if s.isFerretDB(ctx) {
		return s.markPublishedByID(ctx, uuid, ev, releaseBy)
	}
	field := "outbox." + ev.ID
	filter := bson.D{{Key: "_id", Value: uuid}, {Key: field, Value: bson.D{{Key: "$exists", Value: true}}}}
	if releaseBy != nil {
		filter = append(filter, bson.E{Key: "outboxClaim.owner", Value: *releaseBy})
	}
	if ev.Type == apppass.EventRevoked {
		// The common end of a revoked password: its last event is out,
		// so the document goes, in one write.
		res, err := s.passwords.DeleteOne(ctx, append(filter,
			bson.E{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}, bson.E{Key: "pending", Value: 1}))
		if err != nil {
			return wrap(err)
		}
		if res.DeletedCount == 1 {
			return nil
		}
	}
	unset := bson.D{{Key: field, Value: ""}}
	if releaseBy != nil {
		unset = append(unset, bson.E{Key: "outboxClaim", Value: ""})
	}
	res, err := s.passwords.UpdateOne(ctx, filter,
		bson.D{{Key: "$unset", Value: unset}, {Key: "$inc", Value: bson.D{{Key: "pending", Value: -1}}}})
	if err != nil {
		return wrap(err)
	}
	if releaseBy != nil && res.MatchedCount == 0 {
		// The event was marked already, or the claim is no longer ours
		// (its lease ran out and another relay took over): one at a time.
		if err := s.markPublished(ctx, uuid, ev, nil); err != nil {
			return err
		}
		return s.releaseClaim(ctx, uuid, *releaseBy)
	}
	if ev.Type == apppass.EventRevoked {
		_, err = s.passwords.DeleteOne(ctx, bson.D{{Key: "_id", Value: uuid},
			{Key: "revoked", Value: bson.D{{Key: "$exists", Value: true}}}, {Key: "pending", Value: 0}})
	}
	return wrap(err)
}

// claimDoc is a relay's lease on one password's outbox.
type claimDoc struct {
	Owner string    `bson:"owner"`
	Until time.Time `bson:"until"`
}

// ClaimPending implements apppass.Outbox: one conditional update of one
// document, atomic on MongoDB. On FerretDB the in-process lock makes it
// atomic within one apppassd; across processes two relays may both win a
// race there, and JetStream drops the second copy by event id.
func (s *Store) ClaimPending(ctx context.Context, uuid, owner string, lease time.Duration) ([]apppass.Event, error) {
	defer s.locks.lock(uuid)()
	if s.isFerretDB(ctx) {
		return s.claimByID(ctx, uuid, owner, lease)
	}
	for attempt := 0; ; attempt++ {
		now := time.Now().UTC()
		filter := bson.D{{Key: "_id", Value: uuid}, {Key: "pending", Value: bson.D{{Key: "$gt", Value: 0}}}, {Key: "$or", Value: bson.A{
			bson.D{{Key: "outboxClaim", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "outboxClaim.until", Value: bson.D{{Key: "$lte", Value: now}}}},
			bson.D{{Key: "outboxClaim.owner", Value: owner}},
		}}}
		update := bson.D{{Key: "$set", Value: bson.D{{Key: "outboxClaim", Value: claimDoc{Owner: owner, Until: now.Add(lease)}}}}}
		var after passwordDoc
		// (No projection: FerretDB v1 does not support one on findAndModify.)
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
			return nil, nil // published and deleted
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
	defer s.locks.lock(uuid)()
	if published != nil {
		return s.markPublished(ctx, uuid, *published, &owner)
	}
	return s.releaseClaim(ctx, uuid, owner)
}

func (s *Store) releaseClaim(ctx context.Context, uuid, owner string) error {
	if s.isFerretDB(ctx) {
		d, err := s.outboxByID(ctx, uuid)
		if err != nil || d == nil || d.Claim == nil || d.Claim.Owner != owner {
			return err
		}
		_, err = s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}},
			bson.D{{Key: "$unset", Value: bson.D{{Key: "outboxClaim", Value: ""}}}})
		return wrap(err)
	}
	_, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}, {Key: "outboxClaim.owner", Value: owner}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "outboxClaim", Value: ""}}}})
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

// FerretDB v1 (SQLite) looks a document up by index only when the filter is
// exactly {_id: v}; any other condition scans the whole collection, and its
// conditional updates are a read, a check in Go and a write, without
// isolation. So on FerretDB the outbox methods do the same themselves with
// _id-only reads and writes, under the document's lock: as atomic as
// FerretDB's own within one apppassd, and no collection scan per event.
// On MongoDB they use conditional single-document updates, atomic anywhere.

// isFerretDB reports whether the server is FerretDB. Until the server has
// answered, it says no: the conditional updates are right on both.
func (s *Store) isFerretDB(ctx context.Context) bool {
	switch s.ferret.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	var info bson.M
	if err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return false
	}
	if _, ok := info["ferretdbVersion"]; ok {
		s.ferret.Store(1)
		return true
	}
	s.ferret.Store(2)
	return false
}

// outboxDoc is the outbox side of a password document.
type outboxDoc struct {
	Outbox  map[string]eventDoc `bson:"outbox"`
	Pending int                 `bson:"pending"`
	Revoked *revocationDoc      `bson:"revoked,omitempty"`
	Claim   *claimDoc           `bson:"outboxClaim,omitempty"`
}

var outboxProjection = bson.D{{Key: "outbox", Value: 1}, {Key: "pending", Value: 1}, {Key: "revoked", Value: 1}, {Key: "outboxClaim", Value: 1}}

// outboxByID reads the outbox of uuid; nil when there is no such document.
func (s *Store) outboxByID(ctx context.Context, uuid string) (*outboxDoc, error) {
	var d outboxDoc
	err := s.passwords.FindOne(ctx, bson.D{{Key: "_id", Value: uuid}}, options.FindOne().SetProjection(outboxProjection)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	return &d, nil
}

// claimByID is ClaimPending on FerretDB; the caller holds the lock.
func (s *Store) claimByID(ctx context.Context, uuid, owner string, lease time.Duration) ([]apppass.Event, error) {
	d, err := s.outboxByID(ctx, uuid)
	if err != nil || d == nil || d.Pending <= 0 {
		return nil, err
	}
	now := time.Now().UTC()
	if c := d.Claim; c != nil && c.Owner != owner && c.Until.After(now) {
		return nil, apppass.ErrClaimed
	}
	_, err = s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "outboxClaim", Value: claimDoc{Owner: owner, Until: now.Add(lease)}}}}})
	if err != nil {
		return nil, wrap(err)
	}
	return (&passwordDoc{Outbox: d.Outbox}).pendingEvents(), nil
}

// markPublishedByID is markPublished on FerretDB; the caller holds the lock.
func (s *Store) markPublishedByID(ctx context.Context, uuid string, ev apppass.Event, releaseBy *string) error {
	d, err := s.outboxByID(ctx, uuid)
	if err != nil || d == nil {
		return err
	}
	byID := bson.D{{Key: "_id", Value: uuid}}
	release := releaseBy != nil && d.Claim != nil && d.Claim.Owner == *releaseBy
	if _, queued := d.Outbox[ev.ID]; !queued {
		if release {
			_, err = s.passwords.UpdateOne(ctx, byID, bson.D{{Key: "$unset", Value: bson.D{{Key: "outboxClaim", Value: ""}}}})
		}
		return wrap(err)
	}
	if d.Revoked != nil && d.Pending == 1 && len(d.Outbox) == 1 {
		_, err = s.passwords.DeleteOne(ctx, byID)
		return wrap(err)
	}
	unset := bson.D{{Key: "outbox." + ev.ID, Value: ""}}
	if release {
		unset = append(unset, bson.E{Key: "outboxClaim", Value: ""})
	}
	_, err = s.passwords.UpdateOne(ctx, byID, bson.D{{Key: "$unset", Value: unset}, {Key: "$inc", Value: bson.D{{Key: "pending", Value: -1}}}})
	return wrap(err)
}
