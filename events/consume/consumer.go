package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
)

// This file is the consumer side, for gateway authors: Watch delivers
// decoded events from the APPPASSWORDS stream to a handler. The delivery
// contract is documented on Consumer.

// Selection says which events a consumer receives.
type Selection int

const (
	// Revocations are the revoked events only (apppasswords.revoked.>):
	// what a gateway needs to drop sessions.
	Revocations Selection = iota
	// AllEvents are all of them (apppasswords.>): created, revoked and the
	// used events (apppassword.first_use, apppassword.new_ip).
	AllEvents
)

// Subjects returns the stream subjects the selection filters on.
func (s Selection) Subjects() []string {
	if s == AllEvents {
		return []string{events.StreamSubjects}
	}
	return []string{events.RevokedSubjects}
}

// Start is where a new consumer starts reading the stream. The zero value
// is StartNew.
type Start struct {
	all  bool
	seq  uint64
	time time.Time
}

// StartNew delivers only events stored after the consumer was created.
func StartNew() Start { return Start{} }

// StartAll replays everything the stream still holds.
func StartAll() Start { return Start{all: true} }

// StartAtSequence replays from stream sequence seq on (Delivery.Sequence
// of the last event handled, plus one, resumes after it).
func StartAtSequence(seq uint64) Start { return Start{seq: max(seq, 1)} }

// StartAtTime replays the events the stream stored at t or later.
func StartAtTime(t time.Time) Start { return Start{time: t} }

func (s Start) String() string {
	switch {
	case s.all:
		return "all"
	case s.seq > 0:
		return fmt.Sprintf("sequence %d", s.seq)
	case !s.time.IsZero():
		return "time " + s.time.UTC().Format(time.RFC3339Nano)
	}
	return "new"
}

// Options configure Watch. The zero value watches revocations on
// an ordered consumer, from now on.
type Options struct {
	// Events selects revocations (the default) or all events.
	Events Selection
	// Subjects, when set, replaces the subjects of Events, e.g.
	// "apppasswords.revoked.7.>" for context 7 only.
	Subjects []string

	// Start is where a new consumer begins. A durable consumer that exists
	// already resumes after its last acknowledged event instead: Start only
	// applies when it is first created.
	Start Start

	// Durable names a durable consumer: it is kept by the server, survives
	// restarts of this process and of the server, and tracks what was
	// acknowledged; events are acknowledged explicitly once the handler
	// returns nil, and redelivered after a handler error. Run one process
	// per name, or several to share the events between them.
	//
	// Empty means an ordered consumer: ephemeral, no acknowledgements,
	// recreated by the client after reconnects from where it was. A handler
	// error is retried in place (holding up later events, which keeps the
	// order) until it succeeds, MaxDeliver is reached or the consumer stops.
	// Nothing is remembered across restarts: pass the last Delivery.Sequence
	// plus one as StartAtSequence to resume.
	Durable string

	// AckWait is how long the server waits for a durable consumer's ack
	// before redelivering (default 30 s). A handler must finish within it.
	AckWait time.Duration
	// MaxDeliver bounds the attempts per event; after the last one the
	// event is given up and logged. Zero or less: unlimited.
	MaxDeliver int
	// RetryDelay is the wait before the first redelivery after a handler
	// error (default 1 s); it doubles with each attempt up to
	// MaxRetryDelay (default 1 min).
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration

	// Stream is the stream to read (default APPPASSWORDS).
	Stream string
	// Logger receives warnings: malformed events skipped, handler errors,
	// consumer errors. Default slog.Default().
	Logger *slog.Logger
	// HandlerLogsErrors says the handler logs its own failures (say once
	// per change of a backend's state): the consumer then notes handler
	// errors and redeliveries at debug level only, instead of a warning
	// for every failed attempt.
	HandlerLogsErrors bool
	// OnError, if set, also hears the client's consumer errors (missed
	// heartbeats, reconnects, a consumer deleted on the server). They are
	// informational: the client recovers by itself where it can.
	OnError func(error)
}

// Delivery says where a handled event sits in the stream.
type Delivery struct {
	// Sequence is the event's stream sequence.
	Sequence uint64
	// Subject is the subject it was published on.
	Subject string
	// Stored is when the stream stored it.
	Stored time.Time
	// Attempt counts deliveries of this event to this consumer, from 1.
	Attempt int
	// Pending is how many matching events the stream holds after this one
	// (0: the consumer has caught up).
	Pending uint64
	// Durable is the consumer's name, empty for an ordered consumer.
	Durable string
}

// Handler handles one event. Returning an error asks for a redelivery
// after a delay; ctx is cancelled when the consumer stops. Handlers run
// one at a time, in delivery order.
type Handler func(ctx context.Context, ev apppass.Event, d Delivery) error

