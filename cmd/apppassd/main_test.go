package main_test

// These tests run the real apppassd binary, as a user would, and drive it
// from outside: over HTTP, WebSocket and NATS.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/internal/testenv"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apppassd-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "apppassd")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building apppassd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running apppassd (internal/gatewaytest starts and stops it).
type daemon struct{ *gatewaytest.Daemon }

var (
	freeAddr = gatewaytest.FreeAddr
	childEnv = gatewaytest.ChildEnv
)

// start runs apppassd with env and waits until /readyz answers 200.
func start(t *testing.T, env ...string) *daemon {
	t.Helper()
	return &daemon{gatewaytest.StartBinary(t, binary, env...)}
}

type rpcReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

// call makes one JSON-RPC call over HTTP and decodes the result into out.
func (d *daemon) call(t *testing.T, bearer, method string, params any, out any) *rpcReply {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, _ := http.NewRequest("POST", d.URL+"/rpc", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r rpcReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if r.Error != nil {
			t.Fatalf("%s: error %d %s", method, r.Error.Code, r.Error.Message)
		}
		if err := json.Unmarshal(r.Result, out); err != nil {
			t.Fatal(err)
		}
	}
	return &r
}

var (
	tokenLine   = regexp.MustCompile(`export TOKEN=(\S+)`)
	gatewayLine = regexp.MustCompile(`export GATEWAY_KEY=(\S+)`)
)

// credentials reads the example token and gateway key apppassd printed.
func (d *daemon) credentials(t *testing.T) (token, gateway string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out := d.Stdout.String()
		if m, g := tokenLine.FindStringSubmatch(out), gatewayLine.FindStringSubmatch(out); m != nil && g != nil {
			return m[1], g[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no example token printed; stdout:\n%s", d.Stdout.String())
	return "", ""
}

type added struct {
	UUID     string `json:"uuid"`
	Login    string `json:"login"`
	Password string `json:"password"`
	AppScope string `json:"appScope"`
	Name     string `json:"name"`
	Settings []struct {
		Protocol string `json:"protocol"`
	} `json:"settings"`
}

type event struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data struct {
		UUID     string `json:"uuid"`
		Reason   string `json:"reason"`
		AppScope string `json:"appScope"`
		IP       string `json:"ip"`
		Device   string `json:"device"`
	} `json:"data"`
	subject string
}

// watch collects events from the APPPASSWORDS stream with an ordered consumer.
type watch struct {
	mu     sync.Mutex
	events []event
	raw    [][]byte
}

func watchStream(t *testing.T, natsURL string) *watch {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	w := &watch{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			cons, err := js.OrderedConsumer(ctx, "APPPASSWORDS", jetstream.OrderedConsumerConfig{})
			if err != nil {
				time.Sleep(100 * time.Millisecond) // the stream appears when apppassd starts
				continue
			}
			cc, err := cons.Consume(func(m jetstream.Msg) {
				var e event
				_ = json.Unmarshal(m.Data(), &e)
				e.subject = m.Subject()
				if m.Headers().Get("Nats-Msg-Id") != e.ID {
					e.ID = "header-mismatch:" + e.ID
				}
				w.mu.Lock()
				w.events = append(w.events, e)
				w.raw = append(w.raw, m.Data())
				w.mu.Unlock()
			})
			if err != nil {
				continue
			}
			<-ctx.Done()
			cc.Stop()
			return
		}
	}()
	return w
}

// waitFor waits until the stream holds an event of typ for uuid.
func (w *watch) waitFor(t *testing.T, typ, uuid string) event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		for _, e := range w.events {
			if e.Type == typ && e.Data.UUID == uuid {
				w.mu.Unlock()
				return e
			}
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event for %s within 30 s", typ, uuid)
	return event{}
}

func (w *watch) all() ([]event, [][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.events...), append([][]byte(nil), w.raw...)
}

