package main_test

// Fault tests: the real apppassd binary driven from outside while the
// services it depends on fail. NATS and (for the MongoDB test) FerretDB run
// in this test process, so the test can stop them and start them again on
// the same address and data directory; the embedded store's disk is filled
// up; apppassd itself is killed with SIGKILL in one test. Each test reports
// what it measured with t.Log.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/storage/ferretdb"
)

const faultTokenKey = "fault-test-user-token-key-0123456789"

var (
	noRaceOnce   sync.Once
	noRaceBinary string
	noRaceErr    error
)

// bulkBinary is the apppassd binary for the fault tests that make hundreds
// of passwords: the race-built one normally, but one built without -race
// when the tests run with it. SQLite is Go code translated from C, many
// times slower under the race detector (with the other packages' tests on
// the same two cores); these tests are about crashes and outages, not data
// races, which the other tests of the race-built daemon and the in-process
// suites cover.
func bulkBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return binary
	}
	noRaceOnce.Do(func() {
		noRaceBinary = filepath.Join(filepath.Dir(binary), "apppassd-norace")
		if out, err := exec.Command("go", "build", "-o", noRaceBinary, ".").CombinedOutput(); err != nil {
			noRaceErr = fmt.Errorf("building apppassd without -race: %v\n%s", err, out)
		}
	})
	if noRaceErr != nil {
		t.Fatal(noRaceErr)
	}
	return noRaceBinary
}

// startBinary is start with another apppassd binary.
func startBinary(t *testing.T, bin string, env ...string) *daemon {
	t.Helper()
	return &daemon{gatewaytest.StartBinary(t, bin, env...)}
}

// faultUsers mints tokens for n users of context 1 (ids 100, 101, ...).
func faultUsers(n int) []string {
	tokens, err := apppass.NewUserTokens([]byte(faultTokenKey))
	if err != nil {
		panic(err)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = tokens.Mint(apppass.User{ContextID: 1, UserID: int64(100 + i), Login: fmt.Sprintf("fault%d@example.org", i)}, 2*time.Hour, time.Now())
	}
	return out
}

var faultClient = &http.Client{Timeout: 60 * time.Second}

// faultCall makes one JSON-RPC call; unlike daemon.call it may run on any
// goroutine and returns transport errors (a killed daemon) instead of
// failing the test.
func faultCall(base, bearer, method string, params any) (*rpcReply, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, err := http.NewRequest("POST", base+"/rpc", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := faultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r rpcReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("HTTP %d %q: %w", resp.StatusCode, raw, err)
	}
	return &r, nil
}