// Consumer delivers events to a Handler until stopped.
//
// Delivery contract: at least once. Every event the stream holds (7 days
// by default) reaches the handler at least once, and may reach it more
// than once: after a handler error, after an ack lost to a crash or a
// network failure, after AckWait expired while the handler was still busy,
// or when a consumer is created again from a start position that overlaps
// what it already saw. Handlers must therefore be idempotent: dedupe by
// Event.ID where acting twice would matter (dropping the sessions of a
// revoked password twice is harmless).
//
// Order: a password's events are published created before revoked. An
// ordered consumer hands all events over in stream order; a durable one
// does too, except that an event waiting for its redelivery after a
// handler error is overtaken by later ones.
type Consumer struct {
	durable string
	cc      jetstream.ConsumeContext
	cancel  context.CancelFunc
	ctx     context.Context
	js      jetstream.JetStream
	log     *slog.Logger

	// A durable consumer pulls in a loop of its own (pullDurable):
	// stopping ends it, and pulled is closed once it ended.
	stopping chan struct{}
	pulled   chan struct{}

	mu       sync.Mutex
	stopped  bool
	handling sync.WaitGroup
	done     chan struct{}
	stopOnce sync.Once
}

// Defaults.
const (
	defaultAckWait       = 30 * time.Second
	defaultRetryDelay    = time.Second
	defaultMaxRetryDelay = time.Minute
	// A durable consumer's events count against AckWait from delivery, so
	// it fetches few at a time.
	durableBatch = 64
	// durablePullWait is how long one pull of a durable consumer waits
	// for events: the longest Stop waits for the server to be done with
	// the last one (the handlers of what it sent aside).
	durablePullWait = time.Second
	// stopWait bounds how long Stop lets a durable consumer's last events
	// reach the handler.
	stopWait = 5 * time.Second
)

// ErrMalformedEvent marks a stream message that is not an apppass event.
var ErrMalformedEvent = errors.New("malformed app password event")

// Watch starts delivering events from js to handle and returns once the
// consumer exists on the server: for StartNew, every event stored after
// Watch returned will reach handle. It fails if the stream does not exist
// (yet): apppassd creates it when it first starts, so a gateway started
// before the sidecar retries.
//
// Delivery is at least once (see Consumer): handle must be idempotent,
// deduplicating by Event.ID where it matters. A message
// that is not a valid event is acknowledged (terminated) and skipped with
// a warning, never redelivered.
//
// Delivery stops when ctx is done or Stop is called.
func Watch(ctx context.Context, js jetstream.JetStream, opts Options, handle Handler) (*Consumer, error) {
	if handle == nil {
		return nil, errors.New("Watch: nil handler")
	}
	opts.setDefaults()
	subjects := opts.Subjects
	if len(subjects) == 0 {
		subjects = opts.Events.Subjects()
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 15*time.Second)
	defer cancelSetup()
	stream, err := js.Stream(setupCtx, opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("Watch: stream %s: %w", opts.Stream, err)
	}

	var cons jetstream.Consumer
	if opts.Durable != "" {
		cons, err = durableConsumer(setupCtx, stream, opts, subjects)
	} else {
		cons, err = orderedConsumer(setupCtx, stream, opts, subjects)
	}
	if err != nil {
		return nil, fmt.Errorf("Watch: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	c := &Consumer{durable: opts.Durable, cancel: cancel, ctx: runCtx, js: js, log: opts.Logger,
		stopping: make(chan struct{}), done: make(chan struct{})}
	reportErr := func(err error) {
		if runCtx.Err() != nil {
			return
		}
		opts.Logger.Debug("event consumer", "durable", opts.Durable, "err", err)
		if opts.OnError != nil {
			opts.OnError(err)
		}
	}
	// ended is closed when delivery ended by itself: the connection was
	// closed.
	var ended <-chan struct{}
	if opts.Durable != "" {
		c.pulled = make(chan struct{})
		go c.pullDurable(cons, opts, handle, reportErr)
		ended = c.pulled
	} else {
		cc, err := cons.Consume(func(m jetstream.Msg) { c.deliver(m, opts, handle) },
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { reportErr(err) }))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("Watch: consuming: %w", err)
		}
		c.cc = cc
		ended = cc.Closed()
	}
	go func() {
		select {
		case <-runCtx.Done():
		case <-ended:
		}
		c.Stop()
	}()
	return c, nil
}

