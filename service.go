package apppass

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Password is a stored app password. It holds only the digest of the secret.
type Password struct {
	UUID      string
	Owner     User
	AppScope  string
	Name      string
	Created   time.Time
	Digest    string
	KeyID     string
	LastLogin *LastLogin
}

// LastLogin records the most recent successful use of an app password.
type LastLogin struct {
	Time      time.Time `json:"time"`
	IP        string    `json:"ip"`
	Device    string    `json:"device"`
	UserAgent string    `json:"userAgent"`
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
	// Revoke marks the owner's active password uuid revoked and queues ev.
	// It returns every event still pending for that password, in publish
	// order, or ErrNotFound.
	Revoke(ctx context.Context, owner User, uuid string, ev func(*Password) (Event, error)) ([]Event, error)
	// Authenticate finds the active password with this digest and login
	// whose app is one of apps, records the login on it, and returns it; or
	// ErrRejected.
	Authenticate(ctx context.Context, digest, loginKey string, apps []string, login LastLogin) (*Password, error)
}

// ErrLimit is returned by Store.Insert when the owner is at the limit.
var ErrLimit = &Error{Kind: KindLimit, Message: "the maximum number of app passwords is reached"}

// PendingEvents are the unpublished events of one password, in publish order.
type PendingEvents struct {
	PasswordUUID string
	Events       []Event
}

// Outbox is the store's side of event delivery, used by events.Relay.
type Outbox interface {
	// Pending returns up to limit passwords that have unpublished events.
	Pending(ctx context.Context, limit int) ([]PendingEvents, error)
	// MarkPublished removes a published event from its password's outbox.
	MarkPublished(ctx context.Context, passwordUUID string, ev Event) error
	// PendingCount is how many events wait to be published.
	PendingCount(ctx context.Context) (int64, error)
}

// EventNotifier is told about events just written, so they can be published
// at once rather than at the relay's next sweep. It must not block.
type EventNotifier interface {
	Notify(PendingEvents)
}

// Service is what the sidecar does, independent of transport and storage.
type Service struct {
	Store      Store
	Apps       *Catalogue
	Digester   *Digester
	Events     EventNotifier
	MaxPerUser int
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	// MongoDB keeps milliseconds; truncate so what we return is what we store.
	return now().UTC().Truncate(time.Millisecond)
}

