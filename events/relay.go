package events

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/apppass/apppass"
)

// Relay moves events from the MongoDB outbox to NATS. Events just written
// arrive through Notify and go out at once; a periodic sweep publishes
// whatever a NATS outage or a crash left behind. An event leaves the outbox
// only after JetStream acknowledged it, and JetStream drops repeats by
// event id, so each event is in the stream exactly once.
type Relay struct {
	outbox    apppass.Outbox
	publisher *Publisher
	logger    *slog.Logger

	// Events of one password always go to the same worker, which keeps
	// them in order (created before revoked).
	shards []chan job

	// SweepInterval is how often the outbox is swept for leftovers.
	SweepInterval time.Duration

	mu           sync.Mutex
	backoff      time.Duration
	backoffUntil time.Time
}

const (
	relayWorkers   = 4
	publishTimeout = 3 * time.Second
	maxBackoff     = 5 * time.Second
)

// NewRelay returns a relay; call Run to start it.
func NewRelay(outbox apppass.Outbox, publisher *Publisher, logger *slog.Logger) *Relay {
	r := &Relay{outbox: outbox, publisher: publisher, logger: logger, SweepInterval: time.Second}
	for range relayWorkers {
		r.shards = append(r.shards, make(chan job, 1024))
	}
	return r
}

// job is one password's events for a worker; done, if set, hears the result.
type job struct {
	events apppass.PendingEvents
	done   chan error
}

// Notify implements apppass.EventNotifier. It never blocks: when NATS is
// failing or the queue is full, the sweep picks the events up later.
func (r *Relay) Notify(p apppass.PendingEvents) {
	if r.backingOff() {
		return
	}
	select {
	case r.shard(p.PasswordUUID) <- job{events: p}:
	default:
	}
}

// Deliver implements apppass.EventNotifier: it hands p to its worker (so
// it stays in order with the password's other events) and waits for the
// acks. While NATS is failing it returns at once.
func (r *Relay) Deliver(ctx context.Context, p apppass.PendingEvents) error {
	if r.backingOff() {
		return ErrNotConnected
	}
	done := make(chan error, 1)
	select {
	case r.shard(p.PasswordUUID) <- job{events: p, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Relay) shard(uuid string) chan job {
	h := fnv.New32a()
	h.Write([]byte(uuid))
	return r.shards[h.Sum32()%uint32(len(r.shards))]
}

// Run publishes until ctx is done. Call Flush afterwards to drain.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ch := range r.shards {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-ch:
					err := r.publish(ctx, j.events)
					if j.done != nil {
						j.done <- err
					}
				}
			}
		})
	}
	wg.Go(func() {
		t := time.NewTicker(r.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if r.backingOff() {
					continue
				}
				if _, err := r.sweep(ctx, true); err != nil && ctx.Err() == nil {
					r.logger.Warn("outbox sweep failed", "err", err)
				}
			}
		}
	})
	wg.Wait()
}

// Flush publishes everything pending, until the outbox is empty or ctx
// ends. It is what SIGTERM waits for.
func (r *Relay) Flush(ctx context.Context) error {
	for {
		n, err := r.sweep(ctx, false)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// sweep reads a batch of pending events and publishes it, through the
// workers when they run, directly otherwise. It returns the batch size.
func (r *Relay) sweep(ctx context.Context, viaWorkers bool) (int, error) {
	batch, err := r.outbox.Pending(ctx, 256)
	if err != nil {
		return 0, err
	}
	for _, p := range batch {
		if viaWorkers {
			select {
			case r.shard(p.PasswordUUID) <- job{events: p}:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			continue
		}
		if err := r.publish(ctx, p); err != nil {
			return 0, err
		}
	}
	return len(batch), nil
}

// publish sends one password's pending events in order and marks each one
// published after its ack.
func (r *Relay) publish(ctx context.Context, p apppass.PendingEvents) error {
	for _, ev := range p.Events {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := r.publisher.Publish(pctx, ev)
		cancel()
		if err != nil {
			r.failed(err)
			return err
		}
		r.succeeded()
		if err := r.outbox.MarkPublished(ctx, p.PasswordUUID, ev); err != nil {
			// Published but still in the outbox: it goes out again later
			// and JetStream drops the repeat by its id.
			r.logger.Warn("marking an event published failed", "event", ev.ID, "err", err)
			return err
		}
	}
	return nil
}

func (r *Relay) backingOff() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Now().Before(r.backoffUntil)
}

func (r *Relay) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backoff == 0 {
		r.logger.Warn("publishing events failed; they wait in the outbox", "err", err)
		r.backoff = 100 * time.Millisecond
	} else {
		r.backoff = min(2*r.backoff, maxBackoff)
	}
	r.backoffUntil = time.Now().Add(r.backoff)
}

func (r *Relay) succeeded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backoff != 0 {
		r.logger.Info("publishing events again")
	}
	r.backoff, r.backoffUntil = 0, time.Time{}
}
