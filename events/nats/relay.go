package nats

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apppass/apppass"
)

// Relay moves events from the store's outbox to NATS. Events just written
// arrive through Notify and Deliver and go out at once; a periodic sweep
// publishes whatever a NATS outage or a crash left behind. An event stops
// being pending only after JetStream acknowledged it, and stays in the
// outbox, marked published, for KeepPublished after that, so one the
// server acked before it had it on disk goes out again after a crash.
// JetStream drops repeats by event id within its duplicate window (10
// minutes), so each event is in the stream once unless a crash and a
// downtime longer than that fall together.
//
// Several relays (one per apppassd replica) may share one outbox. Before it
// publishes a password's events a relay claims them: a lease on the
// password's document, taken with one conditional write, so two relays do
// not publish the same events; a relay that dies holding a claim is taken
// over when its lease runs out. The events of one password are published
// one after the other, each only after the previous one's ack, so they
// reach the stream in publish order (created, used, revoked) even across a
// takeover.
type Relay struct {
	outbox    apppass.Outbox
	publisher *Publisher
	logger    *slog.Logger
	id        string

	// Events of one password always go to the same worker, which keeps
	// them in order (created before revoked).
	shards []chan job

	// SweepInterval is how often the outbox is swept for leftovers (an
	// index lookup in either store). It bounds how long another replica's
	// event waits when that replica cannot reach NATS: a revocation
	// another replica stored reaches this one's cache within about one
	// interval.
	SweepInterval time.Duration
	// ClaimLease is how long a claim on a password's events lasts: how
	// soon another relay takes over from one that died holding it. It is
	// at least minLease.
	ClaimLease time.Duration
	// PendingLogInterval is how often the number of waiting events is
	// logged while publishing fails.
	PendingLogInterval time.Duration
	// KeepPublished is how long an event JetStream acknowledged stays in
	// the outbox, marked published: as long as the server may take to
	// have it on disk (the embedded server syncs its store once a second,
	// not at every ack). At Run's start the events still kept are
	// published again, since a crash may have taken them from the server;
	// JetStream drops those it has. Zero, for a server that syncs before
	// it acks, deletes them at the next sweep and publishes none again.
	KeepPublished time.Duration

	mu           sync.Mutex
	backoff      time.Duration
	backoffUntil time.Time

	published atomic.Uint64
	conflicts atomic.Uint64
}

// RelayWorkers is how many events a relay publishes at once.
const RelayWorkers = 256

const (
	relayMarkers   = 32
	publishTimeout = 3 * time.Second
	maxBackoff     = 5 * time.Second
	sweepBatch     = 256
	purgeBatch     = 512
	// A claim must outlast at least one publish, with room for the writes
	// around it; it is renewed before a publish that might outrun it.
	minLease     = publishTimeout + 2*time.Second
	defaultLease = 10 * time.Second
)

// NewRelay returns a relay; call Run to start it.
func NewRelay(outbox apppass.Outbox, publisher *Publisher, logger *slog.Logger) *Relay {
	r := &Relay{outbox: outbox, publisher: publisher, logger: logger, id: newRelayID(),
		SweepInterval: time.Second, ClaimLease: defaultLease, PendingLogInterval: 30 * time.Second}
	for range RelayWorkers {
		r.shards = append(r.shards, make(chan job, 64))
	}
	return r
}

// newRelayID names the claims of one relay: host, process and a random
// part, so a restarted apppassd never mistakes its predecessor's claims
// for its own.
func newRelayID() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = crand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// ID is the owner name of this relay's claims.
func (r *Relay) ID() string { return r.id }

// RelayStats counts what a relay did since it started.
type RelayStats struct {
	// Published is how many events JetStream acknowledged to this relay
	// (a repeat JetStream dropped by its id included).
	Published uint64
	// Conflicts is how often another relay's claim held events this one
	// wanted to publish.
	Conflicts uint64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Conflicts: r.conflicts.Load()}
}

