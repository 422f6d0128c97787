package nats_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/natsserver"
	"github.com/apppass/apppass/internal/testenv"
)

// Generous bounds: they catch a hang, they do not measure speed.
const (
	opTimeout     = 30 * time.Second
	deliveryBound = 60 * time.Second
)

type env struct {
	store   apppass.Store
	pub     *nats.Publisher
	relay   *nats.Relay
	svc     *apppass.Service
	digests *apppass.Digester
}

// newEnv wires a service to a real store and a relay publishing to natsURL.
// The relay is not running; see run.
func newEnv(t *testing.T, natsURL string) *env {
	t.Helper()
	store := testenv.Store(t)
	pub, err := nats.Connect(natsURL, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	relay := nats.NewRelay(store, pub, testenv.Quiet())
	relay.SweepInterval = 100 * time.Millisecond
	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	pepper := make([]byte, 32)
	_, _ = rand.Read(pepper)
	digests, err := apppass.NewDigester(pepper)
	if err != nil {
		t.Fatal(err)
	}
	svc := &apppass.Service{Store: store, Apps: apps, Digester: digests, Events: relay, MaxPerUser: 50}
	return &env{store: store, pub: pub, relay: relay, svc: svc, digests: digests}
}

// run starts the relay until the end of the test, and waits for it to stop
// before the store and the connection close.
func (e *env) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.relay.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return c
}

func (e *env) pendingCount(t *testing.T) int64 {
	t.Helper()
	n, err := e.store.PendingCount(ctx(t))
	if err != nil {
		t.Fatalf("PendingCount: %v", err)
	}
	return n
}

// waitDrained polls until the outbox is empty.
func (e *env) waitDrained(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := e.pendingCount(t)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still in the outbox after %s", n, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// received is one message read back from the stream.
type received struct {
	Seq     uint64
	Subject string
	MsgID   string
	Raw     []byte
	Event   apppass.Event
}

func toReceived(t *testing.T, m jetstream.Msg) received {
	t.Helper()
	md, err := m.Metadata()
	if err != nil {
		t.Fatalf("message metadata: %v", err)
	}
	r := received{Seq: md.Sequence.Stream, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Raw: slices.Clone(m.Data())}
	if err := json.Unmarshal(r.Raw, &r.Event); err != nil {
		t.Fatalf("payload %s is not an event: %v", r.Raw, err)
	}
	return r
}

// subscribe opens an ordered consumer on the whole stream, which must exist.
func subscribe(t *testing.T, natsURL string) <-chan received {
	t.Helper()
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx(t), events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer on %s: %v", events.StreamName, err)
	}
	ch := make(chan received, 1024)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return // not a JetStream message: the test then misses it and fails waiting
		}
		var ev apppass.Event
		_ = json.Unmarshal(m.Data(), &ev)
		ch <- received{Seq: md.Sequence.Stream, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader),
			Raw: slices.Clone(m.Data()), Event: ev}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return ch
}

func next(t *testing.T, ch <-chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(opTimeout):
		t.Fatalf("no message on the stream within %s", opTimeout)
		return received{}
	}
}

