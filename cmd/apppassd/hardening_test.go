package main_test

// Hardening, from outside: what a caller cannot make apppassd accept or
// hold, tried against the real binary on the embedded default.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/consume"
	"github.com/apppass/apppass/events/natsserver"
)

// signToken signs claims with key as apppassd's HS256 user tokens are.
func signToken(key, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signed := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims))
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(signed))
	return signed + "." + enc(m.Sum(nil))
}

// rawPost posts body to /rpc and returns the status and the body.
func rawPost(t *testing.T, base, bearer, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/rpc", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func TestHardeningTokensAndNames(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t), "APPPASS_USER_TOKEN_KEY="+faultTokenKey)
	now := time.Now().Unix()
	claims := func(extra string) string {
		return fmt.Sprintf(`{"cid":1,"uid":2,"login":"ann@example.com","exp":%d%s}`, now+3600, extra)
	}
	for name, extra := range map[string]string{
		"nbf an hour ahead":     fmt.Sprintf(`,"nbf":%d`, now+3600),
		"issued an hour ahead":  fmt.Sprintf(`,"iat":%d`, now+3600),
		"nbf not a number":      `,"nbf":"soon"`,
		"issued two minutes on": fmt.Sprintf(`,"iat":%d`, now+120),
	} {
		wantCode(t, name, d.call(t, signToken(faultTokenKey, claims(extra)), "appPasswords.list", nil, nil), -32001)
	}
	good := signToken(faultTokenKey, claims(fmt.Sprintf(`,"nbf":%d,"iat":%d`, now-60, now)))
	var list []struct{ Name string }
	d.call(t, good, "appPasswords.list", nil, &list)
	if status, body := rawPost(t, d.URL, strings.Repeat("x", 17<<10), `{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"}`); status != 401 || !strings.Contains(string(body), "-32001") {
		t.Errorf("a 17 KiB token: HTTP %d %s", status, body)
	}

	for name, appName := range map[string]string{
		"right-to-left override": "phone\u202egnp.exe",
		"left-to-right isolate":  "\u2066phone",
		"zero width space":       "pho\u200bne",
		"byte order mark":        "\ufeffphone",
	} {
		r := d.call(t, good, "appPasswords.add", map[string]any{"appScope": "mail", "appName": appName}, nil)
		wantCode(t, name, r, -32602)
	}
	// Decomposed and composed "Café" are one name, stored composed; ZWJ
	// keeps an emoji whole.
	var a, b struct{ Name string }
	d.call(t, good, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "Cafe\u0301"}, &a)
	d.call(t, good, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "👩\u200d💻 laptop"}, &b)
	if a.Name != "Caf\u00e9" || b.Name != "👩\u200d💻 laptop" {
		t.Errorf("stored names %q and %q, want %q and the emoji whole", a.Name, b.Name, "Caf\u00e9")
	}
	d.call(t, good, "appPasswords.list", nil, &list)
	if len(list) != 2 {
		t.Errorf("%d passwords listed, want the 2 accepted", len(list))
	}
}

func TestHardeningBatches(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t))
	token, gateway := d.credentials(t)
	batch := func(n int, method string) string {
		calls := make([]string, n)
		for i := range calls {
			calls[i] = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q}`, i, method)
		}
		return "[" + strings.Join(calls, ",") + "]"
	}
	_, body := rawPost(t, d.URL, gateway, batch(101, "rpc.discover"))
	var refused rpcReply
	if err := json.Unmarshal(body, &refused); err != nil || refused.Error == nil || refused.Error.Code != -32600 || !strings.Contains(string(refused.Error.Data), `"maxBatch":100`) {
		t.Fatalf("a batch of 101: %.300s", body)
	}
	// 100 answers of 20 kB pass the 1 MiB bound on a batch's replies: the
	// rest are not run, and each says so.
	_, body = rawPost(t, d.URL, gateway, batch(100, "rpc.discover"))
	var replies []rpcReply
	if err := json.Unmarshal(body, &replies); err != nil || len(replies) != 100 {
		t.Fatalf("a batch of 100: %d replies, %v", len(replies), err)
	}
	ran, notRun := 0, 0
	for _, r := range replies {
		switch {
		case r.Error == nil:
			ran++
		case r.Error.Code == -32600 && strings.Contains(r.Error.Message, "not run"):
			notRun++
		}
	}
	if ran == 0 || notRun == 0 || ran+notRun != 100 || len(body) > 2<<20 {
		t.Errorf("100 rpc.discover: %d ran, %d not run, %d bytes", ran, notRun, len(body))
	}
	// A batch that is refused changes nothing.
	calls := make([]string, 101)
	for i := range calls {
		calls[i] = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"appPasswords.add","params":{"appScope":"mail","appName":"p%d"}}`, i, i)
	}
	rawPost(t, d.URL, token, "["+strings.Join(calls, ",")+"]")
	var list []json.RawMessage
	d.call(t, token, "appPasswords.list", nil, &list)
	if len(list) != 0 {
		t.Errorf("a refused batch of adds stored %d passwords", len(list))
	}

	// The flood that took apppassd to 3 GB: eight batches at once, each of
	// 18,000 rpc.discover, bodies under 1 MiB.
	before := readRSS(t, d)
	flood := batch(18000, "rpc.discover")
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			req, _ := http.NewRequest("POST", d.URL+"/rpc", strings.NewReader(flood))
			req.Header.Set("Authorization", "Bearer "+gateway)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for range 8 {
		<-done
	}
	after := readRSS(t, d)
	t.Logf("RSS %d MB before the flood, %d MB after", before>>20, after>>20)
	if after > 400<<20 {
		t.Errorf("the flood took apppassd to %d MB", after>>20)
	}
}

