package dovecot

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/consume"
)

// Subjects the Kicker reads: revocations (kick) and creations (flush the
// auth cache, so that a cached "wrong password" does not outlive the
// password's creation).
var kickSubjects = []string{"apppasswords.created.>", events.RevokedSubjects}

// Outcomes of a doveadm request, as counted and shown.
const (
	DoveadmOK           = "ok"
	DoveadmUnreachable  = "unreachable"
	DoveadmUnauthorized = "unauthorized"
	DoveadmFailed       = "failed"
)

// KickerConfig configures a Kicker.
type KickerConfig struct {
	// Clients are the Dovecots to call, one durable consumer each.
	Clients []*Client
	// MailApp reports whether an app scope may log in over IMAP, POP3 or
	// SMTP: only those passwords can have Dovecot sessions. Unknown
	// scopes must count as mail (a catalogue may have dropped the app).
	MailApp func(appScope string) bool
	// Since is where a consumer created now starts: apppassd's start, so
	// that events stored before the consumer existed are handled too.
	Since time.Time
	// RetryDelay (default 1 s) doubles after each failed attempt of an
	// event, up to MaxRetryDelay (default 1 min).
	RetryDelay, MaxRetryDelay time.Duration
	Logger                    *slog.Logger
}

// Kicker calls each Dovecot's doveadm API on the events of the stream:
// on a revoked mail password it kicks the user's sessions and flushes
// the user's auth cache entries; on a created one it flushes them.
//
// Each Dovecot has a durable JetStream consumer of its own
// ("apppass-doveadm-<hash of its URL>"), so a Dovecot that is down holds
// back no other, and its events wait in the stream: they are retried
// with back-off until Dovecot answers, across restarts of apppassd and
// NATS (at least once: kicking twice, or a user without sessions, is
// harmless).
type Kicker struct {
	cfg     KickerConfig
	targets []*doveadmTarget

	mu sync.Mutex
	js jetstream.JetStream // set by Run, for Targets
}

// doveadmTarget is one Dovecot and what is known of its state.
type doveadmTarget struct {
	client  *Client
	durable string

	mu        sync.Mutex
	consumer  *consume.Consumer
	failing   bool
	lastError string
	lastOK    time.Time
	lastFail  time.Time
	counts    map[string]uint64
}