// readStream returns every message in the stream, in stream order.
func readStream(t *testing.T, natsURL string) []received {
	t.Helper()
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx(t), events.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.StreamName, err)
	}
	info, err := stream.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	cons, err := stream.OrderedConsumer(ctx(t), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	deadline := time.Now().Add(opTimeout)
	for len(out) < want {
		if time.Now().After(deadline) {
			t.Fatalf("read %d of the stream's %d messages within %s", len(out), want, opTimeout)
		}
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetching from the stream: %v", err)
		}
		for m := range batch.Messages() {
			out = append(out, toReceived(t, m))
		}
		if err := batch.Error(); err != nil && err != natsgo.ErrTimeout {
			t.Fatalf("fetching from the stream: %v", err)
		}
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

var hexID = regexp.MustCompile(`^[0-9a-f]{24}$`)

// checkPayload checks the documented JSON shape of an event against what
// the test knows about the password.
func checkPayload(t *testing.T, r received, typ, subject string, owner apppass.User, c *apppass.Created, reason string) {
	t.Helper()
	if r.Subject != subject {
		t.Errorf("%s: subject %q, want %q", typ, r.Subject, subject)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Raw, &top); err != nil {
		t.Fatalf("%s: payload %s: %v", typ, r.Raw, err)
	}
	if got := sortedKeys(top); !slices.Equal(got, []string{"data", "id", "timestamp", "type"}) {
		t.Errorf("%s: payload keys %v, want [data id timestamp type]", typ, got)
	}
	var id, gotType, ts string
	_ = json.Unmarshal(top["id"], &id)
	_ = json.Unmarshal(top["type"], &gotType)
	_ = json.Unmarshal(top["timestamp"], &ts)
	if !hexID.MatchString(id) {
		t.Errorf("%s: id %q is not 24 hex digits", typ, id)
	}
	if r.MsgID != id {
		t.Errorf("%s: Nats-Msg-Id %q, payload id %q: they must be equal", typ, r.MsgID, id)
	}
	if gotType != typ {
		t.Errorf("payload type %q, want %q", gotType, typ)
	}
	stamp, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || !strings.HasSuffix(ts, "Z") {
		t.Errorf("%s: timestamp %q is not RFC 3339 UTC (%v)", typ, ts, err)
	}
	if typ == apppass.EventCreated && !stamp.Equal(c.Created) {
		t.Errorf("created: timestamp %s, want the creation time %s", stamp, c.Created)
	}

	var data map[string]any
	d := json.NewDecoder(bytes.NewReader(top["data"]))
	d.UseNumber()
	if err := d.Decode(&data); err != nil {
		t.Fatalf("%s: data %s: %v", typ, top["data"], err)
	}
	wantData := map[string]any{
		"uuid": c.UUID, "contextId": json.Number(fmt.Sprint(owner.ContextID)), "userId": json.Number(fmt.Sprint(owner.UserID)),
		"login": owner.Login, "appScope": c.AppScope, "name": c.Name,
	}
	if reason != "" {
		wantData["reason"] = reason
	}
	if !reflect.DeepEqual(data, wantData) {
		t.Errorf("%s: data %v, want %v", typ, data, wantData)
	}
	checkNoSecret(t, r.Raw, c.Password)
}

func checkNoSecret(t *testing.T, raw []byte, password string) {
	t.Helper()
	normalized, ok := apppass.NormalizePassword(password)
	if !ok {
		t.Fatalf("the service made a password %q that does not normalise", password)
	}
	for _, secret := range [][]byte{[]byte(password), normalized, bytes.ToUpper(normalized)} {
		if bytes.Contains(bytes.ToLower(raw), bytes.ToLower(secret)) {
			t.Errorf("the event payload %s contains the password %q", raw, secret)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestRelayPublishesCreatedThenRevoked(t *testing.T) {
	n := testenv.NATS(t)
	e := newEnv(t, n.URL())
	if err := e.pub.EnsureStream(ctx(t)); err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, n.URL())
	e.run(t)

	owner := apppass.User{ContextID: 314, UserID: 27, Login: "Anna.Schmidt@Example.org"}
	c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "  Anna's phone ✓ "})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := e.svc.Remove(ctx(t), owner, c.UUID, apppass.ReasonUser); err != nil {
		t.Fatalf("Remove: %v", err)
	}

	created, revoked := next(t, msgs), next(t, msgs)
	if created.Event.Type != apppass.EventCreated || revoked.Event.Type != apppass.EventRevoked {
		t.Fatalf("stream order %s, %s; want created, then revoked", created.Event.Type, revoked.Event.Type)
	}
	checkPayload(t, created, apppass.EventCreated, "apppasswords.created.314.27", owner, c, "")
	checkPayload(t, revoked, apppass.EventRevoked, "apppasswords.revoked.314.27", owner, c, apppass.ReasonUser)
	if created.MsgID == revoked.MsgID {
		t.Errorf("created and revoked share the id %s", created.MsgID)
	}

	e.waitDrained(t, opTimeout)
	// Nothing more, in particular no second copy of either event.
	all := readStream(t, n.URL())
	if len(all) != 2 {
		t.Errorf("the stream holds %d messages, want 2", len(all))
	}
	select {
	case r := <-msgs:
		t.Errorf("unexpected third message %s %s", r.Subject, r.Raw)
	default:
	}
}

func TestRelaySurvivesNATSOutage(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	n := testenv.NATSAt(t, addr, dir)
	url := n.URL()
	e := newEnv(t, url)
	e.run(t)
	owner := apppass.User{ContextID: 9, UserID: 1001, Login: "outage@example.org"}

	// The path works before the outage (and the stream exists).
	first, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "eas", AppName: "before the outage"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitDrained(t, deliveryBound)

	n.Stop()
	waitFor(t, "disconnected", opTimeout, func() bool { return !e.pub.Connected() })

	var added []*apppass.Created
	for i := range 20 {
		c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: fmt.Sprintf("device %d", i)})
		if err != nil {
			t.Fatalf("Add %d during the outage: %v", i, err)
		}
		added = append(added, c)
	}
	removed := map[string]bool{}
	for _, c := range added[:10] {
		if err := e.svc.Remove(ctx(t), owner, c.UUID, apppass.ReasonUser); err != nil {
			t.Fatalf("Remove during the outage: %v", err)
		}
		removed[c.UUID] = true
	}
	// Nothing can have been published: all 30 events wait.
	if got := e.pendingCount(t); got != 30 {
		t.Errorf("PendingCount during the outage = %d, want 30", got)
	}
	// The event ids, as the outbox holds them.
	outboxIDs := map[string]string{} // id -> type
	pend, err := e.store.Pending(ctx(t), 1000, e.relay.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		for _, ev := range p.Events {
			outboxIDs[ev.ID] = ev.Type
		}
	}
	if len(outboxIDs) != 30 {
		t.Errorf("the outbox holds %d distinct events, want 30", len(outboxIDs))
	}

	testenv.NATSAt(t, addr, dir)
	e.waitDrained(t, deliveryBound)

	all := readStream(t, url)
	seen := map[string]int{}
	type key struct{ uuid, typ string }
	seq := map[key]uint64{}
	count := map[key]int{}
	for _, r := range all {
		seen[r.Event.ID]++
		if r.MsgID != r.Event.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, payload id %q", r.Seq, r.MsgID, r.Event.ID)
		}
		k := key{r.Event.Data.UUID, r.Event.Type}
		count[k]++
		seq[k] = r.Seq
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s is in the stream %d times", id, n)
		}
	}
	for id, typ := range outboxIDs {
		if seen[id] == 0 {
			t.Errorf("%s event %s from the outbox never reached the stream", typ, id)
		}
	}
	if len(all) != 31 {
		t.Errorf("the stream holds %d messages, want 31 (1 before the outage, 20 created and 10 revoked during it)", len(all))
	}
	if count[key{first.UUID, apppass.EventCreated}] != 1 {
		t.Errorf("the created event from before the outage is in the stream %d times", count[key{first.UUID, apppass.EventCreated}])
	}
	for _, c := range added {
		ck, rk := key{c.UUID, apppass.EventCreated}, key{c.UUID, apppass.EventRevoked}
		if count[ck] != 1 {
			t.Errorf("%s: %d created events, want 1", c.UUID, count[ck])
		}
		wantRevoked := 0
		if removed[c.UUID] {
			wantRevoked = 1
		}
		if count[rk] != wantRevoked {
			t.Errorf("%s: %d revoked events, want %d", c.UUID, count[rk], wantRevoked)
		}
		if wantRevoked == 1 && count[ck] == 1 && seq[rk] < seq[ck] {
			t.Errorf("%s: revoked (seq %d) before created (seq %d)", c.UUID, seq[rk], seq[ck])
		}
	}
	for _, r := range all {
		for _, c := range added {
			checkNoSecret(t, r.Raw, c.Password)
		}
	}
}

