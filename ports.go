package apppass

import (
	"context"
	"errors"
	"time"
)

// This file holds every interface an adapter implements for the domain:
// the storage ports (storage/sqlite and storage/mongo implement them all,
// and storage/storetest is the suite that holds them to it), and the two
// event ports events/nats implements.

// Store is a whole storage backend: what apppassd opens at start.
type Store interface {
	PasswordStore
	Outbox
	ThrottleStore
	WebhookStore
	ReplayStore
	StoreTransfer
	// BindDigestKey records keyID as the key id of the pepper this store's
	// digests are made with, if it has none yet, and returns
	// ErrDigestKeyMismatch if it has another: a store digested under one
	// pepper refuses every password under another.
	BindDigestKey(ctx context.Context, keyID string) error
	// DigestKeyID returns the recorded key id, "" if none is.
	DigestKeyID(ctx context.Context) (string, error)
	// Ping checks that the store answers (and, for a file, can be written).
	Ping(ctx context.Context) error
	// Close releases the store; calls after it fail.
	Close() error
}

// ErrDigestKeyMismatch is returned by BindDigestKey when the store's
// passwords were digested under another pepper.
var ErrDigestKeyMismatch = errors.New("the store's passwords were digested with another pepper")

// PasswordStore keeps app passwords: only their digests, their limits and
// last login, and their revocation. A change and the event that announces
// it are stored together (the transactional outbox), so a change never
// happens without its event.
type PasswordStore interface {
	// Insert stores p with its created event pending, unless the owner
	// already has limit active passwords (ErrLimit). Two concurrent inserts
	// must not both pass the limit. With claim set, the same write leases
	// the new password's outbox to claim.Owner (see Claim).
	Insert(ctx context.Context, p *Password, created Event, limit int, claim *Claim) (PendingEvents, error)
	// List returns the owner's active passwords, newest first, without
	// their digests.
	List(ctx context.Context, owner User) ([]Password, error)
	// ListContext returns up to limit active passwords of any user in
	// context contextID, in no particular order.
	ListContext(ctx context.Context, contextID int64, limit int) ([]Password, error)
	// Revoke marks the owner's active password uuid revoked and queues the
	// event ev builds from it. It returns every event still pending for
	// that password, in publish order, or ErrNotFound. With claim set, the
	// same write leases the outbox to claim.Owner unless another owner's
	// lease runs (see Claim).
	Revoke(ctx context.Context, owner User, uuid string, ev func(*Password) (Event, error), claim *Claim) (PendingEvents, error)
	// FindByDigest returns the active password with this digest, or
	// ErrRejected: one indexed lookup.
	FindByDigest(ctx context.Context, digest string) (*Password, error)
	// RecordLogin stores login as the password's last login and moves its
	// idle deadline. With used set, it also adds used.Data.IP to the known
	// IPs and queues used, but only if no other login did so first
	// (first use: no login recorded yet; new IP: the IP is not known yet);
	// it reports whether used was queued. A revoked password is left alone.
	RecordLogin(ctx context.Context, uuid string, login LastLogin, idleDeadline *time.Time, used *Event) (bool, error)
	// Expired returns up to limit active passwords whose expiry or idle
	// deadline is not after now.
	Expired(ctx context.Context, now time.Time, limit int) ([]Password, error)
}

// ErrLimit is returned by PasswordStore.Insert when the owner is at the limit.
var ErrLimit = &Error{Kind: KindLimit, Message: "the maximum number of app passwords is reached"}

// PendingEvents are the unpublished events of one password, in publish order.
type PendingEvents struct {
	PasswordUUID string
	Events       []Event
	// ClaimedUntil, when set, says that the write that stored the events
	// also leased the password's outbox to the Claim it was given, until
	// then: its relay may publish them without a claim of its own.
	ClaimedUntil time.Time
}

// Claim asks a write that queues events to lease the password's outbox to
// Owner for Lease in the same write, as ClaimPending would: the relay that
// wrote them publishes them at once, without a write of its own before.
type Claim struct {
	Owner string
	Lease time.Duration
}

