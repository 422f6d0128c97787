package apppass

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Password is a stored app password. It holds only the digest of the secret.
type Password struct {
	UUID     string
	Owner    User
	AppScope string
	Name     string
	Created  time.Time
	Digest   string
	KeyID    string
	// Limits chosen at add; zero values mean none.
	Expires    *time.Time
	IdleExpiry time.Duration
	AllowedIPs []netip.Prefix
	// LastLogin is the most recent recorded use (writes are throttled).
	LastLogin *LastLogin
	// KnownIPs are the client addresses it has been used from, for the
	// new-IP notice.
	KnownIPs []string
}

// LastLogin records the most recent successful use of an app password.
type LastLogin struct {
	Time      time.Time `json:"time"`
	IP        string    `json:"ip"`
	Device    string    `json:"device"`
	UserAgent string    `json:"userAgent"`
}

// idleDeadline is when an idle-expiring password is revoked if unused.
func (p *Password) idleDeadline(lastUse time.Time) *time.Time {
	if p.IdleExpiry <= 0 {
		return nil
	}
	t := lastUse.Add(p.IdleExpiry)
	return &t
}

// lastUse is when the password was last used, or created if never.
func (p *Password) lastUse() time.Time {
	if p.LastLogin != nil {
		return p.LastLogin.Time
	}
	return p.Created
}

// Store keeps app passwords. Every method changes at most one document, so
// each is atomic on MongoDB and FerretDB alike; a change and the event that
// announces it are written together (the transactional outbox).
type Store interface {
	// Insert stores p with its created event pending, unless the owner
	// already has limit active passwords (ErrLimit). Two concurrent inserts
	// must not both pass the limit.
	Insert(ctx context.Context, p *Password, created Event, limit int) error
	// List returns the owner's active passwords, newest first.
	List(ctx context.Context, owner User) ([]Password, error)
	// ListContext returns up to limit active passwords of any user in
	// context contextID, in no particular order.
	ListContext(ctx context.Context, contextID int64, limit int) ([]Password, error)
	// Revoke marks the owner's active password uuid revoked and queues ev.
	// It returns every event still pending for that password, in publish
	// order, or ErrNotFound.
	Revoke(ctx context.Context, owner User, uuid string, ev func(*Password) (Event, error)) ([]Event, error)
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

// ErrLimit is returned by Store.Insert when the owner is at the limit.
var ErrLimit = &Error{Kind: KindLimit, Message: "the maximum number of app passwords is reached"}

// PendingEvents are the unpublished events of one password, in publish order.
type PendingEvents struct {
	PasswordUUID string
	Events       []Event
}

// Outbox is the store's side of event delivery, used by events.Relay.
//
// Several relays (one per apppassd replica) may drain one outbox. A relay
// publishes a password's events only while it holds that password's claim,
// a lease taken with one conditional write, so two relays do not publish the
// same events; a relay that dies holding a claim is taken over once its
// lease runs out. JetStream's dedup by event id stays the safety net.
type Outbox interface {
	// Pending returns up to limit passwords that have unpublished events
	// and no running claim.
	Pending(ctx context.Context, limit int) ([]PendingEvents, error)
	// MarkPublished removes a published event from its password's outbox.
	MarkPublished(ctx context.Context, passwordUUID string, ev Event) error
	// PendingCount is how many events wait to be published.
	PendingCount(ctx context.Context) (int64, error)
	// ClaimPending leases the outbox of password uuid to owner for lease,
	// if it is unclaimed, its lease ran out, or owner holds it already, and
	// returns the password's pending events in publish order (none when
	// nothing waits; then no claim is taken). It returns ErrClaimed while
	// another owner's lease runs.
	ClaimPending(ctx context.Context, uuid, owner string, lease time.Duration) ([]Event, error)
	// ReleaseClaim ends owner's claim on the outbox of uuid, if owner
	// still holds it. With published set, it also marks that event
	// published, in the same write where it can.
	ReleaseClaim(ctx context.Context, uuid, owner string, published *Event) error
}

// ErrClaimed is returned by Outbox.ClaimPending while another relay holds
// the claim.
var ErrClaimed = errors.New("another relay is publishing these events")

// EventNotifier hears about events just written, so they are published at
// once rather than at the relay's next sweep.
type EventNotifier interface {
	// Notify queues p for publishing and returns at once.
	Notify(p PendingEvents)
	// Deliver publishes p and waits for the broker's ack or ctx's end. The
	// events stay in the outbox either way until acknowledged.
	Deliver(ctx context.Context, p PendingEvents) error
}