// readRSS returns apppassd's resident memory.
func readRSS(t *testing.T, d *daemon) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Pid()))
	if err != nil {
		t.Skip("no /proc here")
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func TestHardeningTimeouts(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t),
		"APPPASS_HTTP_READ_TIMEOUT=2s", "APPPASS_HTTP_IDLE_TIMEOUT=1s")
	_, gateway := d.credentials(t)

	// An idle keep-alive connection is closed.
	conn, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idleSince := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the idle connection sent something")
	}
	if idle := time.Since(idleSince); idle > 20*time.Second {
		t.Errorf("the idle connection was kept %s", idle)
	}

	// A body trickling in is cut off at the read timeout.
	slow, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{", gateway)
	began := time.Now()
	cut := false
	for time.Since(began) < 30*time.Second {
		time.Sleep(500 * time.Millisecond)
		if _, err := slow.Write([]byte(" ")); err != nil {
			cut = true
			break
		}
		_ = slow.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := slow.Read(make([]byte, 512)); err != nil && !os.IsTimeout(err) {
			cut = true // answered and closed, or reset
			break
		} else if err == nil {
			cut = true // answered
			break
		}
	}
	if !cut {
		t.Errorf("a body trickling in for %s was still being read", time.Since(began).Round(time.Second))
	}
}

func TestHardeningSecretsInLogs(t *testing.T) {
	ns := startAuthNATS(t, "n4ts-s3cret-pw")
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_NATS_URL=nats://apppassd:n4ts-s3cret-pw@"+ns,
		"APPPASS_LOG_LEVEL=debug")
	d.Stop(t)
	if log := d.Stderr.String(); strings.Contains(log, "n4ts-s3cret-pw") || !strings.Contains(log, "apppassd:***@") {
		t.Errorf("the NATS password in the log, or no redacted URL:\n%s", log)
	}
	// A configuration error quoting a MongoDB URI does not quote its password.
	cmd := exec.Command(binary)
	cmd.Env = childEnv("APPPASS_MONGODB_URI=mongo://app:m0ng0-s3cret@db/apppass", "APPPASS_DATA_DIR="+t.TempDir())
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "m0ng0-s3cret") || !strings.Contains(string(out), "APPPASS_MONGODB_URI") {
		t.Errorf("config error: %s", out)
	}
}

// startAuthNATS runs a nats-server in this process whose apppassd user
// logs in with password, and returns its address.
func startAuthNATS(t *testing.T, password string) string {
	t.Helper()
	ns, err := natsserver.Start("127.0.0.1:0", t.TempDir(), &natsserver.Auth{ServicePassword: password, GatewayPassword: "gw-" + password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return strings.TrimPrefix(ns.URL(), "nats://")
}

func TestHardeningGatewayLogins(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t))
	_, gateway := d.credentials(t)
	long := strings.Repeat("a", 300) + "@example.com"
	req, _ := http.NewRequest("GET", d.URL+"/auth/basic", nil)
	req.SetBasicAuth(long, "abcd-efgh-ijkl-mnop")
	req.Header.Set("X-AppPass-Gateway-Key", gateway)
	req.Header.Set("X-AppPass-Protocol", "caldav")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/auth/basic with a 312-byte login: HTTP %d, want 401", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", d.URL+"/auth/mail", nil)
	for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": url.PathEscape(long), "Auth-Pass": "abcd-efgh-ijkl-mnop",
		"Auth-Protocol": "imap", "Client-IP": "192.0.2.1", "X-AppPass-Gateway-Key": gateway} {
		req.Header.Set(k, v)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Auth-Status"); got != "Invalid login or password" {
		t.Errorf("/auth/mail with a 312-byte login: Auth-Status %q", got)
	}
	wantCode(t, "JSON-RPC authenticate with a 312-byte login",
		d.call(t, gateway, "appPasswords.authenticate", authParams(long, "abcd-efgh-ijkl-mnop", "imap", "192.0.2.1"), nil), -32602)
}