// job is one password whose events a worker publishes; done, if set,
// hears the result. fresh, if set, are events the store leased to this
// relay when it wrote them: the worker publishes them without claiming.
type job struct {
	uuid  string
	fresh *apppass.PendingEvents
	done  chan error
}

// Claim implements apppass.EventNotifier: the writes of new events lease
// their outbox to this relay, so it publishes them without a write first.
func (r *Relay) Claim() *apppass.Claim {
	if r.backingOff() || !r.publisher.Connected() {
		// This relay cannot publish now: leave the events to whichever
		// relay can, at its next sweep.
		return nil
	}
	return &apppass.Claim{Owner: r.id, Lease: max(r.ClaimLease, minLease)}
}

// freshJob is the job for events just written.
func freshJob(p apppass.PendingEvents, done chan error) job {
	j := job{uuid: p.PasswordUUID, done: done}
	if !p.ClaimedUntil.IsZero() {
		j.fresh = &p
	}
	return j
}

// Notify implements apppass.EventNotifier. It never blocks: when NATS is
// failing or the queue is full, the sweep picks the events up later.
func (r *Relay) Notify(p apppass.PendingEvents) {
	if r.backingOff() {
		return
	}
	select {
	case r.shard(p.PasswordUUID) <- freshJob(p, nil):
	default:
		// Full: the sweep publishes them, once a lease taken with the
		// write has run out.
	}
}

// Deliver implements apppass.EventNotifier: it hands p to its worker (so
// it stays in order with the password's other events) and waits for the
// acks. The worker publishes everything pending for the password, p's
// events included. While NATS is failing it returns at once; while another
// relay publishes the password's events it waits for that relay to finish
// (which publishes p's events, or leaves them to this one).
func (r *Relay) Deliver(ctx context.Context, p apppass.PendingEvents) error {
	wait := 5 * time.Millisecond
	for {
		if r.backingOff() {
			return ErrNotConnected
		}
		done := make(chan error, 1)
		select {
		case r.shard(p.PasswordUUID) <- freshJob(p, done):
		case <-ctx.Done():
			return ctx.Err()
		}
		p.ClaimedUntil = time.Time{} // a retry claims as any other publish
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !errors.Is(err, apppass.ErrClaimed) {
			return err
		}
		// Another relay holds the claim; it lets go as soon as its
		// publishes are acknowledged. Wait here, not in the worker.
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func (r *Relay) shard(uuid string) chan job {
	h := fnv.New32a()
	h.Write([]byte(uuid))
	return r.shards[h.Sum32()%uint32(len(r.shards))]
}

// Run publishes until ctx is done. Call Flush afterwards to drain.
func (r *Relay) Run(ctx context.Context) {
	// The outbox writes after publishes, which markers do while the
	// workers go on to their next job.
	marks := make(chan mark, 4*RelayWorkers)
	var markers sync.WaitGroup
	for range relayMarkers {
		markers.Go(func() {
			for m := range marks {
				_ = r.finish(m.uuid, m.published)
			}
		})
	}
	defer func() {
		close(marks)
		markers.Wait()
	}()
	var wg sync.WaitGroup
	for _, ch := range r.shards {
		wg.Go(func() {
			seen := new(recentEvents)
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-ch:
					r.publish(ctx, j, false, seen, marks)
				}
			}
		})
	}
	wg.Go(func() {
		t := time.NewTicker(r.SweepInterval)
		defer t.Stop()
		var lastPendingLog time.Time
		requeued := r.KeepPublished == 0
		for {
			if !requeued {
				requeued = r.requeue(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if requeued {
				// Only after the requeue: the events kept from before a
				// crash are older than KeepPublished.
				r.purge(ctx, time.Now().Add(-r.KeepPublished))
			}
			if r.backingOff() {
				if time.Since(lastPendingLog) >= r.PendingLogInterval {
					lastPendingLog = time.Now()
					r.logPending(ctx, "events wait in the outbox until NATS answers again")
				}
				continue
			}
			// Sweep until a batch comes back short: after an outage the
			// backlog drains at full speed, not one batch per tick.
			for ctx.Err() == nil && !r.backingOff() {
				n, err := r.sweep(ctx, "")
				if err != nil {
					if ctx.Err() == nil {
						r.logger.Warn("outbox sweep failed", "err", err)
					}
					break
				}
				if n < sweepBatch {
					break
				}
			}
		}
	})
	wg.Wait()
}

// requeue makes the events kept as published pending again, and reports
// whether that worked (or there were none).
func (r *Relay) requeue(ctx context.Context) bool {
	n, err := r.outbox.RequeuePublished(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("publishing the events kept from before the start again failed; retrying", "err", err)
		}
		return false
	}
	if n > 0 {
		r.logger.Info("publishing again the events NATS may not have had on disk at the last stop", "events", n)
	}
	return true
}

// purge deletes the events marked published before before.
func (r *Relay) purge(ctx context.Context, before time.Time) {
	for ctx.Err() == nil {
		n, err := r.outbox.PurgePublished(ctx, before, purgeBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("deleting published events from the outbox failed", "err", err)
			}
			return
		}
		if n < purgeBatch {
			return
		}
	}
}