// Created is the result of Add: the only place the password appears.
type Created struct {
	UUID     string    `json:"uuid"`
	Login    string    `json:"login"`
	Password string    `json:"password"`
	NewLogin bool      `json:"newLogin"`
	AppScope string    `json:"appScope"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Settings []Setting `json:"settings"`
}

// GetApps returns the catalogue in display order.
func (s *Service) GetApps() []App { return s.Apps.Apps() }

// Add creates an app password for owner.
func (s *Service) Add(ctx context.Context, owner User, appScope, appName string) (*Created, error) {
	app, ok := s.Apps.App(appScope)
	if !ok {
		return nil, &Error{Kind: KindInvalid, Field: "appScope", OX: "ASP-0002",
			Message: fmt.Sprintf("unknown application %q", appScope)}
	}
	name, err := cleanName(appName)
	if err != nil {
		return nil, err
	}
	secret, err := GeneratePassword()
	if err != nil {
		return nil, err
	}
	normalized, _ := NormalizePassword(secret)
	p := &Password{
		UUID: newUUID(), Owner: owner, AppScope: app.Name, Name: name, Created: s.now(),
		Digest: s.Digester.Digest(normalized), KeyID: s.Digester.KeyID(),
	}
	ev, err := newEvent(EventCreated, p.Created, p, "")
	if err != nil {
		return nil, err
	}
	if err := s.Store.Insert(ctx, p, ev, s.MaxPerUser); err != nil {
		return nil, err
	}
	s.notify(PendingEvents{PasswordUUID: p.UUID, Events: []Event{ev}})
	return &Created{
		UUID: p.UUID, Login: owner.Login, Password: secret, AppScope: app.Name, Name: name,
		Created: p.Created, Settings: app.Settings,
		// The login is the user's own: OX sets newLogin only when it mints a
		// separate login name for the app, which this service never does.
		NewLogin: false,
	}, nil
}

// Listed is one row of List: never the password or its digest.
type Listed struct {
	UUID      string     `json:"uuid"`
	Name      string     `json:"name"`
	AppScope  string     `json:"appScope"`
	Created   time.Time  `json:"created"`
	LastLogin *LastLogin `json:"lastLogin"`
}

// List returns owner's active app passwords, newest first.
func (s *Service) List(ctx context.Context, owner User) ([]Listed, error) {
	ps, err := s.Store.List(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(ps))
	for _, p := range ps {
		out = append(out, Listed{UUID: p.UUID, Name: p.Name, AppScope: p.AppScope, Created: p.Created, LastLogin: p.LastLogin})
	}
	return out, nil
}

// Remove revokes one of owner's app passwords.
func (s *Service) Remove(ctx context.Context, owner User, uuid, reason string) error {
	uuid = strings.ToLower(uuid)
	if !validUUID(uuid) {
		return Invalid("uuid", "must be an app password's UUID")
	}
	now := s.now()
	pending, err := s.Store.Revoke(ctx, owner, uuid, func(p *Password) (Event, error) {
		return newEvent(EventRevoked, now, p, reason)
	})
	if err != nil {
		return err
	}
	s.notify(PendingEvents{PasswordUUID: uuid, Events: pending})
	return nil
}

// RemoveAll revokes all of owner's app passwords, or those of one app.
// Each revocation is its own atomic change with its own event.
func (s *Service) RemoveAll(ctx context.Context, owner User, appScope *string, reason string) (int, error) {
	if appScope != nil {
		if _, ok := s.Apps.App(*appScope); !ok {
			return 0, &Error{Kind: KindInvalid, Field: "appScope", OX: "ASP-0002",
				Message: fmt.Sprintf("unknown application %q", *appScope)}
		}
	}
	ps, err := s.Store.List(ctx, owner)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, p := range ps {
		if appScope != nil && p.AppScope != *appScope {
			continue
		}
		switch err := s.Remove(ctx, owner, p.UUID, reason); {
		case err == nil:
			removed++
		case KindOf(err) == KindNotFound: // revoked concurrently: not ours to count
		default:
			return removed, err
		}
	}
	return removed, nil
}

// LoginAttempt is what a gateway hands to Authenticate.
type LoginAttempt struct {
	Login     string
	Password  string
	Protocol  string
	IP        string
	Device    string
	UserAgent string
}

// Authenticated is what a gateway learns from a successful login.
type Authenticated struct {
	UUID      string   `json:"uuid"`
	ContextID int64    `json:"contextId"`
	UserID    int64    `json:"userId"`
	Login     string   `json:"login"`
	AppScope  string   `json:"appScope"`
	Scopes    []string `json:"scopes"`
}

// Authenticate checks an app password login: one indexed lookup by digest.
func (s *Service) Authenticate(ctx context.Context, a LoginAttempt) (*Authenticated, error) {
	if !KnownProtocol(a.Protocol) {
		return nil, Invalid("protocol", "must be one of "+strings.Join(knownProtocols, ", "))
	}
	apps, ok := s.Apps.AppsAllowedOn(a.Protocol)
	normalized, wellFormed := NormalizePassword(a.Password)
	loginKey := LoginKey(a.Login)
	if !ok || !wellFormed || loginKey == "" {
		return nil, ErrRejected
	}
	p, err := s.Store.Authenticate(ctx, s.Digester.Digest(normalized), loginKey, apps,
		LastLogin{Time: s.now(), IP: a.IP, Device: a.Device, UserAgent: a.UserAgent})
	if err != nil {
		return nil, err
	}
	app, _ := s.Apps.App(p.AppScope)
	return &Authenticated{UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID,
		Login: p.Owner.Login, AppScope: p.AppScope, Scopes: app.Scopes}, nil
}

func (s *Service) notify(p PendingEvents) {
	if s.Events != nil {
		s.Events.Notify(p)
	}
}

// cleanName validates the user's label for a password.
func cleanName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if !utf8.ValidString(name) {
		return "", Invalid("appName", "must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n < 1 || n > 128 {
		return "", Invalid("appName", "must be 1 to 128 characters after trimming")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", Invalid("appName", "must not contain control characters")
		}
	}
	return name, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'):
		default:
			return false
		}
	}
	return true
}
