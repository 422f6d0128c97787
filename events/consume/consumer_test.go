package consume_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/consume"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/internal/testenv"
)

// consumerEnv is an embedded nats-server with the stream, the real
// Publisher and a client connection for consumers.
type consumerEnv struct {
	url string
	pub *nats.Publisher
	js  jetstream.JetStream
	nc  *natsgo.Conn
}

func newConsumerEnv(t *testing.T, url string) *consumerEnv {
	t.Helper()
	pub, err := nats.Connect(url, "consumer-test-publisher")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !pub.Connected() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(url, natsgo.MaxReconnects(-1), natsgo.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &consumerEnv{url: url, pub: pub, js: js, nc: nc}
}

// publish publishes an event of typ for a password and returns it.
func (e *consumerEnv) publish(t *testing.T, typ, uuid string) apppass.Event {
	t.Helper()
	ev := apppass.Event{
		ID: testenv.RandomHex(12), Type: typ, Timestamp: time.Now().UTC(),
		Data: apppass.EventData{UUID: uuid, ContextID: 1, UserID: 3, Login: "demo@example.com", AppScope: "caldav", Name: "Phone"},
	}
	if typ == apppass.EventRevoked {
		ev.Data.Reason = apppass.ReasonUser
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !e.pub.Connected() && ctx.Err() == nil { // after a NATS restart
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.pub.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *consumerEnv) lastSeq(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

type handled struct {
	ev apppass.Event
	d  consume.Delivery
}

// collector is a handler that records what it gets.
type collector struct {
	mu   sync.Mutex
	got  []handled
	fail func(apppass.Event, consume.Delivery) error // optional
}

func (c *collector) handle(_ context.Context, ev apppass.Event, d consume.Delivery) error {
	if c.fail != nil {
		if err := c.fail(ev, d); err != nil {
			c.mu.Lock()
			c.got = append(c.got, handled{ev, d})
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Lock()
	c.got = append(c.got, handled{ev, d})
	c.mu.Unlock()
	return nil
}

func (c *collector) all() []handled {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]handled(nil), c.got...)
}

// waitN waits until the handler was called n times.
func (c *collector) waitN(t *testing.T, n int) []handled {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got := c.all(); len(got) >= n {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("handler called %d times within 10 s, want %d: %+v", len(c.all()), n, ids(c.all()))
	return nil
}

// quiet checks that nothing more arrives for d.
func (c *collector) quiet(t *testing.T, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := c.all(); len(got) != n {
		t.Fatalf("handler called %d times, want %d: %v", len(got), n, ids(got))
	}
}

func ids(hs []handled) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.ev.ID)
	}
	return out
}

func wantIDs(t *testing.T, what string, got []handled, want ...apppass.Event) {
	t.Helper()
	var w []string
	for _, e := range want {
		w = append(w, e.ID)
	}
	if strings.Join(ids(got), ",") != strings.Join(w, ",") {
		t.Fatalf("%s: got %v, want %v", what, ids(got), w)
	}
}

func watch(t *testing.T, js jetstream.JetStream, opts consume.Options, c *collector) *consume.Consumer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testenv.Quiet()
	}
	cons, err := consume.Watch(context.Background(), js, opts, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Stop)
	return cons
}