// TestUIFlowOnTheEmbeddedDefault walks what a user and a gateway do, over
// HTTP and WebSocket, with a NATS consumer watching, against apppassd
// started with nothing configured but its addresses.
func TestUIFlowOnTheEmbeddedDefault(t *testing.T) {
	dataDir := t.TempDir()
	natsAddr := freeAddr(t)
	env := []string{"APPPASS_DATA_DIR=" + dataDir, "APPPASS_EMBEDDED_NATS_LISTEN=" + natsAddr}
	d := start(t, env...)
	token, gateway := d.credentials(t)
	w := watchStream(t, d.NATSURL(t))

	var apps []struct{ Name string }
	d.call(t, token, "appPasswords.getApps", nil, &apps)
	if len(apps) != 7 || apps[0].Name != "mail" {
		t.Fatalf("getApps: %+v", apps)
	}

	// Add over HTTP: the dialog's details.
	var mail added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "  Phone mail  "}, &mail)
	if !regexp.MustCompile(`^[a-z]{4}(-[a-z]{4}){3}$`).MatchString(mail.Password) || mail.Name != "Phone mail" ||
		mail.Login != "demo@example.com" || len(mail.Settings) != 3 {
		t.Fatalf("add: %+v", mail)
	}
	w.waitFor(t, "apppassword.created", mail.UUID)

	// A gateway logs in with it, typed sloppily.
	var auth struct {
		UUID, AppScope string
		Scopes         []string
	}
	sloppy := strings.ToUpper(strings.ReplaceAll(mail.Password, "-", " "))
	d.call(t, gateway, "appPasswords.authenticate", map[string]any{"login": "Demo@Example.com", "password": sloppy, "protocol": "imap", "ip": "192.0.2.7", "device": "iPhone", "userAgent": "Mail/1.0"}, &auth)
	if auth.UUID != mail.UUID || auth.AppScope != "mail" || len(auth.Scopes) == 0 {
		t.Fatalf("authenticate: %+v", auth)
	}
	if r := d.call(t, gateway, "appPasswords.authenticate", map[string]any{"login": "demo@example.com", "password": mail.Password, "protocol": "caldav"}, nil); r.Error == nil || r.Error.Code != -32010 {
		t.Fatalf("a mail password on caldav: %+v", r)
	}

	// Over WebSocket: add a CalDAV password, list, remove it.
	header := http.Header{"Authorization": {"Bearer " + token}}
	ws, resp, err := websocket.DefaultDialer.Dial(strings.Replace(d.URL, "http", "ws", 1)+"/rpc", header)
	if err != nil {
		t.Fatalf("websocket dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	wsCall := func(id int, method string, params any, out any) {
		t.Helper()
		if err := ws.WriteJSON(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params}); err != nil {
			t.Fatal(err)
		}
		var r struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  any             `json:"error"`
		}
		if err := ws.ReadJSON(&r); err != nil || r.Error != nil || r.ID != id {
			t.Fatalf("ws %s: %+v %v", method, r, err)
		}
		if err := json.Unmarshal(r.Result, out); err != nil {
			t.Fatal(err)
		}
	}
	var cal added
	wsCall(1, "appPasswords.add", map[string]any{"appScope": "caldav", "appName": "Thunderbird"}, &cal)
	var list []struct {
		UUID      string
		Name      string
		LastLogin *struct{ IP, Device, UserAgent string }
	}
	wsCall(2, "appPasswords.list", nil, &list)
	if len(list) != 2 || list[0].UUID != cal.UUID || list[1].UUID != mail.UUID || list[1].LastLogin == nil ||
		list[1].LastLogin.IP != "192.0.2.7" || list[1].LastLogin.Device != "iPhone" || list[0].LastLogin != nil {
		t.Fatalf("list: %+v", list)
	}
	var ok struct{ Result string }
	wsCall(3, "appPasswords.remove", map[string]any{"uuid": cal.UUID}, &ok)
	if ok.Result != "OK" {
		t.Fatalf("remove: %+v", ok)
	}
	if e := w.waitFor(t, "apppassword.revoked", cal.UUID); e.Data.Reason != "user" {
		t.Fatalf("revoked event: %+v", e)
	}

	// Removing the same one again: not found.
	if r := d.call(t, token, "appPasswords.remove", map[string]any{"uuid": cal.UUID}, nil); r.Error == nil || r.Error.Code != -32004 {
		t.Fatalf("second remove: %+v", r)
	}

	// Events arrive created before revoked, each once, never with a password.
	evs, raw := w.all()
	seen := map[string]bool{}
	for i, e := range evs {
		if seen[e.ID] || strings.HasPrefix(e.ID, "header-mismatch") {
			t.Fatalf("event %s repeated or its Nats-Msg-Id differs", e.ID)
		}
		seen[e.ID] = true
		for _, pw := range []string{mail.Password, cal.Password, strings.ReplaceAll(mail.Password, "-", ""), strings.ReplaceAll(cal.Password, "-", "")} {
			if bytes.Contains(raw[i], []byte(pw)) {
				t.Fatalf("event %s carries a password", e.ID)
			}
		}
	}

	// The mail password survives a restart (the pepper is kept in the data dir).
	if code := d.Stop(t); code != 0 {
		t.Fatalf("SIGTERM exit code %d", code)
	}
	d2 := start(t, env...)
	d2.call(t, gateway, "appPasswords.authenticate", map[string]any{"login": "demo@example.com", "password": mail.Password, "protocol": "smtp"}, &auth)
	if auth.UUID != mail.UUID {
		t.Fatalf("after restart: %+v", auth)
	}
	if !strings.Contains(d.Stderr.String(), "apppassd listening") {
		t.Fatalf("no start-up line: %s", d.Stderr.String())
	}
	for _, secret := range []string{mail.Password, cal.Password} {
		if strings.Contains(d.Stderr.String(), secret) || strings.Contains(d2.Stderr.String(), secret) {
			t.Fatal("a password appears in the log")
		}
	}
}