// pullDurable pulls a durable consumer's events one request at a time,
// each waiting at most durablePullWait, until Stop. It does not use the
// client's Consume, which keeps a pull request open on the server at all
// times: stopping that means unsubscribing while the server may be
// sending, and whatever it sends after the unsubscribe is dropped. Here
// Stop lets the request in flight run out; once it has (the server's
// timeout status arrives after everything it sent for the request), the
// server holds no request of this process and sends it nothing more.
func (c *Consumer) pullDurable(cons jetstream.Consumer, opts Options, handle Handler, reportErr func(error)) {
	defer close(c.pulled)
	retry := 50 * time.Millisecond
	for {
		select {
		case <-c.stopping:
			return
		case <-c.ctx.Done():
			return
		default:
		}
		batch, err := cons.Fetch(durableBatch, jetstream.FetchMaxWait(durablePullWait))
		if err == nil {
			for m := range batch.Messages() {
				c.deliver(m, opts, handle)
			}
			err = batch.Error()
		}
		if err == nil {
			retry = 50 * time.Millisecond
			continue
		}
		if errors.Is(err, nats.ErrConnectionClosed) || c.js.Conn().IsClosed() {
			return
		}
		// Disconnected, the consumer deleted on the server, ...: report
		// it and try again, backing off.
		reportErr(err)
		select {
		case <-c.stopping:
			return
		case <-c.ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, 5*time.Second)
	}
}