func TestFlush(t *testing.T) {
	n := testenv.NATS(t)
	url := n.URL()
	e := newEnv(t, url) // relay not running: Notify only queues
	owner := apppass.User{ContextID: 1, UserID: 2, Login: "flush@example.org"}
	var added []*apppass.Created
	for i := range 3 {
		c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "drive", AppName: fmt.Sprintf("laptop %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, c)
	}
	if err := e.svc.Remove(ctx(t), owner, added[0].UUID, apppass.ReasonAdmin); err != nil {
		t.Fatal(err)
	}
	// With no relay running nothing goes out by itself.
	if got := e.pendingCount(t); got != 4 {
		t.Fatalf("PendingCount before Flush = %d, want 4", got)
	}

	fctx, cancel := context.WithTimeout(t.Context(), deliveryBound)
	defer cancel()
	if err := e.relay.Flush(fctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := e.pendingCount(t); got != 0 {
		t.Errorf("PendingCount after Flush = %d, want 0", got)
	}
	all := readStream(t, url)
	var got []string
	for _, r := range all {
		got = append(got, r.Event.Type+" "+r.Event.Data.UUID)
	}
	if len(all) != 4 {
		t.Fatalf("the stream holds %v, want 3 created and 1 revoked", got)
	}
	for _, c := range added {
		if !slices.Contains(got, apppass.EventCreated+" "+c.UUID) {
			t.Errorf("no created event for %s in %v", c.UUID, got)
		}
	}
	ci := slices.Index(got, apppass.EventCreated+" "+added[0].UUID)
	ri := slices.Index(got, apppass.EventRevoked+" "+added[0].UUID)
	if ri < 0 || ri < ci {
		t.Errorf("stream %v: want the revoked event of %s after its created event", got, added[0].UUID)
	}
	if all[ri].Event.Data.Reason != apppass.ReasonAdmin {
		t.Errorf("revoked reason %q, want %q", all[ri].Event.Data.Reason, apppass.ReasonAdmin)
	}

	// NATS down: Flush fails instead of waiting forever, and keeps the event.
	if _, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "drive", AppName: "after the outage"}); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	waitFor(t, "disconnected", opTimeout, func() bool { return !e.pub.Connected() })
	fctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.relay.Flush(fctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Flush with NATS stopped returned nil")
		}
	case <-time.After(opTimeout):
		t.Fatalf("Flush with NATS stopped still running %s after its 5 s deadline", opTimeout)
	}
	if got := e.pendingCount(t); got != 1 {
		t.Errorf("PendingCount after a failed Flush = %d, want 1", got)
	}
}