// TestEmbeddedNATSRequiresLogin: nobody reaches the embedded NATS without
// a login; the gateway login in the data dir reads events and runs
// consumers, and can publish no event: a forged revocation reaches
// neither the stream nor a webhook.
func TestEmbeddedNATSRequiresLogin(t *testing.T) {
	natsAddr := freeAddr(t)
	dir := t.TempDir()
	d := start(t, "APPPASS_DATA_DIR="+dir, "APPPASS_EMBEDDED_NATS_LISTEN="+natsAddr)
	token, _ := d.credentials(t)
	if _, err := nats.Connect("nats://"+natsAddr, nats.Timeout(5*time.Second)); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("an anonymous client connected (or failed otherwise): %v", err)
	}
	gatewayURL := d.NATSURL(t)
	info, err := os.Stat(filepath.Join(dir, datadir.NATSGatewayURLFile))
	if err != nil || info.Mode().Perm() != 0o600 || !strings.HasPrefix(gatewayURL, "nats://gateway:") {
		t.Fatalf("nats-gateway.url: %v %v %q", info, err, gatewayURL)
	}
	if !strings.Contains(d.Stdout.String(), "--server "+gatewayURL) {
		t.Errorf("the welcome text's nats sub line does not use the gateway URL:\n%s", d.Stdout.String())
	}
	w := watchStream(t, gatewayURL)

	// A durable consumer of the gateway's own: allowed.
	nc, err := nats.Connect(gatewayURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	got := make(chan apppass.Event, 10)
	c, err := consume.Watch(context.Background(), js, consume.Options{Durable: "imap-proxy"}, func(_ context.Context, ev apppass.Event, _ consume.Delivery) error {
		got <- ev
		return nil
	})
	if err != nil {
		t.Fatalf("a gateway's durable consumer: %v", err)
	}
	defer c.Stop()

	// Forgeries: refused by the server.
	var violations atomic.Int64
	forger, err := nats.Connect(gatewayURL, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			violations.Add(1)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	forged := `{"id":"0123456789abcdef01234567","type":"apppassword.revoked","timestamp":"2026-12-02T00:00:00Z","data":{"uuid":"x","contextId":1,"userId":5}}`
	_ = forger.Publish("apppasswords.revoked.1.5", []byte(forged))
	_ = forger.Publish(events.EvictSubject, []byte("00000000-0000-4000-8000-000000000000"))
	fjs, _ := jetstream.New(forger)
	short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := fjs.Publish(short, "apppasswords.revoked.1.5", []byte(forged)); err == nil {
		t.Error("a JetStream publish of a forged revocation was acknowledged")
	}
	short, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := fjs.Consumer(short, events.StreamName, events.WebhookConsumer); err == nil {
		t.Error("the gateway may read apppassd's webhook consumer")
	}
	_ = forger.Flush()

	// A real revocation goes through, and is all that does.
	var a added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "phone"}, &a)
	d.call(t, token, "appPasswords.remove", map[string]any{"uuid": a.UUID}, nil)
	w.waitFor(t, "apppassword.revoked", a.UUID)
	select {
	case ev := <-got:
		if ev.Data.UUID != a.UUID || ev.Type != apppass.EventRevoked {
			t.Errorf("the gateway's consumer got %+v first", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway's durable consumer got nothing")
	}
	evs, _ := w.all()
	for _, e := range evs {
		if e.Data.UUID == "x" {
			t.Errorf("a forged event is in the stream: %+v", e)
		}
	}
	if violations.Load() == 0 {
		t.Error("the server reported no permissions violation for the forged publishes")
	}
}

// TestHardeningWebSocketFlood: the flood that took apppassd to 5.9 GB, one
// WebSocket with 20,000 rpc.discover calls and no answer read, now holds a
// few calls and the socket buffers.
func TestHardeningWebSocketFlood(t *testing.T) {
	d := start(t, "APPPASS_DATA_DIR="+t.TempDir(), "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t))
	_, gateway := d.credentials(t)
	before := readRSS(t, d)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(d.URL, "http")+"/rpc", http.Header{"Authorization": {"Bearer " + gateway}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	sent := 0
	for ; sent < 20000; sent++ {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"rpc.discover"}`, sent))); err != nil {
			break
		}
	}
	time.Sleep(time.Second)
	after := readRSS(t, d)
	t.Logf("RSS %d MB before, %d MB after %d calls sent on one socket and none read", before>>20, after>>20, sent)
	if after > 300<<20 {
		t.Errorf("one socket's flood took apppassd to %d MB", after>>20)
	}
	// apppassd still answers others.
	if resp, err := http.Get(d.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz during the flood: %v", err)
	}
}
