// Package nats announces app password changes on NATS JetStream: the
// Publisher sends events and waits for the stream's ack, the Relay drains
// the store's outbox into it, the Backlog counts what waits, and the
// RevocationWatcher keeps every replica's authenticate cache honest.
package nats

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
)

// ErrNotConnected is returned while NATS cannot be reached.
var ErrNotConnected = errors.New("NATS is not connected")

// Publisher publishes events to JetStream and waits for the stream's ack,
// so a published event is stored, not merely sent.
type Publisher struct {
	nc          *natsgo.Conn
	js          jetstream.JetStream
	streamReady atomic.Bool
	// StreamMaxAge is how long the stream keeps an event, when apppassd
	// creates it (default DefaultStreamMaxAge).
	StreamMaxAge time.Duration
}

// DefaultStreamMaxAge is how long the stream keeps events by default:
// long enough for a gateway that was down over a weekend to catch up.
const DefaultStreamMaxAge = 7 * 24 * time.Hour

// Connect connects to url. It succeeds even when NATS is down: the client
// keeps reconnecting, and events wait in the outbox meanwhile.
func Connect(url, name string) (*Publisher, error) {
	// Don't buffer publishes while disconnected: the outbox is our buffer.
	nc, js, err := events.DialJetStream(url, name, nil, natsgo.ReconnectBufSize(-1))
	if err != nil {
		return nil, err
	}
	return &Publisher{nc: nc, js: js}, nil
}

// Connected reports whether the client is connected right now.
func (p *Publisher) Connected() bool { return p.nc.Status() == natsgo.CONNECTED }

// Close closes the connection.
func (p *Publisher) Close() { p.nc.Close() }

// JetStream is the publisher's JetStream handle, for apppassd's own
// consumers (the doveadm kicks).
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// EnsureStream creates the stream if it is missing, keeping events for
// StreamMaxAge. An existing stream is left as the operator configured it.
func (p *Publisher) EnsureStream(ctx context.Context) error {
	if p.streamReady.Load() {
		return nil
	}
	if !p.Connected() {
		return ErrNotConnected
	}
	_, err := p.js.Stream(ctx, events.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = p.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        events.StreamName,
			Description: "app password created and revoked events",
			Subjects:    []string{events.StreamSubjects},
			Storage:     jetstream.FileStorage,
			MaxAge:      cmp.Or(p.StreamMaxAge, DefaultStreamMaxAge),
			// JetStream drops a message whose Nats-Msg-Id it saw within this
			// window, which makes the relay's retries exactly-once in the stream.
			Duplicates: 10 * time.Minute,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // another replica created it first
		}
	}
	if err != nil {
		return fmt.Errorf("ensuring JetStream stream %s: %w", events.StreamName, err)
	}
	p.streamReady.Store(true)
	return nil
}

// StreamLost tells the publisher the stream is gone (a consumer of it was
// told so), so the next publish ensures it again.
func (p *Publisher) StreamLost() { p.streamReady.Store(false) }

// Publish sends ev with its id as Nats-Msg-Id and waits for the ack.
func (p *Publisher) Publish(ctx context.Context, ev apppass.Event) error {
	if !p.Connected() {
		return ErrNotConnected
	}
	if err := p.EnsureStream(ctx); err != nil {
		return err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = p.js.Publish(ctx, ev.Subject(), body, jetstream.WithMsgID(ev.ID))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// No stream listens on the subject: it was deleted, or NATS came
		// back without its data. Ensure it again on the next attempt.
		p.streamReady.Store(false)
	}
	return err
}
