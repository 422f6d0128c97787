package mongo

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/apppass/apppass"
)

// passwordDoc is the stored shape of an app password.
type passwordDoc struct {
	UUID      string         `bson:"_id"`
	ContextID int64          `bson:"contextId"`
	UserID    int64          `bson:"userId"`
	Login     string         `bson:"login"`
	AppScope  string         `bson:"appScope"`
	Name      string         `bson:"name"`
	Created   time.Time      `bson:"created"`
	Digest    string         `bson:"digest"`
	KeyID     string         `bson:"keyId"`
	Slot      string         `bson:"slot"`
	Revoked   *revocationDoc `bson:"revoked,omitempty"`
	LastLogin *lastLoginDoc  `bson:"lastLogin,omitempty"`
	// Limits; IdleDeadline is the last use plus IdleExpiry, for the sweeper.
	Expires      *time.Time `bson:"expires,omitempty"`
	IdleExpiry   int64      `bson:"idleExpiryMs,omitempty"`
	IdleDeadline *time.Time `bson:"idleDeadline,omitempty"`
	AllowedIPs   []string   `bson:"allowedIPs,omitempty"`
	KnownIPs     []string   `bson:"knownIPs,omitempty"`
	// Outbox holds the unpublished events by id (a map, because FerretDB
	// cannot $pull from an array by condition), Pending counts them.
	Outbox  map[string]eventDoc `bson:"outbox"`
	Pending int                 `bson:"pending"`
	Claim   *claimDoc           `bson:"outboxClaim,omitempty"`
	// Published holds the events JetStream acknowledged, by id, until
	// PurgePublished; PublishedAt is when the last of them was marked.
	Published   map[string]eventDoc `bson:"published,omitempty"`
	PublishedAt *time.Time          `bson:"publishedAt,omitempty"`
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

// newPasswordDoc is the document of p in slot slot.
func newPasswordDoc(p *apppass.Password, slot string, pending []apppass.Event) passwordDoc {
	doc := passwordDoc{
		UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID, Login: p.Owner.Login,
		AppScope: p.AppScope, Name: p.Name, Created: p.Created, Digest: p.Digest, KeyID: p.KeyID, Slot: slot,
		Outbox: map[string]eventDoc{}, Pending: len(pending), Expires: p.Expires, IdleExpiry: p.IdleExpiry.Milliseconds(),
		KnownIPs: p.KnownIPs,
	}
	for _, ev := range pending {
		doc.Outbox[ev.ID] = toEventDoc(ev)
	}
	if l := p.LastLogin; l != nil {
		doc.LastLogin = &lastLoginDoc{Time: l.Time, IP: l.IP, Device: l.Device, UserAgent: l.UserAgent}
	}
	if p.IdleExpiry > 0 {
		last := p.Created
		if p.LastLogin != nil {
			last = p.LastLogin.Time
		}
		deadline := last.Add(p.IdleExpiry)
		doc.IdleDeadline = &deadline
	}
	for _, prefix := range p.AllowedIPs {
		doc.AllowedIPs = append(doc.AllowedIPs, prefix.String())
	}
	return doc
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

var notRevoked = bson.E{Key: "revoked", Value: bson.D{{Key: "$exists", Value: false}}}

func ownerFilter(owner apppass.User) bson.D {
	return bson.D{{Key: "contextId", Value: owner.ContextID}, {Key: "userId", Value: owner.UserID}, notRevoked}
}

// listProjection leaves out what lists never show.
var listProjection = bson.D{{Key: "digest", Value: 0}, {Key: "outbox", Value: 0}, {Key: "published", Value: 0}}

// Insert implements apppass.PasswordStore. The limit holds without
// transactions: the new document takes the lowest free slot number of its
// owner, below limit, and the unique slot index lets only one of two
// racing inserts have it; the loser looks again and finds the owner full,
// or the next free slot.
func (s *Store) Insert(ctx context.Context, p *apppass.Password, created apppass.Event, limit int, claim *apppass.Claim) (apppass.PendingEvents, error) {
	pending := apppass.PendingEvents{PasswordUUID: p.UUID, Events: []apppass.Event{created}}
	for attempt := 0; attempt < limit+4; attempt++ {
		held, err := s.heldSlots(ctx, p.Owner)
		if err != nil {
			return pending, err
		}
		free := 0
		for held[free] {
			free++
		}
		if len(held) >= limit || free >= limit {
			return pending, apppass.ErrLimit
		}
		doc := newPasswordDoc(p, slotKey(p.Owner, free), []apppass.Event{created})
		if claim != nil {
			// A new document: nobody else can hold its lease.
			doc.Claim = &claimDoc{Owner: claim.Owner, Until: time.Now().Add(claim.Lease).UTC().Truncate(time.Millisecond)}
		}
		_, err = s.passwords.InsertOne(ctx, doc)
		if err == nil && doc.Claim != nil {
			pending.ClaimedUntil = doc.Claim.Until
		}
		if !mongo.IsDuplicateKeyError(err) {
			return pending, wrap(err)
		}
		// The slot was taken first, unless it is our own document: an
		// insert that a retry of the driver already made.
		if mine, err := s.passwords.CountDocuments(ctx, bson.D{{Key: "_id", Value: p.UUID}, {Key: "digest", Value: p.Digest}}); err != nil {
			return pending, wrap(err)
		} else if mine == 1 {
			return pending, nil // (the lease, if any, runs out by itself)
		}
	}
	return pending, apppass.Unavailable("MongoDB", errors.New("too much contention adding app passwords"))
}

// heldSlots returns the slot numbers of owner's active passwords.
func (s *Store) heldSlots(ctx context.Context, owner apppass.User) (map[int]bool, error) {
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
	prefix := slotKey(owner, 0)
	prefix = prefix[:len(prefix)-1]
	held := make(map[int]bool, len(docs))
	for _, d := range docs {
		if n, err := strconv.Atoi(d.Slot[min(len(prefix), len(d.Slot)):]); err == nil {
			held[n] = true
		} else {
			held[-1-len(held)] = true // not numbered: still counts toward the limit
		}
	}
	return held, nil
}

// List implements apppass.PasswordStore.
func (s *Store) List(ctx context.Context, owner apppass.User) ([]apppass.Password, error) {
	return s.findPasswords(ctx, ownerFilter(owner),
		options.Find().SetSort(bson.D{{Key: "created", Value: -1}, {Key: "_id", Value: 1}}).SetProjection(listProjection))
}

// ListContext implements apppass.PasswordStore.
func (s *Store) ListContext(ctx context.Context, contextID int64, limit int) ([]apppass.Password, error) {
	return s.findPasswords(ctx, bson.D{{Key: "contextId", Value: contextID}, notRevoked},
		options.Find().SetLimit(int64(limit)).SetProjection(listProjection))
}

// Expired implements apppass.PasswordStore.
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

// FindByDigest implements apppass.PasswordStore: one round trip, served by
// the unique digest index.
func (s *Store) FindByDigest(ctx context.Context, digest string) (*apppass.Password, error) {
	var d passwordDoc
	err := s.passwords.FindOne(ctx, bson.D{{Key: "digest", Value: digest}, notRevoked},
		options.FindOne().SetProjection(bson.D{{Key: "outbox", Value: 0}, {Key: "published", Value: 0}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, apppass.ErrRejected
	}
	if err != nil {
		return nil, wrap(err)
	}
	p := d.password()
	return &p, nil
}

// Revoke implements apppass.PasswordStore: the revocation, the release of
// the slot and the revoked event are one conditional update of one
// document, which only an active password of owner matches.
func (s *Store) Revoke(ctx context.Context, owner apppass.User, uuid string, newEvent func(*apppass.Password) (apppass.Event, error), claim *apppass.Claim) (apppass.PendingEvents, error) {
	defer s.isolate(passwordsCollection, uuid)()
	filter := append(bson.D{{Key: "_id", Value: uuid}}, ownerFilter(owner)...)
	var cur passwordDoc
	err := s.passwords.FindOne(ctx, filter, options.FindOne().SetProjection(listProjection)).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return apppass.PendingEvents{}, apppass.ErrNotFound
	}
	if err != nil {
		return apppass.PendingEvents{}, wrap(err)
	}
	p := cur.password()
	ev, err := newEvent(&p)
	if err != nil {
		return apppass.PendingEvents{}, err
	}
	set := bson.D{
		{Key: "revoked", Value: revocationDoc{Time: ev.Timestamp, Reason: ev.Data.Reason}},
		{Key: "slot", Value: "revoked:" + uuid},
		{Key: "outbox." + ev.ID, Value: toEventDoc(ev)},
	}
	update := func(set bson.D) bson.D {
		return bson.D{{Key: "$set", Value: set}, {Key: "$inc", Value: bson.D{{Key: "pending", Value: 1}}}}
	}
	var after passwordDoc
	var until time.Time
	if claim != nil {
		// With the lease, where no other owner's runs: the same write.
		now := time.Now().UTC()
		until = now.Add(claim.Lease).Truncate(time.Millisecond)
		leased := append(slices.Clone(filter), bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "outboxClaim", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "outboxClaim.until", Value: bson.D{{Key: "$lte", Value: now}}}},
			bson.D{{Key: "outboxClaim.owner", Value: claim.Owner}},
		}})
		err = s.passwords.FindOneAndUpdate(ctx, leased, update(append(slices.Clone(set), bson.E{Key: "outboxClaim", Value: claimDoc{Owner: claim.Owner, Until: until}})),
			options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
		if err == nil {
			return apppass.PendingEvents{PasswordUUID: uuid, Events: after.pendingEvents(), ClaimedUntil: until}, nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return apppass.PendingEvents{}, wrap(err)
		}
		// Another owner's lease runs (or the password is gone): without.
	}
	err = s.passwords.FindOneAndUpdate(ctx, filter, update(set), options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return apppass.PendingEvents{}, apppass.ErrNotFound // revoked by another caller in between
	}
	if err != nil {
		return apppass.PendingEvents{}, wrap(err)
	}
	return apppass.PendingEvents{PasswordUUID: uuid, Events: after.pendingEvents()}, nil
}

// RecordLogin implements apppass.PasswordStore. A used event is queued by
// one conditional update that only matches while no other login queued
// it (no login yet; the IP not known yet).
func (s *Store) RecordLogin(ctx context.Context, uuid string, login apppass.LastLogin, idleDeadline *time.Time, used *apppass.Event) (bool, error) {
	defer s.isolate(passwordsCollection, uuid)()
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
			{Key: "$set", Value: append(slices.Clone(set), bson.E{Key: "outbox." + used.ID, Value: toEventDoc(*used)})},
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
	// Never back: a login older than the one stored (written late) moves
	// nothing.
	_, err := s.passwords.UpdateOne(ctx, bson.D{{Key: "_id", Value: uuid}, notRevoked, {Key: "$or", Value: bson.A{
		bson.D{{Key: "lastLogin", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "lastLogin.time", Value: bson.D{{Key: "$lte", Value: login.Time}}}},
	}}}, bson.D{{Key: "$set", Value: set}})
	return false, wrap(err)
}
