package apppass

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Event types, as they appear in the payload's "type".
const (
	EventCreated = "apppassword.created"
	EventRevoked = "apppassword.revoked"
)

// Revocation reasons.
const (
	ReasonUser    = "user"    // the user deleted it
	ReasonAdmin   = "admin"   // an admin service deleted it
	ReasonExpired = "expired" // its expiry time passed
	ReasonIdle    = "idle"    // it was unused for its idle expiry
	// From the provisioning webhook (POST /webhooks/provisioning).
	ReasonUserDeleted     = "user_deleted"     // the user was deleted
	ReasonContextDeleted  = "context_deleted"  // the user's context was deleted
	ReasonPasswordChanged = "password_changed" // the user changed the main password
)

// Event is what NATS subscribers (and later webhooks) receive. It never
// carries the password or its digest.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      EventData `json:"data"`
}

// EventData describes the app password the event is about.
type EventData struct {
	UUID      string `json:"uuid"`
	ContextID int64  `json:"contextId"`
	UserID    int64  `json:"userId"`
	Login     string `json:"login"`
	AppScope  string `json:"appScope"`
	Name      string `json:"name"`
	Reason    string `json:"reason,omitempty"`
	// On used events: where the login came from.
	IP        string `json:"ip,omitempty"`
	Device    string `json:"device,omitempty"`
	UserAgent string `json:"userAgent,omitempty"`
}

// Subject is the NATS subject the event is published on:
// apppasswords.<created|revoked|used>.<contextId>.<userId>.
func (e Event) Subject() string {
	kind := "used"
	switch e.Type {
	case EventCreated:
		kind = "created"
	case EventRevoked:
		kind = "revoked"
	}
	return fmt.Sprintf("apppasswords.%s.%d.%d", kind, e.Data.ContextID, e.Data.UserID)
}

// newEvent stamps an event with a fresh id. The id is hex, so it can also
// serve as a MongoDB field name in the outbox.
func newEvent(typ string, now time.Time, p *Password, reason string) (Event, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Event{}, err
	}
	return Event{
		ID: hex.EncodeToString(b[:]), Type: typ, Timestamp: now,
		Data: EventData{UUID: p.UUID, ContextID: p.Owner.ContextID, UserID: p.Owner.UserID,
			Login: p.Owner.Login, AppScope: p.AppScope, Name: p.Name, Reason: reason},
	}, nil
}

// PublishOrder sorts the pending events of one password into the order they
// must reach subscribers: created first, revoked last, anything else by time.
func PublishOrder(a, b Event) int {
	rank := func(e Event) int {
		switch e.Type {
		case EventCreated:
			return 0
		case EventRevoked:
			return 2
		}
		return 1
	}
	if d := rank(a) - rank(b); d != 0 {
		return d
	}
	return a.Timestamp.Compare(b.Timestamp)
}