// NewKicker checks cfg and returns a Kicker; Run starts it.
func NewKicker(cfg KickerConfig) (*Kicker, error) {
	if len(cfg.Clients) == 0 {
		return nil, errors.New("doveadm: no URL")
	}
	if cfg.MailApp == nil {
		cfg.MailApp = func(string) bool { return true }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &Kicker{cfg: cfg}
	seen := map[string]bool{}
	for _, c := range cfg.Clients {
		if seen[c.Name()] {
			return nil, errors.New("doveadm: " + c.Name() + " is listed twice")
		}
		seen[c.Name()] = true
		k.targets = append(k.targets, &doveadmTarget{client: c, durable: events.DoveadmConsumer(c.Name()), counts: map[string]uint64{}})
	}
	return k, nil
}

// Run consumes the stream for every Dovecot until ctx is done, then
// stops the consumers (an attempt in flight finishes first). A consumer
// that cannot be created yet (NATS away, no stream) is retried.
func (k *Kicker) Run(ctx context.Context, js jetstream.JetStream) {
	k.mu.Lock()
	k.js = js
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range k.targets {
		wg.Go(func() { k.runTarget(ctx, js, t) })
	}
	wg.Wait()
}

func (k *Kicker) runTarget(ctx context.Context, js jetstream.JetStream, t *doveadmTarget) {
	log := k.cfg.Logger.With("doveadm", t.client.Name())
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := consume.Watch(ctx, js, consume.Options{
			Subjects: kickSubjects, Durable: t.durable, Start: consume.StartAtTime(k.cfg.Since),
			RetryDelay: k.cfg.RetryDelay, MaxRetryDelay: k.cfg.MaxRetryDelay,
			HandlerLogsErrors: true, Logger: log,
		}, func(ctx context.Context, ev apppass.Event, _ consume.Delivery) error {
			return k.handle(ctx, log, t, ev)
		})
		if err != nil {
			log.Debug("doveadm: cannot consume events yet; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 10*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
		t.mu.Lock()
		t.consumer = c
		t.mu.Unlock()
		select {
		case <-ctx.Done():
			c.Stop()
			return
		case <-c.Done(): // the NATS connection was closed
		}
		t.mu.Lock()
		t.consumer = nil
		t.mu.Unlock()
	}
}

// handle acts on one event for one Dovecot.
func (k *Kicker) handle(ctx context.Context, log *slog.Logger, t *doveadmTarget, ev apppass.Event) error {
	if ev.Data.Login == "" || !k.cfg.MailApp(ev.Data.AppScope) {
		return nil // no Dovecot session can use it
	}
	var err error
	switch ev.Type {
	case apppass.EventRevoked:
		err = t.client.KickUser(ctx, ev.Data.Login)
	case apppass.EventCreated:
		err = t.client.FlushAuthCache(ctx, ev.Data.Login)
	default:
		return nil
	}
	if err != nil && ctx.Err() != nil {
		return err // stopping: the event is handed on, not a Dovecot failure
	}
	t.record(log, err)
	return err
}

// record counts an attempt and logs a change of the Dovecot's state: the
// first failure (and a different one), and recovery.
func (t *doveadmTarget) record(log *slog.Logger, err error) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	outcome := doveadmOutcome(err)
	t.counts[outcome]++
	if err == nil {
		t.lastOK = now
		if t.failing {
			t.failing = false
			log.Info("doveadm: Dovecot answers again; kicks that waited are being sent")
		}
		return
	}
	t.lastFail = now
	if !t.failing || t.lastError != err.Error() {
		log.Warn("doveadm: request failed; retrying with back-off", "outcome", outcome, "err", err)
	}
	t.failing = true
	t.lastError = err.Error()
}

func doveadmOutcome(err error) string {
	switch {
	case err == nil:
		return DoveadmOK
	case errors.Is(err, ErrUnreachable):
		return DoveadmUnreachable
	case errors.Is(err, ErrUnauthorized):
		return DoveadmUnauthorized
	}
	return DoveadmFailed
}

// TargetStatus is what the admin API and CLI show of one Dovecot.
type TargetStatus struct {
	URL      string `json:"url"`
	Consumer string `json:"consumer"`
	// State is "ok" (the last request succeeded, or none was needed yet)
	// or "failing".
	State     string `json:"state"`
	LastError string `json:"lastError,omitempty"`
	// Pending counts the events not yet handled for this Dovecot
	// (waiting or being retried); -1 when NATS cannot say.
	Pending   int64             `json:"pending"`
	LastOK    *time.Time        `json:"lastOk"`
	LastFail  *time.Time        `json:"lastFailure"`
	Requests  map[string]uint64 `json:"requests"`
	Consuming bool              `json:"consuming"`
}

// Targets returns every Dovecot's status, in the configured order.
func (k *Kicker) Targets(ctx context.Context) []TargetStatus {
	k.mu.Lock()
	js := k.js
	k.mu.Unlock()
	out := make([]TargetStatus, 0, len(k.targets))
	for _, t := range k.targets {
		t.mu.Lock()
		s := TargetStatus{URL: t.client.Name(), Consumer: t.durable, State: "ok", LastError: t.lastError,
			Pending: -1, Requests: map[string]uint64{}, Consuming: t.consumer != nil}
		if t.failing {
			s.State = "failing"
		} else {
			s.LastError = ""
		}
		if !t.lastOK.IsZero() {
			ok := t.lastOK.UTC()
			s.LastOK = &ok
		}
		if !t.lastFail.IsZero() {
			f := t.lastFail.UTC()
			s.LastFail = &f
		}
		for _, o := range []string{DoveadmOK, DoveadmUnreachable, DoveadmUnauthorized, DoveadmFailed} {
			s.Requests[o] = t.counts[o]
		}
		t.mu.Unlock()
		if js != nil {
			s.Pending = consumerPending(ctx, js, t.durable)
		}
		out = append(out, s)
	}
	return out
}

// pending asks NATS how many events a consumer has not acknowledged.
func consumerPending(ctx context.Context, js jetstream.JetStream, durable string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, events.StreamName, durable)
	if err != nil {
		return -1
	}
	info, err := c.Info(ctx)
	if err != nil {
		return -1
	}
	return int64(info.NumPending) + int64(info.NumAckPending)
}