// TestRelayRecreatesLostStream: when the stream disappears under a running
// relay (NATS came back without its data, or an operator deleted it), the
// relay creates it again instead of retrying into nothing forever.
func TestRelayRecreatesLostStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, n *natsserver.Server, addr string) string // returns the new URL
	}{
		{"NATSRestartedEmpty", func(t *testing.T, n *natsserver.Server, addr string) string {
			n.Stop()
			return testenv.NATSAt(t, addr, t.TempDir()).URL()
		}},
		{"StreamDeleted", func(t *testing.T, n *natsserver.Server, _ string) string {
			nc, err := natsgo.Connect(n.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if err := js.DeleteStream(ctx(t), events.StreamName); err != nil {
				t.Fatalf("deleting the stream: %v", err)
			}
			return n.URL()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			n := testenv.NATSAt(t, addr, t.TempDir())
			e := newEnv(t, n.URL())
			e.run(t)
			owner := apppass.User{ContextID: 5, UserID: 6, Login: "lost@example.org"}
			if _, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "before"}); err != nil {
				t.Fatal(err)
			}
			e.waitDrained(t, deliveryBound)

			url := tc.lose(t, n, addr)
			after, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "after"})
			if err != nil {
				t.Fatal(err)
			}
			e.waitDrained(t, deliveryBound)
			all := readStream(t, url)
			if len(all) != 1 || all[0].Event.Data.UUID != after.UUID || all[0].Event.Type != apppass.EventCreated {
				var got []string
				for _, r := range all {
					got = append(got, r.Event.Type+" "+r.Event.Data.UUID)
				}
				t.Errorf("the new stream holds %v, want only the created event of %s", got, after.UUID)
			}
		})
	}
}