// Outbox is the store's side of event delivery, used by nats.Relay.
//
// Several relays (one per apppassd replica) may drain one outbox. A relay
// publishes a password's events only while it holds that password's claim,
// a lease taken atomically, so two relays do not publish the same events;
// a relay that dies holding a claim is taken over once its lease runs out.
// JetStream's dedup by event id stays the safety net.
//
// An event the broker acknowledged is marked published, not deleted: it
// stays until PurgePublished, so that events a broker acknowledged before
// it had them on disk can be published again after a crash
// (RequeuePublished). Only unpublished events are pending.
type Outbox interface {
	// Pending returns up to limit passwords that have unpublished events
	// and no running claim, but those of mine ("" for none).
	Pending(ctx context.Context, limit int, mine string) ([]PendingEvents, error)
	// MarkPublished marks evs, events of password uuid, published and ends
	// owner's claim on its outbox if owner still holds it. An event marked
	// already, or no longer kept, is left alone.
	MarkPublished(ctx context.Context, uuid, owner string, evs []Event) error
	// PendingCount is how many events wait to be published.
	PendingCount(ctx context.Context) (int64, error)
	// ClaimPending leases the outbox of password uuid to owner for lease,
	// if it is unclaimed, its lease ran out, or owner holds it already, and
	// returns the password's pending events in publish order (none when
	// nothing waits; then no claim is taken). It returns ErrClaimed while
	// another owner's lease runs.
	ClaimPending(ctx context.Context, uuid, owner string, lease time.Duration) ([]Event, error)
	// ReleaseClaim ends owner's claim on the outbox of uuid, if owner
	// still holds it.
	ReleaseClaim(ctx context.Context, uuid, owner string) error
	// PurgePublished deletes up to limit events marked published before
	// before, and forgets each revoked password left with no event: nothing
	// is kept of a password after its revoked event is out. It returns how
	// many events it deleted.
	PurgePublished(ctx context.Context, before time.Time, limit int) (int, error)
	// RequeuePublished makes every event marked published pending again,
	// and returns how many there were.
	RequeuePublished(ctx context.Context) (int64, error)
}

// ErrClaimed is returned by Outbox.ClaimPending while another relay holds
// the claim.
var ErrClaimed = errors.New("another relay is publishing these events")

// ThrottleStore keeps failure tallies where every replica sees them.
type ThrottleStore interface {
	// Failures returns the tallies of keys that have one.
	Failures(ctx context.Context, keys []string) (map[string]FailureCount, error)
	// AddFailure counts one failure at now for key, starting a new tally
	// when the current one began before windowStart, and returns it.
	AddFailure(ctx context.Context, key string, now, windowStart time.Time) (FailureCount, error)
	// ClearFailures forgets key's tally.
	ClearFailures(ctx context.Context, key string) error
	// PurgeFailures forgets tallies whose last failure is before before.
	PurgeFailures(ctx context.Context, before time.Time) error
}

// ErrLeaseLost is returned when a webhook delivery's claim was taken over.
var ErrLeaseLost = errors.New("the delivery's lease was lost")