// inParallel runs fn(i) for i in [0, n) on workers goroutines.
func inParallel(workers, n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

// faultPassword is one password added by a fault test.
type faultPassword struct {
	user     int // index into the tokens
	uuid     string
	name     string
	password string
}

// addMany adds perUser passwords for each user, concurrently; every add
// must succeed.
func addMany(t *testing.T, d *daemon, tokens []string, perUser int) []faultPassword {
	t.Helper()
	out := make([]faultPassword, len(tokens)*perUser)
	var failed atomic.Int64
	inParallel(8, len(out), func(i int) {
		u := i % len(tokens)
		name := fmt.Sprintf("device %d", i)
		r, err := faultCall(d.URL, tokens[u], "appPasswords.add", map[string]any{"appScope": "mail", "appName": name})
		var a added
		if err == nil && r.Error == nil {
			err = json.Unmarshal(r.Result, &a)
		} else if err == nil {
			err = fmt.Errorf("error %d %s", r.Error.Code, r.Error.Message)
		}
		if err != nil {
			if failed.Add(1) <= 5 {
				t.Errorf("add %d: %v", i, err)
			}
			return
		}
		out[i] = faultPassword{user: u, uuid: a.UUID, name: name, password: a.Password}
	})
	if failed.Load() > 0 {
		t.Fatalf("%d adds failed", failed.Load())
	}
	return out
}

// readyz returns the status code and body of /readyz.
func readyz(base string) (int, map[string]any, error) {
	resp, err := faultClient.Get(base + "/readyz")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	err = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, err
}

// waitReadyz polls /readyz until cond holds, and returns how long it took.
func waitReadyz(t *testing.T, d *daemon, what string, within time.Duration, cond func(code int, body map[string]any) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var code int
	var body map[string]any
	for {
		var err error
		code, body, err = readyz(d.URL)
		if err == nil && cond(code, body) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("/readyz not %s within %s: last answer %d %v", what, within, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pendingIs(n float64) func(int, map[string]any) bool {
	return func(code int, body map[string]any) bool {
		got, ok := body["pendingEvents"].(float64)
		return code == http.StatusOK && ok && got == n
	}
}

// streamMsg is one message of the APPPASSWORDS stream.
type streamMsg struct {
	seq   uint64
	msgID string
	ev    faultEvent
}

type faultEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data struct {
		UUID   string `json:"uuid"`
		Name   string `json:"name"`
		Reason string `json:"reason"`
	} `json:"data"`
}

func jetStream(t *testing.T, natsURL string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamCount is how many messages the stream holds (0 if it is missing).
func streamCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "APPPASSWORDS")
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func waitStreamCount(t *testing.T, js jetstream.JetStream, want uint64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		n := streamCount(t, js)
		if n >= want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("the stream holds %d messages after %s, want %d", n, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readWholeStream reads every message of the stream with a JetStream
// consumer, in stream order.
func readWholeStream(t *testing.T, js jetstream.JetStream) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "APPPASSWORDS")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []streamMsg
	for len(out) < want {
		if ctx.Err() != nil {
			t.Fatalf("read %d of the stream's %d messages", len(out), want)
		}
		batch, err := cons.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetching from the stream: %v", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			var e faultEvent
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				t.Fatalf("message %d: %v", md.Sequence.Stream, err)
			}
			out = append(out, streamMsg{seq: md.Sequence.Stream, msgID: m.Headers().Get(jetstream.MsgIDHeader), ev: e})
		}
		if err := batch.Error(); err != nil && err != nats.ErrTimeout {
			t.Fatalf("fetching from the stream: %v", err)
		}
	}
	return out
}

// streamIndex checks the invariants every stream must keep (each event
// once, its Nats-Msg-Id its id, created before revoked) and indexes it by
// password: uuid -> type -> how many.
func streamIndex(t *testing.T, msgs []streamMsg) map[string]map[string]int {
	t.Helper()
	ids := map[string]bool{}
	byUUID := map[string]map[string]int{}
	createdSeq := map[string]uint64{}
	dups := 0
	for _, m := range msgs {
		if m.msgID != m.ev.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, id %q", m.seq, m.msgID, m.ev.ID)
		}
		if ids[m.ev.ID] {
			if dups++; dups <= 5 {
				t.Errorf("event %s (%s of %s) is in the stream twice", m.ev.ID, m.ev.Type, m.ev.Data.UUID)
			}
		}
		ids[m.ev.ID] = true
		if byUUID[m.ev.Data.UUID] == nil {
			byUUID[m.ev.Data.UUID] = map[string]int{}
		}
		byUUID[m.ev.Data.UUID][m.ev.Type]++
		switch m.ev.Type {
		case apppass.EventCreated:
			createdSeq[m.ev.Data.UUID] = m.seq
		case apppass.EventRevoked:
			if c, ok := createdSeq[m.ev.Data.UUID]; !ok || c > m.seq {
				t.Errorf("revoked event of %s (seq %d) before its created event", m.ev.Data.UUID, m.seq)
			}
		}
	}
	if dups > 0 {
		t.Errorf("%d duplicate ids in the stream", dups)
	}
	return byUUID
}