// relayFanout hands every event to several relays at once, as if each had
// written it: the harshest contention two replicas can produce.
type relayFanout []*nats.Relay

// Claim takes no lease with the write: the relays race for every claim.
func (f relayFanout) Claim() *apppass.Claim { return nil }

func (f relayFanout) Notify(p apppass.PendingEvents) {
	for _, r := range f {
		r.Notify(p)
	}
}

func (f relayFanout) Deliver(ctx context.Context, p apppass.PendingEvents) error {
	errs := make(chan error, len(f))
	for _, r := range f {
		go func() { errs <- r.Deliver(ctx, p) }()
	}
	var first error
	for range f {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// startTestRelay runs a relay over outbox, publishing through its own
// connection, until the end of the test.
func startTestRelay(t *testing.T, outbox apppass.Outbox, natsURL string) *nats.Relay {
	t.Helper()
	pub, err := nats.Connect(natsURL, "test-relay")
	if err != nil {
		t.Fatal(err)
	}
	r := nats.NewRelay(outbox, pub, testenv.Quiet())
	r.SweepInterval = 50 * time.Millisecond
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(c)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		pub.Close()
	})
	return r
}

// relayBurst adds perOwner passwords for each of owners users and removes
// every one whose index is not a multiple of 3, from one goroutine per
// user, so adds and removes of different users interleave. It returns the
// UUIDs added and those removed.
func relayBurst(t *testing.T, svc *apppass.Service, owners, perOwner int) (added []string, removed map[string]bool) {
	t.Helper()
	var mu sync.Mutex
	removed = map[string]bool{}
	var wg sync.WaitGroup
	for o := range owners {
		wg.Go(func() {
			owner := apppass.User{ContextID: 77, UserID: int64(1000 + o), Login: fmt.Sprintf("burst%d@example.org", o)}
			var mine []string
			for i := range perOwner {
				c, err := svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: fmt.Sprintf("device %d", i)})
				if err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				mine = append(mine, c.UUID)
				// Remove an earlier one while later ones are being added.
				if i >= 2 && (i-2)%3 != 0 {
					if err := svc.Remove(ctx(t), owner, mine[i-2], apppass.ReasonUser); err != nil {
						t.Errorf("Remove: %v", err)
						return
					}
					mu.Lock()
					removed[mine[i-2]] = true
					mu.Unlock()
				}
			}
			mu.Lock()
			added = append(added, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return added, removed
}

// checkStreamExactlyOnce checks the whole stream against a burst: every created
// and every revoked event once, nothing else, created before revoked. It
// returns the number of messages.
func checkStreamExactlyOnce(t *testing.T, natsURL string, added []string, removed map[string]bool) int {
	t.Helper()
	all := readStream(t, natsURL)
	ids := map[string]int{}
	type key struct{ uuid, typ string }
	seq := map[key]uint64{}
	count := map[key]int{}
	for _, r := range all {
		ids[r.Event.ID]++
		if r.MsgID != r.Event.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, payload id %q", r.Seq, r.MsgID, r.Event.ID)
		}
		k := key{r.Event.Data.UUID, r.Event.Type}
		count[k]++
		seq[k] = r.Seq
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s is in the stream %d times", id, n)
		}
	}
	want := len(added) + len(removed)
	if len(all) != want {
		t.Errorf("the stream holds %d messages, want %d (%d created, %d revoked)", len(all), want, len(added), len(removed))
	}
	for _, uuid := range added {
		ck, rk := key{uuid, apppass.EventCreated}, key{uuid, apppass.EventRevoked}
		if count[ck] != 1 {
			t.Errorf("%s: %d created events, want 1", uuid, count[ck])
		}
		wantRevoked := 0
		if removed[uuid] {
			wantRevoked = 1
		}
		if count[rk] != wantRevoked {
			t.Errorf("%s: %d revoked events, want %d", uuid, count[rk], wantRevoked)
		}
		if wantRevoked == 1 && seq[rk] < seq[ck] {
			t.Errorf("%s: revoked (seq %d) before created (seq %d)", uuid, seq[rk], seq[ck])
		}
	}
	return len(all)
}