func (o *Options) setDefaults() {
	if o.Stream == "" {
		o.Stream = events.StreamName
	}
	if o.AckWait <= 0 {
		o.AckWait = defaultAckWait
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = defaultRetryDelay
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = defaultMaxRetryDelay
	}
	if o.MaxRetryDelay < o.RetryDelay {
		o.MaxRetryDelay = o.RetryDelay
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// durableConsumer creates the named consumer, or updates it keeping its
// start position (which the server does not let change, and which no
// longer matters once it has acknowledged events).
func durableConsumer(ctx context.Context, stream jetstream.Stream, opts Options, subjects []string) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       opts.Durable,
		Description:   "apppass events consumer",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}
	if opts.MaxDeliver > 0 {
		cfg.MaxDeliver = opts.MaxDeliver
	}
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
	} else {
		cfg.FilterSubjects = subjects
	}
	existing, err := stream.Consumer(ctx, opts.Durable)
	switch {
	case err == nil:
		old := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
		if old.MaxAckPending != 0 {
			cfg.MaxAckPending = old.MaxAckPending
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = deliverFrom(opts.Start)
	default:
		return nil, fmt.Errorf("looking up consumer %s: %w", opts.Durable, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", opts.Durable, err)
	}
	return cons, nil
}

// orderedConsumer creates an ordered consumer. "New events only" is
// pinned to a sequence, so that when the client recreates the consumer
// after a reconnect before any event arrived, events stored meanwhile
// are not skipped.
func orderedConsumer(ctx context.Context, stream jetstream.Stream, opts Options, subjects []string) (jetstream.Consumer, error) {
	start := opts.Start
	if start == (Start{}) {
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading stream state: %w", err)
		}
		start = StartAtSequence(info.State.LastSeq + 1)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = deliverFrom(start)
	return stream.OrderedConsumer(ctx, cfg)
}

func deliverFrom(s Start) (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch {
	case s.all:
		return jetstream.DeliverAllPolicy, 0, nil
	case s.seq > 0:
		return jetstream.DeliverByStartSequencePolicy, s.seq, nil
	case !s.time.IsZero():
		t := s.time.UTC()
		return jetstream.DeliverByStartTimePolicy, 0, &t
	}
	return jetstream.DeliverNewPolicy, 0, nil
}

// DecodeEvent decodes a stream message body, rejecting anything that is
// not a complete event.
func DecodeEvent(body []byte) (apppass.Event, error) {
	var ev apppass.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return apppass.Event{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	if ev.ID == "" || ev.Type == "" || ev.Data.UUID == "" {
		return apppass.Event{}, fmt.Errorf("%w: id, type or data.uuid missing", ErrMalformedEvent)
	}
	return ev, nil
}

// deliver runs on the client's delivery goroutine, one message at a time.
func (c *Consumer) deliver(m jetstream.Msg, opts Options, handle Handler) {
	c.mu.Lock()
	if c.stopped || c.ctx.Err() != nil {
		c.mu.Unlock()
		if c.durable != "" {
			_ = m.Nak() // not handled: redeliver it to whoever runs next
		}
		return
	}
	c.handling.Add(1)
	c.mu.Unlock()
	defer c.handling.Done()

	log := opts.Logger
	md, err := m.Metadata()
	if err != nil {
		log.Warn("event consumer: message without JetStream metadata skipped", "subject", m.Subject(), "err", err)
		return
	}
	d := Delivery{
		Sequence: md.Sequence.Stream, Subject: m.Subject(), Stored: md.Timestamp,
		Attempt: int(md.NumDelivered), Pending: md.NumPending, Durable: c.durable,
	}
	ev, err := DecodeEvent(m.Data())
	if err != nil {
		// Redelivering cannot make it valid: acknowledge it for good.
		log.Warn("event consumer: malformed event skipped", "sequence", d.Sequence, "subject", d.Subject,
			"durable", c.durable, "err", err)
		if c.durable != "" {
			_ = m.TermWithReason("malformed apppass event")
		}
		return
	}

	if c.durable != "" {
		if err := c.call(handle, ev, d); err != nil {
			if opts.MaxDeliver > 0 && d.Attempt >= opts.MaxDeliver {
				log.Error("event consumer: handler failed on the last attempt; event given up",
					"id", ev.ID, "type", ev.Type, "sequence", d.Sequence, "attempt", d.Attempt, "durable", c.durable, "err", err)
				_ = m.TermWithReason("handler failed MaxDeliver times")
				return
			}
			if c.ctx.Err() != nil {
				_ = m.Nak() // cut short by Stop: redeliver it to whoever runs next, now
				return
			}
			delay := retryDelay(opts, d.Attempt)
			level := slog.LevelWarn
			if opts.HandlerLogsErrors {
				level = slog.LevelDebug
			}
			log.Log(c.ctx, level, "event consumer: handler failed; event redelivered later",
				"id", ev.ID, "type", ev.Type, "sequence", d.Sequence, "attempt", d.Attempt, "retryIn", delay, "durable", c.durable, "err", err)
			_ = m.NakWithDelay(delay)
			return
		}
		// Wait for the server to record the ack: once Watch's caller sees
		// the handler return, a restart does not deliver the event again
		// (unless the ack itself fails, which at-least-once allows).
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.DoubleAck(actx); err != nil {
			log.Warn("event consumer: ack failed; the event will be redelivered", "id", ev.ID, "sequence", d.Sequence, "err", err)
		}
		cancel()
		return
	}

	// Ordered consumer: no redelivery from the server, so retry in place.
	for {
		err := c.call(handle, ev, d)
		if err == nil {
			return
		}
		if opts.MaxDeliver > 0 && d.Attempt >= opts.MaxDeliver {
			log.Error("event consumer: handler failed on the last attempt; event given up",
				"id", ev.ID, "type", ev.Type, "sequence", d.Sequence, "attempt", d.Attempt, "err", err)
			return
		}
		delay := retryDelay(opts, d.Attempt)
		log.Warn("event consumer: handler failed; retrying",
			"id", ev.ID, "type", ev.Type, "sequence", d.Sequence, "attempt", d.Attempt, "retryIn", delay, "err", err)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(delay):
		}
		d.Attempt++
	}
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(handle Handler, ev apppass.Event, d Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return handle(c.ctx, ev, d)
}

func retryDelay(opts Options, attempt int) time.Duration {
	d := opts.RetryDelay
	for i := 1; i < attempt && d < opts.MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, opts.MaxRetryDelay)
}

// Stop stops delivery and waits for a running handler to return (so it
// must not be called from the handler: cancel Watch's context there). It
// is safe to call more than once.
//
// A durable consumer hands over cleanly: Stop asks the server for
// nothing more and waits (about a second at most) until the server is
// done with the request in flight; every event it sent reaches the
// handler, or, if Stop had to give up waiting after 5 s, is Nak'ed for
// immediate redelivery to the next consumer of that name. Nothing is
// left to come back only after AckWait. When Watch's context ends
// instead, the handler's context is cancelled at once and the events
// still arriving are Nak'ed.
func (c *Consumer) Stop() {
	c.stopOnce.Do(func() {
		close(c.stopping)
		if c.pulled != nil {
			select {
			case <-c.pulled:
			case <-time.After(stopWait):
				c.log.Warn("event consumer: still handling when stopped; the rest is Nak'ed", "durable", c.durable)
			}
		}
		c.mu.Lock()
		c.stopped = true
		c.mu.Unlock()
		c.cancel()
		if c.cc != nil {
			c.cc.Stop()
		}
		if c.pulled != nil {
			<-c.pulled // Nak'ing what still arrives, once the handler returned
		}
		c.handling.Wait()
		if c.durable != "" {
			// Acks are confirmed, but Naks are fire and forget: see that
			// they left before the caller closes the connection.
			_ = c.js.Conn().FlushTimeout(stopWait)
		}
		close(c.done)
	})
	<-c.done
}

// Done is closed once the consumer has stopped: after Stop, when Watch's
// context ended, or when the NATS connection was closed.
func (c *Consumer) Done() <-chan struct{} { return c.done }