// TestConsumerReplay replays from a sequence, from a time, from the start
// and from now, for revocations only and for all events, on ordered and
// durable consumers.
func TestConsumerReplay(t *testing.T) {
	env := newConsumerEnv(t, testenv.NATS(t).URL())
	c1 := env.publish(t, apppass.EventCreated, "p1")  // seq 1
	r1 := env.publish(t, apppass.EventRevoked, "p1")  // seq 2
	c2 := env.publish(t, apppass.EventCreated, "p2")  // seq 3
	u2 := env.publish(t, apppass.EventFirstUse, "p2") // seq 4
	time.Sleep(20 * time.Millisecond)
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	r2 := env.publish(t, apppass.EventRevoked, "p2") // seq 5
	c3 := env.publish(t, apppass.EventCreated, "p3") // seq 6

	t.Run("all events from the start", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Events: consume.AllEvents, Start: consume.StartAll()}, c)
		got := c.waitN(t, 6)
		wantIDs(t, "all", got, c1, r1, c2, u2, r2, c3)
		for i, h := range got {
			if h.d.Sequence != uint64(i+1) || h.d.Attempt != 1 || h.d.Pending != uint64(5-i) || h.d.Subject != h.ev.Subject() || h.d.Stored.IsZero() {
				t.Fatalf("delivery %d: %+v", i, h.d)
			}
		}
		if got[3].ev.Type != apppass.EventFirstUse || got[3].d.Subject != "apppasswords.used.1.3" || got[1].ev.Data.Reason != "user" {
			t.Fatalf("decoded events: %+v", got)
		}
	})
	t.Run("revocations from the start", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Start: consume.StartAll()}, c)
		got := c.waitN(t, 2)
		c.quiet(t, 2, 100*time.Millisecond)
		wantIDs(t, "revocations", got, r1, r2)
		if got[0].d.Sequence != 2 || got[1].d.Sequence != 5 {
			t.Fatalf("sequences: %+v", got)
		}
	})
	t.Run("from a sequence", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Events: consume.AllEvents, Start: consume.StartAtSequence(4)}, c)
		wantIDs(t, "from 4", c.waitN(t, 3), u2, r2, c3)
	})
	t.Run("durable from a sequence", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Events: consume.AllEvents, Start: consume.StartAtSequence(3), Durable: "replay-seq"}, c)
		got := c.waitN(t, 4)
		wantIDs(t, "durable from 3", got, c2, u2, r2, c3)
		if got[0].d.Durable != "replay-seq" {
			t.Fatalf("delivery: %+v", got[0].d)
		}
	})
	t.Run("from a time", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Events: consume.AllEvents, Start: consume.StartAtTime(since)}, c)
		wantIDs(t, "since", c.waitN(t, 2), r2, c3)
		d := &collector{}
		watch(t, env.js, consume.Options{Start: consume.StartAtTime(since), Durable: "replay-time"}, d)
		got := d.waitN(t, 1)
		d.quiet(t, 1, 100*time.Millisecond)
		wantIDs(t, "durable revocations since", got, r2)
	})
	t.Run("new only", func(t *testing.T) {
		ordered, durable := &collector{}, &collector{}
		watch(t, env.js, consume.Options{}, ordered)
		watch(t, env.js, consume.Options{Durable: "replay-new"}, durable)
		r3 := env.publish(t, apppass.EventRevoked, "p3")
		wantIDs(t, "ordered new", ordered.waitN(t, 1), r3)
		wantIDs(t, "durable new", durable.waitN(t, 1), r3)
		ordered.quiet(t, 1, 50*time.Millisecond)
	})
	t.Run("subjects", func(t *testing.T) {
		c := &collector{}
		watch(t, env.js, consume.Options{Subjects: []string{"apppasswords.created.>"}, Start: consume.StartAll()}, c)
		got := c.waitN(t, 3)
		c.quiet(t, 3, 50*time.Millisecond)
		wantIDs(t, "created", got, c1, c2, c3)
	})
	t.Run("missing stream", func(t *testing.T) {
		_, err := consume.Watch(context.Background(), env.js, consume.Options{Stream: "NOPE"}, (&collector{}).handle)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("Watch on a missing stream: %v", err)
		}
	})
}