// DropPublished deletes every event kept as published: call it once
// nothing can take them from the server any more (the embedded server was
// stopped and its store synced), so the next start publishes none again.
func (r *Relay) DropPublished(ctx context.Context) {
	r.purge(ctx, time.Now().Add(time.Second))
}

func (r *Relay) logPending(ctx context.Context, msg string) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := r.outbox.PendingCount(cctx); err == nil {
		r.logger.Warn(msg, "pendingEvents", n)
	}
}

// Flush publishes everything pending, until the outbox is empty (but for
// events another relay is publishing) or ctx ends. It is what SIGTERM
// waits for. It tries even while the relay backs off.
func (r *Relay) Flush(ctx context.Context) error {
	for {
		n, err := r.sweep(ctx, r.id)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// sweep reads a batch of pending events and publishes it: through the
// workers (waiting for them) while they run, that is unless mine is set;
// directly, with mine this relay's id, once they stopped. It returns the
// batch size. Passwords another relay holds are skipped, and while the
// workers run, so are those leased to this one: their jobs are on the
// way, and one that was dropped (a full queue) is swept once its lease
// runs out. Once the workers stopped, this relay's own are swept too.
func (r *Relay) sweep(ctx context.Context, mine string) (int, error) {
	viaWorkers := mine == ""
	batch, err := r.outbox.Pending(ctx, sweepBatch, mine)
	if err != nil {
		return 0, err
	}
	// Relays sweeping one outbox get the same batch: in another order
	// each, they mostly take different passwords instead of queueing for
	// the same claims.
	rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
	if !viaWorkers {
		for _, p := range batch {
			if err := r.publish(ctx, job{uuid: p.PasswordUUID}, true, nil, nil); err != nil && !errors.Is(err, apppass.ErrClaimed) {
				return 0, err
			}
		}
		return len(batch), nil
	}
	dones := make([]chan error, 0, len(batch))
	for _, p := range batch {
		done := make(chan error, 1)
		select {
		case r.shard(p.PasswordUUID) <- job{uuid: p.PasswordUUID, done: done}:
			dones = append(dones, done)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	var firstErr error
	for _, done := range dones {
		select {
		case err := <-done:
			if err != nil && firstErr == nil && !errors.Is(err, apppass.ErrClaimed) {
				firstErr = err
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if firstErr != nil && !errors.Is(firstErr, ErrNotConnected) {
		// ErrNotConnected is the back-off's business, logged once by it.
		return 0, firstErr
	}
	return len(batch), nil
}

// publish claims the outbox of one password, sends its events in order
// and marks them published, letting the claim go, in one write after the
// last ack. It returns apppass.ErrClaimed when another relay holds the
// claim. Unless force is set, it does nothing while the relay backs off.
// seen, if set, are the events the calling worker published lately: they
// are marked without being sent again. With marks set, the markers do
// that write while the caller goes on: a job behind this one (the remove
// right after an add, waiting in Deliver) waits only for the publishes.
//
// j.done, if set, hears the outcome as soon as it is known: after the last
// ack, before the marks, so a remove waiting in Deliver does not wait for
// the outbox write too (if that write fails, the events go out again and
// JetStream drops the repeats).
func (r *Relay) publish(ctx context.Context, j job, force bool, seen *recentEvents, marks chan<- mark) (err error) {
	uuid, acked := j.uuid, j.done
	if acked != nil {
		defer func() {
			if acked != nil {
				acked <- err
			}
		}()
	}
	if !force && r.backingOff() {
		return ErrNotConnected
	}
	lease := max(r.ClaimLease, minLease)
	claim := func() ([]apppass.Event, time.Time, error) {
		until := time.Now().Add(lease)
		evs, err := r.outbox.ClaimPending(ctx, uuid, r.id, lease)
		if errors.Is(err, apppass.ErrClaimed) {
			r.conflicts.Add(1)
		}
		return evs, until, err
	}
	var evs []apppass.Event
	var until time.Time
	if j.fresh != nil {
		// Leased with the write: nothing to claim (the loop below renews
		// the lease if too little of it is left).
		evs, until = j.fresh.Events, j.fresh.ClaimedUntil
	} else if evs, until, err = claim(); err != nil {
		return err
	}
	// published are the events of this job JetStream has: a renewed
	// claim returns them again until they are marked.
	var published []apppass.Event
	sent := func(id string) bool {
		return seen.has(id) || slices.ContainsFunc(published, func(ev apppass.Event) bool { return ev.ID == id })
	}
	for len(evs) > 0 {
		if time.Until(until) < publishTimeout+time.Second {
			// The lease might run out during the publish: renew it
			// (and read what is left to publish).
			if evs, until, err = claim(); err != nil {
				r.finish(uuid, published)
				return err
			}
			continue
		}
		ev := evs[0]
		evs = evs[1:]
		if !sent(ev.ID) {
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			err := r.publisher.Publish(pctx, ev)
			cancel()
			if err != nil {
				r.failed(err)
				r.finish(uuid, published)
				return err
			}
			r.published.Add(1)
			r.succeeded()
			seen.add(ev.ID)
		}
		published = append(published, ev)
	}
	if acked != nil {
		acked <- nil
		acked = nil
	}
	if marks != nil {
		select {
		case marks <- mark{uuid: uuid, published: published}:
			return nil
		default: // the markers are behind: this worker waits with them
		}
	}
	return r.finish(uuid, published)
}

// mark is a finish for the markers to do.
type mark struct {
	uuid      string
	published []apppass.Event
}

// finish marks published the events of password uuid JetStream has and
// lets this relay's claim go, in one write; if that fails, the claim's
// lease runs out and the events go out again later (JetStream drops the
// repeats by their ids). It runs to its end even while Run stops, so a
// stop does not publish everything again at the next start.
func (r *Relay) finish(uuid string, published []apppass.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if len(published) == 0 {
		err := r.outbox.ReleaseClaim(ctx, uuid, r.id)
		if err != nil {
			r.logger.Debug("releasing an outbox claim failed; its lease runs out", "password", uuid, "err", err)
		}
		return err
	}
	err := r.outbox.MarkPublished(ctx, uuid, r.id, published)
	if err != nil {
		r.logger.Warn("marking events published failed; they go out again and JetStream drops the repeats", "password", uuid, "err", err)
	}
	return err
}

// recentEvents are the ids of the last events one worker published. A
// job may carry events its worker published a moment before, which the
// write that made the job returned before they were marked (a remove
// right after an add); they are marked without being sent again.
type recentEvents struct {
	ids  [64]string
	next int
}

func (r *recentEvents) has(id string) bool { return r != nil && slices.Contains(r.ids[:], id) }

func (r *recentEvents) add(id string) {
	if r != nil {
		r.ids[r.next] = id
		r.next = (r.next + 1) % len(r.ids)
	}
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
