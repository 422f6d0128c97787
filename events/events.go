// Package events is the vocabulary the event packages share: the
// JetStream stream, its subjects, the durable consumers' names, and how
// every client of ours connects to NATS. It imports nats.go and nothing
// that runs, so a gateway built on events/consume links only the client.
//
//   - events/nats publishes: the Publisher, the outbox Relay, the backlog
//     count and the cache-eviction broadcast between replicas;
//   - events/natsserver is the in-process nats-server of the one-machine
//     default;
//   - events/consume is the consumer API gateways use (nats.go only);
//   - events/webhook delivers the stream's events to webhook endpoints.
//
// docs/asyncapi.yaml describes the subjects and every payload.
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
)

// StreamName and StreamSubjects define the JetStream stream events go to.
const (
	StreamName     = "APPPASSWORDS"
	StreamSubjects = "apppasswords.>"
)

// RevokedSubjects are the revoked events' subjects: what every replica
// listens on to evict revoked passwords from its authenticate cache, and
// what a gateway needs to drop sessions.
const RevokedSubjects = "apppasswords.revoked.>"

// EvictSubject carries a bare uuid from the replica that revoked it to all
// others, on plain NATS: it does not wait for the outbox relay (whose claim
// another replica may hold), so remove can return only after every
// connected replica has been told.
const EvictSubject = "apppass.cache.evict"

// WebhookConsumer is the default name of the durable JetStream consumer
// that feeds the webhook queue. All replicas share it.
const WebhookConsumer = "apppass-webhooks"

// DoveadmConsumer is the durable consumer's name for the Dovecot at
// baseURL (as dovecot.ParseBaseURL returns it): stable across restarts, and
// another one for another URL.
func DoveadmConsumer(baseURL string) string {
	sum := sha256.Sum256([]byte(baseURL))
	return "apppass-doveadm-" + hex.EncodeToString(sum[:6])
}

// Dial connects to url the way all our clients do: it succeeds even
// while NATS is down and reconnects forever, and it notices a silent
// network partition within seconds, not minutes. up, when set, is told
// each time the connection comes up (true) or goes down (false, with the
// error when there is one). An error names the url without its login.
func Dial(url, name string, up func(bool, error), opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
	}
	if up != nil {
		all = append(all,
			// nats.go resubscribes before calling the reconnect handler, so
			// from then on no message is missed.
			nats.ConnectHandler(func(*nats.Conn) { up(true, nil) }),
			nats.ReconnectHandler(func(*nats.Conn) { up(true, nil) }),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { up(false, err) }),
			nats.ClosedHandler(func(*nats.Conn) { up(false, nil) }),
		)
	}
	nc, err := nats.Connect(url, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %s", apppass.RedactURL(url), apppass.RedactIn(err.Error(), url))
	}
	return nc, nil
}

// DialJetStream is Dial with the connection's JetStream handle.
func DialJetStream(url, name string, up func(bool, error), opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := Dial(url, name, up, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