// TestFaultNATSOutageDuringThousandRemoves: NATS stops, 1,000 passwords
// are removed (every remove succeeds, fast), NATS comes back 30 s after it
// stopped, and every one of the 1,000 revoked events reaches the stream,
// each once.
func TestFaultNATSOutageDuringThousandRemoves(t *testing.T) {
	natsAddr, natsDir := freeAddr(t), t.TempDir()
	ns := testenv.NATSAt(t, natsAddr, natsDir)
	natsURL := "nats://" + natsAddr
	d := startBinary(t, bulkBinary(t), "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_NATS_URL="+natsURL, "APPPASS_USER_TOKEN_KEY="+faultTokenKey)
	js := jetStream(t, natsURL)
	tokens := faultUsers(20) // 50 each: the default limit per user

	start := time.Now()
	pws := addMany(t, d, tokens, 50)
	addTime := time.Since(start)
	waitStreamCount(t, js, 1000, 2*time.Minute)
	waitReadyz(t, d, "ready with an empty outbox", time.Minute, pendingIs(0))

	ns.Stop()
	stopped := time.Now()
	var (
		mu       sync.Mutex
		slowest  time.Duration
		failures []string
	)
	inParallel(8, len(pws), func(i int) {
		p := pws[i]
		t0 := time.Now()
		r, err := faultCall(d.URL, tokens[p.user], "appPasswords.remove", map[string]any{"uuid": p.uuid})
		took := time.Since(t0)
		mu.Lock()
		defer mu.Unlock()
		slowest = max(slowest, took)
		switch {
		case err != nil:
			failures = append(failures, err.Error())
		case r.Error != nil:
			failures = append(failures, fmt.Sprintf("%d %s", r.Error.Code, r.Error.Message))
		}
	})
	removeTime := time.Since(stopped)
	if len(failures) > 0 {
		t.Fatalf("%d of 1000 removes failed while NATS was down, e.g. %s", len(failures), failures[0])
	}
	// (The backlog /readyz shows is counted once a second.)
	waitReadyz(t, d, "503 with pendingEvents 1000", 10*time.Second, func(code int, body map[string]any) bool {
		return code == http.StatusServiceUnavailable && body["pendingEvents"] == float64(1000)
	})

	time.Sleep(time.Until(stopped.Add(30 * time.Second)))
	testenv.NATSAt(t, natsAddr, natsDir)
	restarted := time.Now()
	drain := waitReadyz(t, d, "ready with an empty outbox", 2*time.Minute, pendingIs(0))
	inStream := waitStreamCount(t, js, 2000, time.Minute)

	msgs := readWholeStream(t, js)
	byUUID := streamIndex(t, msgs)
	if len(msgs) != 2000 {
		t.Errorf("the stream holds %d messages, want 2000 (1000 created, 1000 revoked)", len(msgs))
	}
	missing := 0
	for _, p := range pws {
		if n := byUUID[p.uuid][apppass.EventRevoked]; n != 1 {
			if missing++; missing <= 5 {
				t.Errorf("%s: %d revoked events in the stream, want 1", p.uuid, n)
			}
		}
		if n := byUUID[p.uuid][apppass.EventCreated]; n != 1 {
			t.Errorf("%s: %d created events in the stream, want 1", p.uuid, n)
		}
	}
	if missing > 0 {
		t.Errorf("%d of 1000 revoked events missing or repeated", missing)
	}
	if !strings.Contains(d.Stderr.String(), "events wait in the outbox") {
		t.Errorf("no log line counting the waiting events during the outage")
	}
	t.Logf("1000 adds in %s; 1000 removes with NATS down in %s (slowest %s); NATS back after %s; outbox drained %s after the restart (stream complete after %s more)",
		addTime.Round(time.Millisecond), removeTime.Round(time.Millisecond), slowest.Round(time.Millisecond),
		restarted.Sub(stopped).Round(time.Millisecond), drain.Round(time.Millisecond), inStream.Round(time.Millisecond))
}

// TestFaultKillDuringRemoveBurst: apppassd is killed with SIGKILL while
// removes run from several goroutines; after a restart every remove that
// returned OK has its revoked event in the stream, and every other
// password is either still active or revoked with its event, never half.
func TestFaultKillDuringRemoveBurst(t *testing.T) {
	ns := testenv.NATS(t)
	js := jetStream(t, ns.URL())
	env := []string{"APPPASS_DATA_DIR=" + t.TempDir(), "APPPASS_NATS_URL=" + ns.URL(), "APPPASS_USER_TOKEN_KEY=" + faultTokenKey}
	d := startBinary(t, bulkBinary(t), env...)
	tokens := faultUsers(8)
	pws := addMany(t, d, tokens, 25)
	waitStreamCount(t, js, uint64(len(pws)), time.Minute)

	const killAfter = 60
	order := rand.Perm(len(pws))
	var (
		mu      sync.Mutex
		ok      = map[string]bool{}
		refused = map[string]string{} // an answer other than OK
		lost    = map[string]bool{}   // no answer: the daemon died
		killed  atomic.Bool
		next    atomic.Int64
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !killed.Load() {
				i := int(next.Add(1)) - 1
				if i >= len(order) {
					return
				}
				p := pws[order[i]]
				r, err := faultCall(d.URL, tokens[p.user], "appPasswords.remove", map[string]any{"uuid": p.uuid})
				mu.Lock()
				switch {
				case err != nil:
					lost[p.uuid] = true
				case r.Error != nil:
					refused[p.uuid] = fmt.Sprintf("%d %s", r.Error.Code, r.Error.Message)
				default:
					ok[p.uuid] = true
				}
				n := len(ok)
				mu.Unlock()
				if n >= killAfter && killed.CompareAndSwap(false, true) {
					d.Kill() // SIGKILL, with removes of other goroutines in flight
				}
			}
		})
	}
	wg.Wait()
	if !killed.Load() {
		t.Fatalf("the burst ended before %d removes returned OK", killAfter)
	}
	for uuid, msg := range refused {
		t.Errorf("remove of %s refused before the kill: %s", uuid, msg)
	}
	okAtKill := len(ok)

	restartBegan := time.Now()
	d2 := startBinary(t, bulkBinary(t), env...)
	ready := time.Since(restartBegan)
	drain := waitReadyz(t, d2, "ready with an empty outbox", 2*time.Minute, pendingIs(0))

	// Which passwords are still active, as the restarted daemon lists them.
	active := map[string]bool{}
	for _, tok := range tokens {
		var list []struct{ UUID string }
		d2.call(t, tok, "appPasswords.list", nil, &list)
		for _, l := range list {
			active[l.UUID] = true
		}
	}
	byUUID := streamIndex(t, readWholeStream(t, js))
	lostRevoked := 0
	for _, p := range pws {
		created, revoked := byUUID[p.uuid][apppass.EventCreated], byUUID[p.uuid][apppass.EventRevoked]
		if created != 1 {
			t.Errorf("%s: %d created events, want 1", p.uuid, created)
		}
		switch {
		case ok[p.uuid]:
			if revoked != 1 || active[p.uuid] {
				t.Errorf("remove of %s returned OK, but it has %d revoked events and active=%v", p.uuid, revoked, active[p.uuid])
			}
		case active[p.uuid]:
			if revoked != 0 {
				t.Errorf("%s is active but has %d revoked events", p.uuid, revoked)
			}
		default: // revoked by a remove that died with the daemon
			if !lost[p.uuid] {
				t.Errorf("%s is gone, but its remove was never sent", p.uuid)
			}
			if revoked != 1 {
				t.Errorf("%s is revoked but has %d revoked events", p.uuid, revoked)
			}
			lostRevoked++
		}
	}
	t.Logf("SIGKILL after %d removes returned OK; %d in flight (%d of them had stored the revocation, %d not); restarted apppassd ready in %s, outbox drained %s later (a dead daemon's claims last 10 s)",
		okAtKill, len(lost), lostRevoked, len(lost)-lostRevoked, ready.Round(time.Millisecond), drain.Round(time.Millisecond))
}