// TestTwoRelaysPublishEachEventOnce runs two relays on one store and one
// NATS, both told of every event of a concurrent burst of adds and removes
// and both sweeping: the claims must let exactly one of them publish each
// event, in order, and lose none.
func TestTwoRelaysPublishEachEventOnce(t *testing.T) {
	n := testenv.NATS(t)
	e := newEnv(t, n.URL()) // e.relay is unused: the service talks to a and b
	if err := e.pub.EnsureStream(ctx(t)); err != nil {
		t.Fatal(err)
	}
	a, b := startTestRelay(t, e.store, n.URL()), startTestRelay(t, e.store, n.URL())
	e.svc.Events = relayFanout{a, b}

	start := time.Now()
	added, removed := relayBurst(t, e.svc, 6, 20)
	burstTime := time.Since(start)
	e.waitDrained(t, deliveryBound)
	total := checkStreamExactlyOnce(t, n.URL(), added, removed)

	// No lost outbox entries: the store agrees with the stream.
	if got := pendingOf(t, e.store); len(got) != 0 {
		t.Errorf("Pending after draining: %d passwords", len(got))
	}
	active := 0
	for o := range 6 {
		ps, err := e.store.List(ctx(t), apppass.User{ContextID: 77, UserID: int64(1000 + o)})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if removed[p.UUID] {
				t.Errorf("removed password %s is still listed", p.UUID)
			}
		}
		active += len(ps)
	}
	if active != len(added)-len(removed) {
		t.Errorf("%d passwords listed, want %d", active, len(added)-len(removed))
	}

	sa, sb := a.Stats(), b.Stats()
	t.Logf("%d events (%d adds, %d removes) in %s; relay a published %d, b %d; claim conflicts a %d, b %d",
		total, len(added), len(removed), burstTime.Round(time.Millisecond), sa.Published, sb.Published, sa.Conflicts, sb.Conflicts)
	// With claims no event went out twice, not even as a repeat JetStream
	// would have dropped.
	if got := sa.Published + sb.Published; got != uint64(total) {
		t.Errorf("the relays published %d times for %d events: claims let some go out twice", got, total)
	}
}

