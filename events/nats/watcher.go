package nats

import (
	"context"
	"encoding/json"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
)

// RevocationWatcher keeps an AuthCache honest across replicas: it evicts
// each password another replica revokes, and it makes the cache untrusted
// while its NATS subscription is down (revocations would be missed), and
// emptied when the subscription is back.
type RevocationWatcher struct {
	nc *natsgo.Conn
}

// WatchRevocations subscribes to revoked events on url and feeds cache.
// It uses a plain NATS subscription: evictions must be as fast as the
// message, and after any gap the cache starts empty anyway.
func WatchRevocations(url string, cache *apppass.AuthCache) (*RevocationWatcher, error) {
	nc, err := events.Dial(url, "apppassd-revocations", func(up bool, _ error) { cache.SetTrusted(up) })
	if err != nil {
		return nil, err
	}
	_, err = nc.Subscribe(events.EvictSubject, func(m *natsgo.Msg) { cache.EvictUUID(string(m.Data)) })
	if err != nil {
		nc.Close()
		return nil, err
	}
	_, err = nc.Subscribe(events.RevokedSubjects, func(m *natsgo.Msg) {
		var ev struct {
			Data struct {
				UUID string `json:"uuid"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &ev) == nil && ev.Data.UUID != "" {
			cache.EvictUUID(ev.Data.UUID)
		}
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	if nc.IsConnected() {
		// Connected synchronously: the subscription is registered with
		// the server once this flush returns.
		if err := nc.Flush(); err == nil {
			cache.SetTrusted(true)
		}
	}
	return &RevocationWatcher{nc: nc}, nil
}

// BroadcastEviction tells every replica to drop uuid from its cache and
// waits until the NATS server has taken the message (which it forwards to
// subscribers as it takes it). Without NATS it returns an error at once;
// the other replicas then distrust their caches anyway.
func (w *RevocationWatcher) BroadcastEviction(ctx context.Context, uuid string) error {
	if !w.nc.IsConnected() {
		return ErrNotConnected // don't queue it for a reconnect: caches are emptied then anyway
	}
	if err := w.nc.Publish(events.EvictSubject, []byte(uuid)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, evictFlushTimeout)
	defer cancel()
	return w.nc.FlushWithContext(ctx)
}

// evictFlushTimeout bounds how long remove waits for the broadcast.
const evictFlushTimeout = 500 * time.Millisecond

// Close stops watching; the cache is no longer trusted.
func (w *RevocationWatcher) Close() { w.nc.Close() }