// TestConsumerDurableResumes stops a durable consumer and starts it again: it gets what was published meanwhile and
// nothing it acknowledged before, whatever Start says now.
func TestConsumerDurableResumes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	srv := testenv.NATSAt(t, addr, dir)
	env := newConsumerEnv(t, srv.URL())

	a := env.publish(t, apppass.EventRevoked, "a")
	b := env.publish(t, apppass.EventRevoked, "b")
	first := &collector{}
	cons := watch(t, env.js, consume.Options{Durable: "gateway-1", Start: consume.StartAll()}, first)
	wantIDs(t, "first run", first.waitN(t, 2), a, b)
	cons.Stop()
	select {
	case <-cons.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}

	// NATS restarts while the consumer is away, and events are published
	// before it comes back: the durable and its ack floor survive, and
	// nothing the first run handed over is lost or redelivered.
	srv.Stop()
	srv2 := testenv.NATSAt(t, addr, dir)
	c := env.publish(t, apppass.EventRevoked, "c")
	_ = env.publish(t, apppass.EventCreated, "d") // filtered out
	d := env.publish(t, apppass.EventRevoked, "d")

	second := &collector{}
	var heard sync.Once
	outage := make(chan struct{})
	watch(t, env.js, consume.Options{Durable: "gateway-1", Start: consume.StartAll(),
		OnError: func(error) { heard.Do(func() { close(outage) }) }}, second)
	second.waitN(t, 2)

	// NATS restarts under the running consumer: it reports the outage and
	// pulls again once NATS is back.
	srv2.Stop()
	select {
	case <-outage:
	case <-time.After(10 * time.Second):
		t.Fatal("OnError heard nothing of the NATS outage")
	}
	testenv.NATSAt(t, addr, dir)
	e := env.publish(t, apppass.EventRevoked, "e")
	got := second.waitN(t, 3)
	second.quiet(t, 3, 200*time.Millisecond)
	wantIDs(t, "after restarts", got, c, d, e)
	for _, h := range got {
		if h.d.Attempt != 1 {
			t.Fatalf("redelivered: %+v", h.d)
		}
	}

	// The server agrees: nothing waits for an ack, nothing was redelivered.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := env.js.Consumer(ctx, events.StreamName, "gateway-1")
	if err != nil {
		t.Fatal(err)
	}
	if i := info.CachedInfo(); i.NumAckPending != 0 || i.NumRedelivered != 0 || i.NumPending != 0 || i.Config.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Fatalf("consumer info: ackPending %d redelivered %d pending %d policy %v", i.NumAckPending, i.NumRedelivered, i.NumPending, i.Config.DeliverPolicy)
	}
}