func pendingOf(t *testing.T, o apppass.Outbox) []apppass.PendingEvents {
	t.Helper()
	got, err := o.Pending(ctx(t), 10000, "")
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestTwoDaemonsDrainOneOutbox: two relays, each with its own store on
// one database (as two apppassd processes have), drain a backlog left by
// a NATS outage at the same time. Claims are atomic across the two, so
// every event is published exactly once, and the outbox ends empty.
// (On MongoDB too, when APPPASS_TEST_MONGODB_URI names one.)
func TestTwoDaemonsDrainOneOutbox(t *testing.T) {
	n := testenv.NATS(t)
	path := filepath.Join(t.TempDir(), "apppass.db")
	open := func() apppass.Store { return testenv.StoreAt(t, path) }
	if uri := os.Getenv("APPPASS_TEST_MONGODB_URI"); uri != "" {
		db := testenv.NewDatabaseName()
		open = func() apppass.Store { return testenv.MongoStoreAt(t, uri, db) }
	}
	storeA, storeB := open(), open()
	e := newEnv(t, n.URL())
	e.store, e.svc.Store = storeA, storeA
	e.svc.Events = nil // the backlog: nothing published while it builds
	if err := e.pub.EnsureStream(ctx(t)); err != nil {
		t.Fatal(err)
	}
	added, removed := relayBurst(t, e.svc, 4, 15)
	if got := e.pendingCount(t); got != int64(len(added)+len(removed)) {
		t.Fatalf("PendingCount = %d, want %d", got, len(added)+len(removed))
	}

	start := time.Now()
	a, b := startTestRelay(t, storeA, n.URL()), startTestRelay(t, storeB, n.URL())
	e.waitDrained(t, deliveryBound)
	drain := time.Since(start)
	total := checkStreamExactlyOnce(t, n.URL(), added, removed)
	sa, sb := a.Stats(), b.Stats()
	t.Logf("%d events drained by two daemons in %s; a published %d, b %d (%d repeats dropped by JetStream); conflicts a %d, b %d",
		total, drain.Round(time.Millisecond), sa.Published, sb.Published, sa.Published+sb.Published-uint64(total), sa.Conflicts, sb.Conflicts)
	if sa.Published+sb.Published != uint64(total) {
		t.Errorf("the relays published %d times for %d events: claims let some go out twice", sa.Published+sb.Published, total)
	}
	if n := e.pendingCount(t); n != 0 {
		t.Errorf("PendingCount = %d after the drain, want exactly 0", n)
	}
}

// TestRelayTakesOverADeadRelaysClaim: events claimed by a relay that died
// stay put while its lease runs, then another relay publishes them.
func TestRelayTakesOverADeadRelaysClaim(t *testing.T) {
	n := testenv.NATS(t)
	e := newEnv(t, n.URL())
	e.svc.Events = nil
	owner := apppass.User{ContextID: 3, UserID: 4, Login: "heir@example.org"}
	c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(ctx(t), owner, c.UUID, apppass.ReasonUser); err != nil {
		t.Fatal(err)
	}
	// A relay claims both events and dies before publishing.
	const lease = 1500 * time.Millisecond
	if evs, err := e.store.ClaimPending(ctx(t), c.UUID, "dead-relay", lease); err != nil || len(evs) != 2 {
		t.Fatalf("ClaimPending = %d events, %v", len(evs), err)
	}
	claimed := time.Now()
	if err := e.pub.EnsureStream(ctx(t)); err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, n.URL())
	e.run(t)
	// Deliver (a remove's fast path) does not publish under the claim; it
	// waits, then gives up with its context.
	dctx, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel()
	if err := e.relay.Deliver(dctx, apppass.PendingEvents{PasswordUUID: c.UUID}); err == nil {
		t.Errorf("Deliver under another relay's running claim returned nil")
	}

	created, revoked := next(t, msgs), next(t, msgs)
	took := time.Since(claimed)
	if took < lease-100*time.Millisecond {
		t.Errorf("published %s after the claim, before its %s lease ran out", took, lease)
	}
	if created.Event.Type != apppass.EventCreated || revoked.Event.Type != apppass.EventRevoked || created.Event.Data.UUID != c.UUID {
		t.Fatalf("stream: %s %s, want created then revoked of %s", created.Event.Type, revoked.Event.Type, c.UUID)
	}
	t.Logf("taken over %s after the claim (lease %s)", took.Round(time.Millisecond), lease)
	e.waitDrained(t, deliveryBound)
	if st := e.relay.Stats(); st.Published != 2 || st.Conflicts == 0 {
		t.Errorf("relay stats %+v: want 2 published after at least one conflict", st)
	}
}

// sweepCounter is the real store, counting the relay's sweeps (Pending).
type sweepCounter struct {
	apppass.Outbox
	sweeps atomic.Int64
}

func (c *sweepCounter) Pending(ctx context.Context, limit int, mine string) ([]apppass.PendingEvents, error) {
	c.sweeps.Add(1)
	return c.Outbox.Pending(ctx, limit, mine)
}

// TestRelaySweepsEveryInterval: an idle relay keeps sweeping every
// interval (an index lookup), so an event another process left behind is
// published within about one interval.
func TestRelaySweepsEveryInterval(t *testing.T) {
	n := testenv.NATS(t)
	e := newEnv(t, n.URL()) // its own relay never runs: its events are leftovers
	e.svc.Events = nil      // (nor does it lease them with the write)
	counter := &sweepCounter{Outbox: e.store}
	relay := startTestRelay(t, counter, n.URL()) // sweep interval 50 ms
	time.Sleep(time.Second)
	if got := counter.sweeps.Load(); got < 5 {
		t.Fatalf("%d sweeps of an empty outbox in 20 sweep intervals; want one every interval", got)
	}
	owner := apppass.User{ContextID: 1, UserID: 9, Login: "leftover@example.org"}
	c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "left behind"})
	if err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	waitFor(t, "the leftover event published by the idle relay", deliveryBound, func() bool { return e.pendingCount(t) == 0 })
	t.Logf("a leftover was published %s after it was written (sweep interval %s)", time.Since(added).Round(time.Millisecond), relay.SweepInterval)
	var got []string
	for _, r := range readStream(t, n.URL()) {
		got = append(got, r.Event.Type+" "+r.Event.Data.UUID)
	}
	if !slices.Equal(got, []string{apppass.EventCreated + " " + c.UUID}) {
		t.Fatalf("stream %v, want the created event of %s", got, c.UUID)
	}
}

