package main

// These tests run the real apppassd binary (embedded FerretDB and NATS,
// free loopback ports) and the gateway in this process, in front of an
// upstream HTTP server that holds long polls open, and measure how fast a
// revocation reaches the gateway.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/internal/testenv"
)

var apppassd string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apppass-gateway-test")
	if err != nil {
		panic(err)
	}
	apppassd, err = gatewaytest.Build(dir, "github.com/apppass/apppass/cmd/apppassd", "apppassd", gatewaytest.RaceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// deadline is how long anything may take before the test fails. The test
// reports latencies; it does not judge them (the machine is shared).
const deadline = 10 * time.Second

// upstream is the service behind the gateway. /poll/wait holds a request
// without answering, /poll/stream answers and then holds the body open;
// both until the request is cancelled. Anything else echoes the identity
// headers it received.
type upstream struct {
	srv     *httptest.Server
	arrived chan string    // path of each long poll that arrived
	gone    chan time.Time // when a long poll's request was cancelled

	mu   sync.Mutex
	last http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{arrived: make(chan string, 16), gone: make(chan time.Time, 16)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.mu.Unlock()
		switch r.URL.Path {
		case "/poll/wait", "/poll/stream":
			if r.URL.Path == "/poll/stream" {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, "open\n")
				http.NewResponseController(w).Flush()
			}
			u.arrived <- r.URL.Path
			select {
			case <-r.Context().Done():
				u.gone <- time.Now()
			case <-time.After(60 * time.Second):
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{
				"uuid": r.Header.Get("X-AppPass-UUID"), "user": r.Header.Get("X-AppPass-User"),
				"context": r.Header.Get("X-AppPass-Context"), "login": r.Header.Get("X-AppPass-Login"),
				"scopes": r.Header.Get("X-AppPass-Scopes"), "protocol": r.Header.Get("X-AppPass-Protocol"),
				"authorization": r.Header.Get("Authorization"), "spoofed": r.Header.Get("X-Apppass-Spoofed"),
			})
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// startGateway runs the gateway in this process, as main does, and waits
// until it listens (and, with NATS, until it trusts its sessions).
func startGateway(t *testing.T, cfg config.Gateway) (string, *Gateway) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Protocol == "" {
		cfg.Protocol = "caldav"
	}
	if cfg.Auth == "" {
		cfg.Auth = "basic"
	}
	if cfg.Realm == "" {
		cfg.Realm = "Calendar"
	}
	ctx, cancel := context.WithCancel(context.Background())
	type up struct {
		addr string
		g    *Gateway
	}
	ready := make(chan up, 1)
	done := make(chan error, 1)
	logger := testenv.Quiet()
	go func() {
		done <- serve(ctx, &cfg, logger, func(addr string, g *Gateway) { ready <- up{addr, g} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("gateway did not stop within 15 s")
		}
	})
	var r up
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("gateway stopped: %v", err)
	case <-time.After(deadline):
		t.Fatal("gateway not listening")
	}
	if cfg.NATSURL != "" {
		waitTrusted(t, r.g, true)
	}
	return "http://" + r.addr, r.g
}

func waitTrusted(t *testing.T, g *Gateway, want bool) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for g.Trusted() != want {
		if time.Now().After(end) {
			t.Fatalf("gateway trusted=%v, want %v after 30 s", g.Trusted(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get makes one request through the gateway on a connection of its own.
func get(t *testing.T, url, login, password string, header ...string) (int, map[string]string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if login != "" {
		req.SetBasicAuth(login, password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: deadline}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var body map[string]string
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, body, resp.Header
}

func basic(login, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(login+":"+password))
}

// TestGateway runs one apppassd for the gateway tests.
func TestGateway(t *testing.T) {
	natsAddr := gatewaytest.FreeAddr(t)
	d := gatewaytest.StartDaemon(t, apppassd, "APPPASS_EMBEDDED_NATS_LISTEN="+natsAddr)
	natsURL := d.NATSURL(t)
	// The gateway trusts no session before it can consume the stream,
	// which apppassd creates at start: wait for it.
	waitForStream(t, natsURL)
	t.Run("RevocationLatency", func(t *testing.T) { testRevocationLatency(t, d, natsURL) })
	t.Run("RPCAuth", func(t *testing.T) { testRPCAuth(t, d, natsURL) })
	for _, auth := range []string{"basic", "rpc"} {
		t.Run("SessionLimits/"+auth, func(t *testing.T) { testSessionLimits(t, d, natsURL, auth) })
	}
	t.Run("NoSessionsWithoutNATS", func(t *testing.T) { testNoSessionsWithoutNATS(t, d) })
}

// ensureStream creates the APPPASSWORDS stream on url if it is missing, as
// apppassd would (for a NATS of a test's own).
func ensureStream(t *testing.T, url string) {
	t.Helper()
	pub, err := nats.Connect(url, "stream-maker")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for !pub.Connected() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitForStream waits until the APPPASSWORDS stream exists on url.
func waitForStream(t *testing.T, url string) {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for {
		if _, err := js.Stream(ctx, events.StreamName); err == nil {
			return
		} else if ctx.Err() != nil {
			t.Fatalf("no stream %s: %v", events.StreamName, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testRevocationLatency: a CalDAV password logs in through the gateway
// (the second request rides on the session), holds two long polls and an
// idle keep-alive connection, and is removed; the test measures how long
// after remove returned the gateway closed each connection and refused
// the next request.
func testRevocationLatency(t *testing.T, d *gatewaytest.Daemon, natsURL string) {
	up := newUpstream(t)
	gw, g := startGateway(t, config.Gateway{Upstream: up.srv.URL, Sidecar: d.URL, GatewayKey: d.GatewayKey, NATSURL: natsURL, SessionTTL: 5 * time.Minute})
	pw := d.Add(t, "caldav", "Thunderbird")

	// Unauthenticated, wrong password, a mail password: challenged.
	for _, c := range []struct{ login, password string }{{"", ""}, {pw.Login, "aaaa-bbbb-cccc-dddd"}, {pw.Login, d.Add(t, "mail", "Phone").Password}} {
		code, _, h := get(t, gw+"/calendars/", c.login, c.password)
		if code != 401 || h.Get("WWW-Authenticate") != `Basic realm="Calendar", charset="UTF-8"` {
			t.Fatalf("login %q: %d %v", c.login, code, h)
		}
	}

	// First request: checked with the sidecar; identity passed upstream,
	// credentials and spoofed identity headers not.
	before := g.Stats()
	code, body, _ := get(t, gw+"/calendars/demo/", pw.Login, gatewaytest.Sloppy(pw.Password),
		"X-AppPass-User", "999", "X-AppPass-Spoofed", "1")
	if code != 200 || body["uuid"] != pw.UUID || body["user"] != "3" || body["context"] != "1" || body["login"] != gatewaytest.DemoLogin ||
		!strings.Contains(body["scopes"], "read_caldav") || body["protocol"] != "caldav" || body["authorization"] != "" || body["spoofed"] != "" {
		t.Fatalf("first request: %d %v", code, body)
	}
	if s := g.Stats(); s.SidecarCalls != before.SidecarCalls+1 || s.SessionHits != before.SessionHits || s.Sessions != 1 {
		t.Fatalf("after the first request: %+v (before %+v)", s, before)
	}

	// Second request, on a raw keep-alive connection that then stays
	// idle: served from the session.
	idle, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /calendars/demo/ HTTP/1.1\r\nHost: gw\r\nAuthorization: %s\r\n\r\n", basic(pw.Login, gatewaytest.Sloppy(pw.Password)))
	idleReader := bufio.NewReader(idle)
	resp, err := http.ReadResponse(idleReader, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if s := g.Stats(); resp.StatusCode != 200 || s.SidecarCalls != before.SidecarCalls+1 || s.SessionHits != before.SessionHits+1 {
		t.Fatalf("second request: %d, %+v", resp.StatusCode, s)
	}

	// Two long polls: one the upstream has not answered yet, one whose
	// body is streaming.
	type closed struct {
		at  time.Time
		err error
	}
	waitClosed, streamClosed, idleClosed := make(chan closed, 1), make(chan closed, 1), make(chan closed, 1)
	poll := func(path string) *http.Request {
		req, _ := http.NewRequest("GET", gw+path, nil)
		req.SetBasicAuth(pw.Login, pw.Password)
		return req
	}
	go func() {
		client := &http.Client{Transport: &http.Transport{}}
		resp, err := client.Do(poll("/poll/wait"))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("long poll answered %d (%v)", resp.StatusCode, err)
		}
		waitClosed <- closed{time.Now(), err}
	}()
	streamResp, err := (&http.Client{Transport: &http.Transport{}}).Do(poll("/poll/stream"))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(streamResp.Body).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("streaming long poll: %q %v", line, err)
	}
	go func() {
		_, err := io.Copy(io.Discard, streamResp.Body)
		streamClosed <- closed{time.Now(), err}
	}()
	for range 2 {
		select {
		case <-up.arrived:
		case <-time.After(deadline):
			t.Fatal("the long polls did not reach the upstream")
		}
	}
	go func() {
		_, err := idleReader.ReadByte()
		idleClosed <- closed{time.Now(), err}
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case c := <-waitClosed:
		t.Fatalf("long poll ended before the removal: %v", c.err)
	case c := <-streamClosed:
		t.Fatalf("streaming long poll ended before the removal: %v", c.err)
	case c := <-idleClosed:
		t.Fatalf("idle connection closed before the removal: %v", c.err)
	default:
	}

	// Remove, and from the moment remove returned: when does the next
	// request get refused?
	removing := time.Now()
	d.Remove(t, pw.UUID)
	removed := time.Now()
	refused := make(chan time.Time, 1)
	var acceptedAfter atomic.Int64
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: deadline}
		for time.Since(removed) < deadline {
			req := poll("/calendars/demo/")
			resp, err := client.Do(req)
			if err != nil {
				continue // cut off by the revocation while in flight
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 401 {
				refused <- time.Now()
				return
			}
			acceptedAfter.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()

	latency := map[string]time.Duration{}
	wait := func(name string, ch <-chan closed) {
		t.Helper()
		select {
		case c := <-ch:
			if c.err == nil || strings.Contains(c.err.Error(), "answered") {
				t.Errorf("%s: ended without an error: %v", name, c.err)
			}
			latency[name] = c.at.Sub(removed)
		case <-time.After(deadline - time.Since(removed)):
			t.Fatalf("%s still open %v after remove", name, deadline)
		}
	}
	wait("long poll (waiting for its answer) closed", waitClosed)
	wait("long poll (streaming) closed", streamClosed)
	wait("idle keep-alive connection closed", idleClosed)
	select {
	case at := <-refused:
		latency["next request refused (401)"] = at.Sub(removed)
	case <-time.After(deadline - time.Since(removed)):
		t.Fatalf("the gateway still accepted the password %v after remove", deadline)
	}
	for i := range 2 {
		select {
		case at := <-up.gone:
			latency[fmt.Sprintf("upstream long poll %d cancelled", i+1)] = at.Sub(removed)
		case <-time.After(deadline):
			t.Fatal("the upstream long polls were not cancelled")
		}
	}
	// The credentials that had a session are refused by the gateway
	// itself; a spelling it never saw is refused by the sidecar.
	before = g.Stats()
	if code, _, _ := get(t, gw+"/calendars/demo/", pw.Login, pw.Password); code != 401 || g.Stats().SidecarCalls != before.SidecarCalls {
		t.Fatalf("after revocation: %d, %+v", code, g.Stats())
	}
	if code, _, _ := get(t, gw+"/calendars/demo/", pw.Login, strings.ToUpper(pw.Password)); code != 401 || g.Stats().SidecarCalls != before.SidecarCalls+1 {
		t.Fatalf("after revocation, another spelling: %d, %+v", code, g.Stats())
	}
	s := g.Stats()
	if s.Revocations < 1 || s.CancelledRequests < 2 || s.ClosedConns < 3 || s.Sessions != 0 {
		t.Fatalf("stats after revocation: %+v", s)
	}
	latency["gateway handled the revoked event"] = s.LastRevocation.Sub(removed)
	t.Logf("remove took %v (negative latencies: done before remove returned); requests accepted after remove returned: %d",
		removed.Sub(removing), acceptedAfter.Load())
	reportLatency(t, latency, removed.Sub(removing), acceptedAfter.Load())
}

// reportLatency logs the latencies and, if APPPASS_LATENCY_REPORT names a
// file, writes them there as JSON (milliseconds).
func reportLatency(t *testing.T, latency map[string]time.Duration, removeCall time.Duration, acceptedAfter int64) {
	t.Helper()
	ms := map[string]float64{}
	names := slices.Sorted(maps.Keys(latency))
	for _, name := range names {
		d := latency[name]
		t.Logf("remove returned → %-40s %8.2f ms", name, float64(d.Microseconds())/1000)
		ms[name] = float64(d.Microseconds()) / 1000
	}
	path := os.Getenv("APPPASS_LATENCY_REPORT")
	if path == "" {
		return
	}
	report, _ := json.MarshalIndent(map[string]any{
		"test": t.Name(), "time": time.Now().UTC().Format(time.RFC3339), "race": gatewaytest.RaceEnabled,
		"latencyMs": ms, "removeCallMs": float64(removeCall.Microseconds()) / 1000, "requestsAcceptedAfterRemove": acceptedAfter,
		"note": "latencies are measured from appPasswords.remove returning; negative: it happened before remove returned",
	}, "", "  ")
	if err := os.WriteFile(path, append(report, '\n'), 0o644); err != nil {
		t.Errorf("writing the latency report: %v", err)
	}
}

// testRPCAuth: the same gateway asking over JSON-RPC.
func testRPCAuth(t *testing.T, d *gatewaytest.Daemon, natsURL string) {
	up := newUpstream(t)
	gw, g := startGateway(t, config.Gateway{Upstream: up.srv.URL, Sidecar: d.URL, GatewayKey: d.GatewayKey, NATSURL: natsURL,
		SessionTTL: time.Minute, Auth: "rpc", Protocol: "carddav"})
	pw := d.Add(t, "carddav", "Contacts")
	for i := range 2 {
		code, body, _ := get(t, gw+"/addressbooks/", pw.Login, pw.Password)
		if code != 200 || body["uuid"] != pw.UUID || body["user"] != "3" || body["context"] != "1" ||
			!strings.Contains(body["scopes"], "read_carddav") || body["protocol"] != "carddav" {
			t.Fatalf("request %d: %d %v", i, code, body)
		}
	}
	if s := g.Stats(); s.SidecarCalls != 1 || s.SessionHits != 1 {
		t.Fatalf("stats: %+v", s)
	}
	if code, _, _ := get(t, gw+"/addressbooks/", pw.Login, "wrong"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	d.Remove(t, pw.UUID)
	end := time.Now().Add(deadline)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: deadline}
	for {
		req, _ := http.NewRequest("GET", gw+"/addressbooks/", nil)
		req.SetBasicAuth(pw.Login, pw.Password)
		code := 0
		if resp, err := client.Do(req); err == nil { // else cut off by the revocation while in flight
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		if code == 401 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("still %d after remove", code)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testSessionLimits: a session serves only the client address the sidecar
// checked, so a password limited to one network does not work from another
// through a session; and it ends when the password expires.
func testSessionLimits(t *testing.T, d *gatewaytest.Daemon, natsURL, auth string) {
	up := newUpstream(t)
	gw, g := startGateway(t, config.Gateway{Upstream: up.srv.URL, Sidecar: d.URL, GatewayKey: d.GatewayKey, NATSURL: natsURL,
		SessionTTL: 5 * time.Minute, Auth: auth, Protocol: "caldav", ClientIPHeader: "X-Forwarded-For"})
	expires := time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339)
	var pw gatewaytest.Password
	if e := d.Call(t, d.Token, "appPasswords.add", map[string]any{"appScope": "caldav", "appName": "office only",
		"allowedIPs": []string{"198.51.100.0/24"}, "expires": expires}, &pw); e != nil {
		t.Fatalf("add: %d %s", e.Code, e.Message)
	}
	from := func(ip string) int {
		code, _, _ := get(t, gw+"/calendars/", pw.Login, pw.Password, "X-Forwarded-For", ip)
		return code
	}
	if c1, c2 := from("198.51.100.7"), from("198.51.100.7"); c1 != 200 || c2 != 200 {
		t.Fatalf("from the office: %d then %d", c1, c2)
	}
	if s := g.Stats(); s.SessionHits != 1 {
		t.Fatalf("the second request from the office rode no session: %+v", s)
	}
	if code := from("203.0.113.9"); code != 401 {
		t.Fatalf("from outside the office network, with a session open: %d, want 401", code)
	}
	// The session ends with the password's expiry, not the 5 min TTL.
	end := time.Now().Add(deadline)
	for from("198.51.100.7") != 401 {
		if time.Now().After(end) {
			t.Fatal("the session outlived its password's expiry")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testNoSessionsWithoutNATS points the gateway at a NATS of its own and
// stops it: while it is away every request goes to the sidecar; once it
// is back sessions are used again.
func testNoSessionsWithoutNATS(t *testing.T, d *gatewaytest.Daemon) {
	addr, dir := gatewaytest.FreeAddr(t), t.TempDir()
	ns := testenv.NATSAt(t, addr, dir)
	ensureStream(t, ns.URL())

	up := newUpstream(t)
	gw, g := startGateway(t, config.Gateway{Upstream: up.srv.URL, Sidecar: d.URL, GatewayKey: d.GatewayKey, NATSURL: ns.URL(), SessionTTL: time.Minute})
	pw := d.Add(t, "webdav", "Files")
	twice := func(wantSidecar, wantHits int64) {
		t.Helper()
		before := g.Stats()
		for range 2 {
			if code, body, _ := get(t, gw+"/files/", pw.Login, pw.Password); code != 200 || body["uuid"] != pw.UUID {
				t.Fatalf("%d %v", code, body)
			}
		}
		s := g.Stats()
		if s.SidecarCalls-before.SidecarCalls != wantSidecar || s.SessionHits-before.SessionHits != wantHits {
			t.Fatalf("two requests: %d sidecar calls and %d session hits, want %d and %d", s.SidecarCalls-before.SidecarCalls,
				s.SessionHits-before.SessionHits, wantSidecar, wantHits)
		}
	}
	// The gateway is configured for caldav; a webdav password is refused.
	if code, _, _ := get(t, gw+"/files/", pw.Login, pw.Password); code != 401 {
		t.Fatalf("a webdav password on a caldav gateway: %d", code)
	}
	pw = d.Add(t, "caldav", "Calendar")
	twice(1, 1)
	ns.Stop()
	waitTrusted(t, g, false)
	if s := g.Stats(); s.Sessions != 0 {
		t.Fatalf("sessions kept while NATS is away: %+v", s)
	}
	twice(2, 0)
	testenv.NATSAt(t, addr, dir)
	waitTrusted(t, g, true)
	twice(1, 1)
}

// TestConfig checks the settings: required ones, bad values, flags over
// the environment.
func TestConfig(t *testing.T) {
	env := map[string]string{
		"APPPASS_GATEWAY_UPSTREAM": "http://127.0.0.1:9000", "APPPASS_GATEWAY_KEY": "secret-secret-secret",
		"APPPASS_GATEWAY_PROTOCOL": "eas",
	}
	getenv := func(k string) string { return env[k] }
	c, err := config.LoadGateway([]string{"--protocol", "webdav", "--session-ttl", "90s"}, getenv, io.Discard)
	if err != nil || c.Protocol != "webdav" || c.SessionTTL != 90*time.Second || c.Sidecar != "http://127.0.0.1:8080" ||
		c.Auth != "basic" || c.NATSURL != "nats://127.0.0.1:4222" || c.GatewayKey != "secret-secret-secret" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range [][]string{
		{"--protocol", "imap"}, {"--upstream", "ftp://x"}, {"--upstream", ""}, {"--gateway-key", ""},
		{"--auth", "ldap"}, {"--session-ttl", "-1s"}, {"--realm", `a"b`}, {"--tls-cert", "c.pem"}, {"--log-level", "loud"}, {"extra"},
	} {
		if _, err := config.LoadGateway(bad, getenv, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if code := run(context.Background(), []string{"--protocol", "pop3"}, getenv, io.Discard); code != 2 {
		t.Fatalf("bad configuration: exit %d", code)
	}
	if code := run(context.Background(), []string{"--help"}, getenv, io.Discard); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
}