// TestConsumerRedeliversOnHandlerError makes a handler fail twice on one
// event: it comes again after the retry delay, and the other events are
// not held up (durable) or wait their turn (ordered).
func TestConsumerRedeliversOnHandlerError(t *testing.T) {
	env := newConsumerEnv(t, testenv.NATS(t).URL())
	for _, durable := range []string{"redeliver", ""} {
		name := "durable"
		if durable == "" {
			name = "ordered"
		}
		t.Run(name, func(t *testing.T) {
			from := env.lastSeq(t) + 1
			bad := env.publish(t, apppass.EventRevoked, "bad-"+name)
			good := env.publish(t, apppass.EventRevoked, "good-"+name)
			failures := 0
			c := &collector{fail: func(ev apppass.Event, d consume.Delivery) error {
				if ev.ID == bad.ID && failures < 2 {
					failures++
					return errors.New("gateway busy")
				}
				return nil
			}}
			watch(t, env.js, consume.Options{Durable: durable, Start: consume.StartAtSequence(from), RetryDelay: 50 * time.Millisecond}, c)
			got := c.waitN(t, 4)
			c.quiet(t, 4, 300*time.Millisecond)
			var attempts []int
			for _, h := range got {
				if h.ev.ID == bad.ID {
					attempts = append(attempts, h.d.Attempt)
				}
			}
			if len(attempts) != 3 || attempts[0] != 1 || attempts[1] != 2 || attempts[2] != 3 {
				t.Fatalf("attempts of the failing event: %v (%v)", attempts, ids(got))
			}
			if durable == "" {
				wantIDs(t, "ordered", got, bad, bad, bad, good)
			} else if got[1].ev.ID != good.ID {
				t.Fatalf("durable: the good event waited for the bad one: %v", ids(got))
			}
		})
	}
}

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestConsumerSkipsMalformedEvents puts garbage on the stream: it is
// acknowledged and skipped with a warning, not redelivered forever, and
// the valid events around it arrive.
func TestConsumerSkipsMalformedEvents(t *testing.T) {
	env := newConsumerEnv(t, testenv.NATS(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := env.publish(t, apppass.EventRevoked, "before")
	for _, body := range []string{`not json`, `{"id":"x","type":"apppassword.revoked","data":{}}`, `[1,2]`} {
		if _, err := env.js.Publish(ctx, "apppasswords.revoked.1.3", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	after := env.publish(t, apppass.EventRevoked, "after")

	for _, durable := range []string{"malformed", ""} {
		logs := &logBuffer{}
		logger := slog.New(slog.NewTextHandler(logs, nil))
		c := &collector{}
		watch(t, env.js, consume.Options{Durable: durable, Start: consume.StartAll(), AckWait: 300 * time.Millisecond, Logger: logger}, c)
		got := c.waitN(t, 2)
		c.quiet(t, 2, time.Second) // > AckWait: anything unacknowledged would be back
		wantIDs(t, "valid events", got, before, after)
		if n := strings.Count(logs.String(), "malformed event skipped"); n != 3 {
			t.Fatalf("durable %q: %d warnings, want 3:\n%s", durable, n, logs)
		}
		if durable == "" {
			continue
		}
		info, err := env.js.Consumer(ctx, events.StreamName, durable)
		if err != nil {
			t.Fatal(err)
		}
		if i := info.CachedInfo(); i.NumAckPending != 0 || i.NumRedelivered != 0 || i.AckFloor.Stream != 5 {
			t.Fatalf("consumer info: ackPending %d redelivered %d ackFloor %d", i.NumAckPending, i.NumRedelivered, i.AckFloor.Stream)
		}
	}
}

// TestConsumerStopsWithItsContext ends a consumer through Watch's context.
func TestConsumerStopsWithItsContext(t *testing.T) {
	env := newConsumerEnv(t, testenv.NATS(t).URL())
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{}
	cons, err := consume.Watch(ctx, env.js, consume.Options{Durable: "ctx"}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-cons.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("consumer still running after its context ended")
	}
	env.publish(t, apppass.EventRevoked, "late")
	c.quiet(t, 0, 100*time.Millisecond)
}

// TestConsumerHandsOverWhilePublishing stops and restarts a durable
// consumer again and again while events keep coming, with MaxDeliver 1
// (an event the server sent to a consumer that dropped it is never sent
// again) and the default AckWait (30 s, far longer than the test waits).
// Every event must reach a handler, and only one: what the server sent
// to a stopping consumer is handled, not dropped, and nothing is sent to
// it once Stop returned.
func TestConsumerHandsOverWhilePublishing(t *testing.T) {
	env := newConsumerEnv(t, testenv.NATS(t).URL())
	opts := consume.Options{Durable: "handover", Start: consume.StartNew(), MaxDeliver: 1}
	c := &collector{}
	cons := watch(t, env.js, opts, c)

	const rounds = 25
	published := make(chan []apppass.Event)
	go func() {
		var evs []apppass.Event
		defer func() { published <- evs }()
		for i := 0; i < rounds*20; i++ {
			ev := apppass.Event{
				ID: testenv.RandomHex(12), Type: apppass.EventRevoked, Timestamp: time.Now().UTC(),
				Data: apppass.EventData{UUID: "u", ContextID: 1, UserID: 3, Reason: apppass.ReasonUser},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := env.pub.Publish(ctx, ev)
			cancel()
			if err != nil {
				t.Error(err)
				return
			}
			evs = append(evs, ev)
			time.Sleep(time.Millisecond)
		}
	}()
	for range rounds {
		time.Sleep(time.Duration(5+rand.IntN(30)) * time.Millisecond)
		cons.Stop()
		cons = watch(t, env.js, opts, c)
	}
	evs := <-published
	deadline := time.Now().Add(10 * time.Second)
	for len(c.all()) < len(evs) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := c.all()
	c.quiet(t, len(evs), 200*time.Millisecond)
	seen := map[string]int{}
	for _, h := range got {
		seen[h.ev.ID]++
	}
	for _, ev := range evs {
		if seen[ev.ID] != 1 {
			t.Errorf("event %s handled %d times", ev.ID, seen[ev.ID])
		}
	}
}