// startFerretAt runs FerretDB in this process on addr with its files in
// dir; stop it and start it again with the same addr and dir to make
// MongoDB unreachable for a while.
func startFerretAt(t *testing.T, addr, dir string) (stop func()) {
	t.Helper()
	f, err := ferretdb.StartAt(addr, dir, testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(f.Stop) }
	t.Cleanup(stop)
	return stop
}

// TestFaultMongoDBUnreachable: with MongoDB gone, calls answer -32050
// quickly and /readyz turns 503; nothing is half-written; when MongoDB is
// back on the same address, apppassd recovers without a restart.
func TestFaultMongoDBUnreachable(t *testing.T) {
	mongoAddr, mongoDir := freeAddr(t), t.TempDir()
	stopMongo := startFerretAt(t, mongoAddr, mongoDir)
	ns := testenv.NATS(t)
	js := jetStream(t, ns.URL())
	gateway := "fault-gateway-key-0123456789"
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_MONGODB_URI=mongodb://"+mongoAddr+"/",
		"APPPASS_NATS_URL="+ns.URL(), "APPPASS_PEPPER="+strings.Repeat("p", 32), "APPPASS_USER_TOKEN_KEY="+faultTokenKey,
		"APPPASS_SERVICE_KEYS=gw:gateway:"+gateway)
	token := faultUsers(1)[0]
	login := "fault0@example.org"
	add := func(name string) (*rpcReply, error) {
		return faultCall(d.URL, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": name})
	}

	// Before: five passwords, their created events out.
	var before []added
	for i := range 5 {
		var a added
		d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": fmt.Sprintf("up %d", i)}, &a)
		before = append(before, a)
	}
	waitStreamCount(t, js, 5, time.Minute)

	stopMongo()
	stopped := time.Now()
	type outcome struct {
		what string
		took time.Duration
		code int
	}
	var outcomes []outcome
	try := func(what string, call func() (*rpcReply, error)) {
		t0 := time.Now()
		r, err := call()
		o := outcome{what: what, took: time.Since(t0)}
		switch {
		case err != nil:
			t.Errorf("%s with MongoDB down: %v", what, err)
		case r.Error == nil:
			t.Errorf("%s with MongoDB down succeeded: %s", what, r.Result)
		default:
			o.code = r.Error.Code
		}
		outcomes = append(outcomes, o)
	}
	try("add", func() (*rpcReply, error) { return add("down") })
	try("list", func() (*rpcReply, error) { return faultCall(d.URL, token, "appPasswords.list", nil) })
	try("remove", func() (*rpcReply, error) {
		return faultCall(d.URL, token, "appPasswords.remove", map[string]any{"uuid": before[1].UUID})
	})
	// Never authenticated, so not in the authenticate cache: it needs the store.
	try("authenticate", func() (*rpcReply, error) {
		return faultCall(d.URL, gateway, "appPasswords.authenticate", authParams(login, before[2].Password, "imap", "192.0.2.1"))
	})
	// Calls at once fail at once, each on its own clock: they do not queue.
	var mu sync.Mutex
	t0 := time.Now()
	inParallel(8, 8, func(i int) {
		r, err := add(fmt.Sprintf("down %d", i))
		o := outcome{what: fmt.Sprintf("add %d of 8 at once", i), took: time.Since(t0)}
		if err == nil && r.Error != nil {
			o.code = r.Error.Code
		}
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	})
	var slowest time.Duration
	var report []string
	for _, o := range outcomes {
		if o.code != -32050 {
			t.Errorf("%s with MongoDB down: code %d, want -32050", o.what, o.code)
		}
		if o.took > 15*time.Second {
			t.Errorf("%s with MongoDB down took %s", o.what, o.took)
		}
		slowest = max(slowest, o.took)
		report = append(report, fmt.Sprintf("%s %s", o.what, o.took.Round(time.Millisecond)))
	}
	unreadyAfter := waitReadyz(t, d, "503", 15*time.Second, func(code int, body map[string]any) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(fmt.Sprint(body["reason"]), "MongoDB")
	})
	downFor := time.Since(stopped)

	// Back on the same address and files; apppassd is not restarted.
	startFerretAt(t, mongoAddr, mongoDir)
	restarted := time.Now()
	var recovered time.Duration
	for {
		r, err := faultCall(d.URL, token, "appPasswords.list", nil)
		if err == nil && r.Error == nil {
			recovered = time.Since(restarted)
			break
		}
		if time.Since(restarted) > time.Minute {
			t.Fatalf("apppassd still failing a minute after MongoDB came back: %v %+v", err, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitReadyz(t, d, "ready", 30*time.Second, pendingIs(0))
	if d.Exited() {
		t.Fatal("apppassd exited")
	}

	// Nothing half-written: exactly the five added before, no failed add,
	// no failed remove took effect; each still authenticates.
	var list []struct{ UUID, Name string }
	d.call(t, token, "appPasswords.list", nil, &list)
	var names []string
	for _, l := range list {
		names = append(names, l.Name)
	}
	slices.Sort(names)
	if want := []string{"up 0", "up 1", "up 2", "up 3", "up 4"}; !slices.Equal(names, want) {
		t.Errorf("after recovery the list holds %v, want %v", names, want)
	}
	for _, a := range before {
		var ok map[string]any
		d.call(t, gateway, "appPasswords.authenticate", authParams(login, a.Password, "imap", "192.0.2.1"), &ok)
	}
	// And it works as before: add and remove, with their events.
	var after added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "after"}, &after)
	var removed struct{ Result string }
	d.call(t, token, "appPasswords.remove", map[string]any{"uuid": before[0].UUID}, &removed)
	waitReadyz(t, d, "ready with an empty outbox", 30*time.Second, pendingIs(0))
	msgs := readWholeStream(t, js)
	byUUID := streamIndex(t, msgs)
	var got []string // (the authenticate calls add first-use events)
	for _, m := range msgs {
		if m.ev.Type == apppass.EventCreated || m.ev.Type == apppass.EventRevoked {
			got = append(got, m.ev.Type+" "+m.ev.Data.Name)
		}
	}
	slices.Sort(got)
	if want := []string{"apppassword.created after", "apppassword.created up 0", "apppassword.created up 1", "apppassword.created up 2",
		"apppassword.created up 3", "apppassword.created up 4", "apppassword.revoked up 0"}; !slices.Equal(got, want) {
		t.Errorf("the stream holds %q, want %q", got, want)
	}
	if byUUID[before[0].UUID][apppass.EventRevoked] != 1 || byUUID[after.UUID][apppass.EventCreated] != 1 {
		t.Errorf("events after recovery missing: %v %v", byUUID[before[0].UUID], byUUID[after.UUID])
	}
	t.Logf("MongoDB down: %s; slowest %s; /readyz 503 after %s more; down %s in all; calls work again %s after FerretDB restarted",
		strings.Join(report, ", "), slowest.Round(time.Millisecond), unreadyAfter.Round(time.Millisecond),
		downFor.Round(time.Millisecond), recovered.Round(time.Millisecond))
}