// WebhookStore is the durable queue of outbound webhook deliveries and the
// endpoints' state.
type WebhookStore interface {
	// EnqueueWebhook stores d as pending and due now, unless a delivery
	// with its ID exists; it reports whether d was new.
	EnqueueWebhook(ctx context.Context, d WebhookDelivery) (bool, error)
	// ClaimWebhooks leases up to limit pending deliveries that are due at
	// now and not leased, skipping the named endpoints, to token until
	// leaseUntil, oldest due first.
	ClaimWebhooks(ctx context.Context, now, leaseUntil time.Time, token string, skip []string, limit int) ([]WebhookDelivery, error)
	// FinishWebhookAttempt records an attempt's outcome and ends the lease,
	// if token still holds it (ErrLeaseLost otherwise).
	FinishWebhookAttempt(ctx context.Context, id, token string, o WebhookOutcome) error
	// WebhookDeliveries lists deliveries, newest first, without bodies.
	WebhookDeliveries(ctx context.Context, q WebhookQuery) ([]WebhookDelivery, error)
	// CountWebhookDeliveries counts one endpoint's deliveries in one state.
	CountWebhookDeliveries(ctx context.Context, endpoint, state string) (int64, error)
	// PurgeWebhookDeliveries deletes delivered and failed deliveries that
	// finished before before.
	PurgeWebhookDeliveries(ctx context.Context, before time.Time) (int64, error)
	// DisableWebhookEndpoint stores that an endpoint is disabled.
	DisableWebhookEndpoint(ctx context.Context, s WebhookEndpointState) error
	// EnableWebhookEndpoint forgets an endpoint's disabled state; it
	// reports whether there was one.
	EnableWebhookEndpoint(ctx context.Context, name string) (bool, error)
	// WebhookEndpointStates returns every stored endpoint state.
	WebhookEndpointStates(ctx context.Context) ([]WebhookEndpointState, error)
}

// ReplayStore remembers the webhook-ids of processed provisioning
// messages, so a replayed message changes nothing.
type ReplayStore interface {
	// SeenWebhookID reports whether id was recorded.
	SeenWebhookID(ctx context.Context, id string) (bool, error)
	// RememberWebhookID records id as processed at at; recording it twice
	// keeps the first.
	RememberWebhookID(ctx context.Context, id string, at time.Time) error
	// PurgeWebhookIDs forgets ids recorded before before.
	PurgeWebhookIDs(ctx context.Context, before time.Time) error
}

// PasswordRecord is everything a store keeps of one password: what
// `apppass store copy` moves from one store to another.
type PasswordRecord struct {
	Password Password
	// Revoked is set for a password revoked but not forgotten yet (its
	// revoked event is still pending).
	Revoked *Revocation
	// Pending are its unpublished events, in publish order.
	Pending []Event
}

// Revocation says when and why a password was revoked.
type Revocation struct {
	Time   time.Time
	Reason string
}

// StoreTransfer reads a store out whole and writes records into another:
// how a deployment moves from the embedded store to MongoDB, and how the
// bench seeds a store.
type StoreTransfer interface {
	// CountPasswords is how many passwords the store keeps, revoked ones
	// not yet forgotten included.
	CountPasswords(ctx context.Context) (int64, error)
	// ExportPasswords returns up to limit records with a UUID after after,
	// in UUID order.
	ExportPasswords(ctx context.Context, after string, limit int) ([]PasswordRecord, error)
	// ImportPasswords stores the records whose UUID the store does not
	// have yet, with their pending events, and returns how many it stored.
	// It applies no per-user limit: the records come from a store that did.
	ImportPasswords(ctx context.Context, rs []PasswordRecord) (int, error)
	// ExportWebhookDeliveries returns up to limit pending deliveries, with
	// bodies, with an ID after after, in ID order.
	ExportWebhookDeliveries(ctx context.Context, after string, limit int) ([]WebhookDelivery, error)
	// ImportWebhookDeliveries stores the deliveries whose ID the store does
	// not have yet, unleased, and returns how many it stored.
	ImportWebhookDeliveries(ctx context.Context, ds []WebhookDelivery) (int, error)
}

// EventNotifier hears about events just written, so they are published at
// once rather than at the relay's next sweep.
type EventNotifier interface {
	// Claim is what the writes of the events should lease their outbox
	// to (nil: no lease with the write).
	Claim() *Claim
	// Notify queues p for publishing and returns at once.
	Notify(p PendingEvents)
	// Deliver publishes p and waits for the broker's ack or ctx's end. The
	// events stay in the outbox either way until acknowledged.
	Deliver(ctx context.Context, p PendingEvents) error
}

// EvictionBroadcaster tells every replica's authenticate cache that a
// password was revoked, beside its revoked event (which the relay may be
// slow to publish, or another replica hold).
type EvictionBroadcaster interface {
	BroadcastEviction(ctx context.Context, uuid string) error
}