// TestRelayRepublishesKeptEventsAfterACrash: with KeepPublished set, an
// acked event stays in the outbox, marked published and not pending, for
// that long (a revoked password with it); a relay starting on the outbox
// publishes the ones still kept again, so a server that lost them in a
// crash (here: one started on an empty store) gets them back; and once
// KeepPublished has passed they are purged and the revoked password
// forgotten. DropPublished purges them at once.
func TestRelayRepublishesKeptEventsAfterACrash(t *testing.T) {
	addr := freeAddr(t)
	n := testenv.NATSAt(t, addr, t.TempDir())
	e := newEnv(t, n.URL())
	// Long enough that the checks of "still kept" cannot be late.
	const keep = 5 * time.Second
	e.relay.KeepPublished = keep
	stopRelay := runRelay(t, e.relay)

	owner := apppass.User{ContextID: 5, UserID: 55, Login: "crash@example.org"}
	c, err := e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(ctx(t), owner, c.UUID, apppass.ReasonUser); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(t, deliveryBound)
	kept := func() bool {
		n, err := e.store.CountPasswords(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	if !kept() {
		t.Fatal("the revoked password was forgotten at once; want it kept with its published events")
	}
	if got := len(readStream(t, n.URL())); got != 2 {
		t.Fatalf("the stream holds %d messages, want 2", got)
	}

	// The crash: the relay stops without DropPublished, and NATS comes
	// back without what it had not synced (here: anything).
	stopRelay()
	n.Stop()
	n = testenv.NATSAt(t, addr, t.TempDir())
	pub, err := nats.Connect(n.URL(), "after-the-crash")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	restarted := func() *nats.Relay {
		r := nats.NewRelay(e.store, pub, testenv.Quiet())
		r.SweepInterval = 100 * time.Millisecond
		r.KeepPublished = keep
		return r
	}
	stopAgain := runRelay(t, restarted())

	waitFor(t, "created and revoked in the new stream", deliveryBound, func() bool {
		nc, err := natsgo.Connect(n.URL())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		s, err := js.Stream(ctx(t), events.StreamName)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx(t))
		return err == nil && info.State.Msgs == 2
	})
	all := readStream(t, n.URL())
	if len(all) != 2 || all[0].Event.Type != apppass.EventCreated || all[1].Event.Type != apppass.EventRevoked {
		t.Fatalf("the new stream holds %d messages, want created, then revoked", len(all))
	}
	// A restart on a server that kept them publishes them again too; it
	// drops the repeats.
	stopAgain()
	third := restarted()
	stopThird := runRelay(t, third)
	waitFor(t, "the revoked password forgotten after KeepPublished", deliveryBound, func() bool { return !kept() })
	if got := third.Stats().Published; got != 2 {
		t.Errorf("the second restart published %d events again, want the 2 kept", got)
	}
	if got := len(readStream(t, n.URL())); got != 2 {
		t.Fatalf("after the second restart the stream holds %d messages, want 2", got)
	}

	// DropPublished: kept events go at once.
	e.svc.Events = third
	c, err = e.svc.Add(ctx(t), owner, apppass.AddRequest{AppScope: "mail", AppName: "tablet"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(ctx(t), owner, c.UUID, apppass.ReasonUser); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(t, deliveryBound)
	stopThird()
	if !kept() {
		t.Fatal("the second revoked password was forgotten before KeepPublished")
	}
	third.DropPublished(ctx(t))
	if kept() {
		t.Fatal("DropPublished left the revoked password")
	}
}

// runRelay runs r until the returned stop is called (or the test ends)
// and waits for it to stop.
func runRelay(t *testing.T, r *nats.Relay) (stop func()) {
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(c) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}
