package apppass

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Service is what the sidecar does, independent of transport and storage.
type Service struct {
	Store      PasswordStore
	Apps       *Catalogue
	Digester   *Digester
	Events     EventNotifier
	MaxPerUser int
	// Cache keeps recent positive authenticate results; nil disables it.
	Cache *AuthCache
	// Evictions tells other replicas' caches about a revocation at once.
	Evictions EvictionBroadcaster
	// Throttle guards authenticate against guessing; nil disables it.
	Throttle *Throttle
	// LastLogins writes the last-login updates that queue no event in the
	// background; nil writes them before authenticate answers.
	LastLogins *LastLoginWriter
	// Reauth asks users to have signed in recently, or strongly, before
	// they add a password (CheckReauth); the zero value asks nothing.
	Reauth ReauthPolicy
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
	Limits
	Settings []Setting `json:"settings"`
}

// GetApps returns the catalogue in display order.
func (s *Service) GetApps() []App { return s.Apps.Apps() }

// Add creates an app password for owner.
func (s *Service) Add(ctx context.Context, owner User, req AddRequest) (*Created, error) {
	app, ok := s.Apps.App(req.AppScope)
	if !ok {
		return nil, &Error{Kind: KindInvalid, Field: "appScope", OX: "ASP-0002",
			Message: fmt.Sprintf("unknown application %q", req.AppScope)}
	}
	name, err := cleanName(req.AppName)
	if err != nil {
		return nil, err
	}
	now := s.now()
	p := &Password{UUID: newUUID(), Owner: owner, AppScope: app.Name, Name: name, Created: now, KeyID: s.Digester.KeyID()}
	if err := req.applyLimits(p, now); err != nil {
		return nil, err
	}
	secret, err := GeneratePassword()
	if err != nil {
		return nil, err
	}
	normalized, _ := NormalizePassword(secret)
	p.Digest = s.Digester.Digest(normalized)
	ev, err := newEvent(EventCreated, now, p, "")
	if err != nil {
		return nil, err
	}
	pending, err := s.Store.Insert(ctx, p, ev, s.MaxPerUser, s.claim())
	if err != nil {
		return nil, err
	}
	s.notify(pending)
	return &Created{
		UUID: p.UUID, Login: owner.Login, Password: secret, AppScope: app.Name, Name: name,
		Created: p.Created, Settings: app.Settings, Limits: limitsOf(p),
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
	Limits
}

// List returns owner's active app passwords, newest first.
func (s *Service) List(ctx context.Context, owner User) ([]Listed, error) {
	ps, err := s.Store.List(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(ps))
	for i := range ps {
		p := &ps[i]
		out = append(out, Listed{UUID: p.UUID, Name: p.Name, AppScope: p.AppScope, Created: p.Created,
			LastLogin: p.LastLogin, Limits: limitsOf(p)})
	}
	return out, nil
}

// deliverTimeout bounds how long remove waits for the revoked event's ack.
const deliverTimeout = 2 * time.Second

// Remove revokes one of owner's app passwords. It returns once the
// revocation is stored and, unless NATS is unreachable, once the revoked
// event is in the stream, so gateways hear of it before the caller does.
func (s *Service) Remove(ctx context.Context, owner User, uuid, reason string) error {
	uuid = strings.ToLower(uuid)
	if !validUUID(uuid) {
		return Invalid("uuid", "must be an app password's UUID")
	}
	return s.revoke(ctx, owner, uuid, reason)
}

func (s *Service) revoke(ctx context.Context, owner User, uuid, reason string) error {
	now := s.now()
	pending, err := s.Store.Revoke(ctx, owner, uuid, func(p *Password) (Event, error) {
		return newEvent(EventRevoked, now, p, reason)
	}, s.claim())
	if err != nil {
		return err
	}
	if s.Cache != nil {
		s.Cache.EvictUUID(uuid)
	}
	// The eviction broadcast and the revoked event go out together, and
	// remove returns once both are out: every replica evicts on either
	// (it listens to both), the broadcast does not wait for the relay
	// (whose claim another replica may hold), and the revoked event tells
	// the gateways. Both are best effort: an error leaves the event in the
	// outbox for the relay, and the revocation itself is stored, so remove
	// still succeeds.
	var evicted chan struct{}
	if s.Evictions != nil {
		evicted = make(chan struct{})
		go func() {
			defer close(evicted)
			_ = s.Evictions.BroadcastEviction(ctx, uuid)
		}()
	}
	if s.Events != nil {
		dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
		defer cancel()
		_ = s.Events.Deliver(dctx, pending)
	}
	if evicted != nil {
		<-evicted
	}
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
		switch err := s.revoke(ctx, owner, p.UUID, reason); {
		case err == nil:
			removed++
		case KindOf(err) == KindNotFound: // revoked concurrently: not ours to count
		default:
			return removed, err
		}
	}
	return removed, nil
}

// removeContextBatch is how many passwords RemoveContext lists at a time.
var removeContextBatch = 100

// RemoveContext revokes every active app password in context contextID,
// of all its users, each as its own atomic change with its own event.
func (s *Service) RemoveContext(ctx context.Context, contextID int64, reason string) (int, error) {
	batch := removeContextBatch
	removed := 0
	for {
		ps, err := s.Store.ListContext(ctx, contextID, batch)
		if err != nil {
			return removed, err
		}
		// Each listed password ends revoked (by us or concurrently), so
		// the next batch lists only ones not seen yet.
		for _, p := range ps {
			switch err := s.revoke(ctx, p.Owner, p.UUID, reason); {
			case err == nil:
				removed++
			case KindOf(err) == KindNotFound: // revoked concurrently
			default:
				return removed, err
			}
		}
		if len(ps) < batch {
			return removed, nil
		}
	}
}

// claim is the lease the writes of new events take for the relay.
func (s *Service) claim() *Claim {
	if s.Events == nil {
		return nil
	}
	return s.Events.Claim()
}

func (s *Service) notify(p PendingEvents) {
	if s.Events != nil {
		s.Events.Notify(p)
	}
}

// cleanName validates the user's label for a password. It is stored in
// Unicode NFC, so two names that look the same are the same; characters
// that change how the rest displays without showing themselves are
// refused: controls, bidi overrides and isolates ("phone\u202Egnp.exe"
// shows as "phoneexe.png"), and the other invisible format characters,
// but ZWJ and ZWNJ, which emoji and some scripts need.
func cleanName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", Invalid("appName", "must be valid UTF-8")
	}
	name = strings.TrimSpace(norm.NFC.String(name))
	if n := utf8.RuneCountInString(name); n < 1 || n > 128 {
		return "", Invalid("appName", "must be 1 to 128 characters after trimming")
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r):
			return "", Invalid("appName", "must not contain control characters")
		case r == '\u200C' || r == '\u200D': // ZWNJ, ZWJ
		case unicode.Is(unicode.Cf, r):
			return "", Invalid("appName", fmt.Sprintf("must not contain invisible formatting characters such as U+%04X", r))
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