// TestNoEventLostAcrossNATSOutageAndKill removes passwords while NATS is
// down, kills apppassd with SIGKILL, and checks that after both come back
// every event reaches the stream exactly once.
func TestNoEventLostAcrossNATSOutageAndKill(t *testing.T) {
	natsAddr, natsDir := freeAddr(t), t.TempDir()
	ns := testenv.NATSAt(t, natsAddr, natsDir)
	env := []string{"APPPASS_DATA_DIR=" + t.TempDir(), "APPPASS_NATS_URL=nats://" + natsAddr}
	d := start(t, env...)
	token, _ := d.credentials(t)
	w := watchStream(t, "nats://"+natsAddr)

	var before added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "eas", "appName": "before outage"}, &before)
	w.waitFor(t, "apppassword.created", before.UUID)

	ns.Stop()
	var during []added
	for i := range 10 {
		var a added
		d.call(t, token, "appPasswords.add", map[string]any{"appScope": "carddav", "appName": fmt.Sprintf("during %d", i)}, &a)
		during = append(during, a)
	}
	var ok struct{ Result string }
	d.call(t, token, "appPasswords.remove", map[string]any{"uuid": before.UUID}, &ok)
	for _, a := range during[:5] {
		d.call(t, token, "appPasswords.remove", map[string]any{"uuid": a.UUID}, &ok)
	}
	resp, err := http.Get(d.URL + "/readyz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the NATS outage: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	d.Kill()

	testenv.NATSAt(t, natsAddr, natsDir)
	start(t, env...)
	w.waitFor(t, "apppassword.revoked", before.UUID)
	for i, a := range during {
		w.waitFor(t, "apppassword.created", a.UUID)
		if i < 5 {
			w.waitFor(t, "apppassword.revoked", a.UUID)
		}
	}
	evs, _ := w.all()
	ids := map[string]bool{}
	created := map[string]int{}
	for i, e := range evs {
		if ids[e.ID] {
			t.Fatalf("event %s is in the stream twice", e.ID)
		}
		ids[e.ID] = true
		switch e.Type {
		case "apppassword.created":
			created[e.Data.UUID] = i
		case "apppassword.revoked":
			if c, ok := created[e.Data.UUID]; !ok || c > i {
				t.Fatalf("revoked before created for %s", e.Data.UUID)
			}
		}
	}
	if len(evs) != 1+1+10+5 {
		t.Fatalf("%d events in the stream, want 17", len(evs))
	}
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	for setting, value := range map[string]string{
		"APPPASS_MAX_PER_USER": "lots",
		"APPPASS_LISTEN":       "nowhere",
		"APPPASS_MONGODB_URI":  "mongodb://127.0.0.1:1", // no pepper
		"APPPASS_DOVEADM_URLS": "127.0.0.1:8080",        // no scheme
	} {
		cmd := exec.Command(binary)
		cmd.Env = childEnv(setting+"="+value, "APPPASS_DATA_DIR="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%s=%s: exit %v, want 2", setting, value, err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "APPPASS_") {
			t.Errorf("%s=%s: stderr %q, want one line naming the setting", setting, value, stderr.String())
		}
	}
}

func TestHelpListsSettings(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), "$APPPASS_") {
			n++
		}
	}
	if n < 14 {
		t.Fatalf("--help lists %d settings:\n%s", n, out)
	}
}
