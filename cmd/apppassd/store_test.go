package main_test

// The embedded store from outside: a full disk under a running apppassd,
// and the files and data dirs apppassd must refuse at start.

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/internal/testenv"
)

// TestFaultStoreFull: with the data dir's disk full, calls that write
// answer -32050, reads go on, /readyz turns 503; nothing is half-written;
// once there is room apppassd works again without a restart.
func TestFaultStoreFull(t *testing.T) {
	dir, fill := testenv.SmallDisk(t, 32<<20)
	ns := testenv.NATS(t)
	js := jetStream(t, ns.URL())
	gateway := "fault-gateway-key-0123456789"
	d := start(t, "APPPASS_DATA_DIR="+dir, "APPPASS_NATS_URL="+ns.URL(), "APPPASS_USER_TOKEN_KEY="+faultTokenKey,
		"APPPASS_SERVICE_KEYS=gw:gateway:"+gateway)
	token := faultUsers(1)[0]
	login := "fault0@example.org"
	var before []added
	for i := range 5 {
		var a added
		d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": fmt.Sprintf("up %d", i)}, &a)
		before = append(before, a)
	}
	waitStreamCount(t, js, 5, time.Minute)

	free := fill()
	// The WAL may still have room for a few writes: the disk is full
	// once a write says so.
	var full *rpcReply
	for i := 0; i < 2000 && full == nil; i++ {
		r, err := faultCall(d.URL, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": fmt.Sprintf("down %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Error != nil {
			full = r
		} else {
			var a added
			if err := json.Unmarshal(r.Result, &a); err != nil {
				t.Fatal(err)
			}
			before = append(before, a) // stored before the disk was full
		}
	}
	if full == nil || full.Error.Code != -32050 || strings.Contains(full.Error.Message, "/") {
		t.Fatalf("add on a full disk: %+v, want -32050 without internals", full)
	}
	// A remove may still fit (it rewrites a row the file has room for):
	// it answers OK, and is done, or -32050, and is not.
	removedOnFull := false
	switch r := d.call(t, token, "appPasswords.remove", map[string]any{"uuid": before[1].UUID}, nil); {
	case r.Error == nil:
		removedOnFull = true
	case r.Error.Code != -32050:
		t.Errorf("remove on a full disk: %+v, want OK or -32050", r.Error)
	}
	var list []struct{ UUID string }
	d.call(t, token, "appPasswords.list", nil, &list)
	if want := len(before) - map[bool]int{true: 1}[removedOnFull]; len(list) != want {
		t.Errorf("list on a full disk has %d passwords, want %d", len(list), want)
	}
	waitReadyz(t, d, "503", 15*time.Second, func(code int, body map[string]any) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(fmt.Sprint(body["reason"]), "SQLite store")
	})

	free()
	waitReadyz(t, d, "ready again", 30*time.Second, pendingIs(0))
	var after added
	d.call(t, token, "appPasswords.add", map[string]any{"appScope": "mail", "appName": "after"}, &after)
	if !removedOnFull {
		d.call(t, token, "appPasswords.remove", map[string]any{"uuid": before[1].UUID}, nil)
	}
	var ok map[string]any
	d.call(t, gateway, "appPasswords.authenticate", authParams(login, before[0].Password, "imap", "192.0.2.1"), &ok)
	waitReadyz(t, d, "ready with an empty outbox", 30*time.Second, pendingIs(0))
	if d.Exited() {
		t.Fatal("apppassd exited")
	}
	d.call(t, token, "appPasswords.list", nil, &list)
	if len(list) != len(before) { // one removed, one added
		t.Errorf("after recovery the list has %d passwords, want %d", len(list), len(before))
	}
	byUUID := streamIndex(t, readWholeStream(t, js))
	for _, a := range append(before, after) {
		if byUUID[a.UUID][apppass.EventCreated] != 1 {
			t.Errorf("%s (%s) has %d created events", a.UUID, a.Name, byUUID[a.UUID][apppass.EventCreated])
		}
	}
	if byUUID[before[1].UUID][apppass.EventRevoked] != 1 {
		t.Errorf("the removed password has %d revoked events", byUUID[before[1].UUID][apppass.EventRevoked])
	}
	t.Logf("%d adds fit before the disk was full; the remove then %s", len(before)-5, map[bool]string{true: "still fit", false: "did not"}[removedOnFull])
}

// TestStartRefusals: what apppassd must not run on stops it at start with
// one line naming the file and what to do, and leaves the file as it was.
func TestStartRefusals(t *testing.T) {
	junkDir := t.TempDir()
	junk := filepath.Join(junkDir, datadir.StoreFile)
	if err := os.WriteFile(junk, bytes.Repeat([]byte("no database here\n"), 50), 0o600); err != nil {
		t.Fatal(err)
	}
	foreignDir := t.TempDir()
	raw, err := sql.Open("sqlite", filepath.Join(foreignDir, datadir.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE mail (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	// A data dir written with another pepper.
	otherPepper := t.TempDir()
	d := start(t, "APPPASS_DATA_DIR="+otherPepper, "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t))
	d.Stop(t)
	if err := os.WriteFile(filepath.Join(otherPepper, datadir.PepperFile), []byte(strings.Repeat("q", 64)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A data dir another apppassd runs on.
	busy := t.TempDir()
	running := start(t, "APPPASS_DATA_DIR="+busy, "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t))

	for _, tc := range []struct {
		what, dataDir string
		want          []string
	}{
		{"a store file that is no database", junkDir, []string{junk, "not an SQLite database"}},
		{"another program's database", foreignDir, []string{"another program"}},
		{"another pepper", otherPepper, []string{"digested with another pepper", "APPPASS_PEPPER"}},
		{"a data dir in use", busy, []string{"in use by another process", "another apppassd"}},
		{"a data dir that cannot be written", testenv.ReadOnlyDir(t), []string{"writable"}},
	} {
		store := filepath.Join(tc.dataDir, datadir.StoreFile)
		before, _ := os.ReadFile(store)
		cmd := exec.Command(binary)
		cmd.Env = childEnv("APPPASS_DATA_DIR="+tc.dataDir, "APPPASS_EMBEDDED_NATS_LISTEN="+freeAddr(t), "APPPASS_LISTEN="+freeAddr(t))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: apppassd exited 0", tc.what)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s: apppassd still running after 30 s", tc.what)
			continue
		}
		lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(stderr.String()), "\n"), func(l string) bool { return l == "" })
		if len(lines) != 1 {
			t.Errorf("%s: stderr has %d lines, want one:\n%s", tc.what, len(lines), stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: stderr %q does not say %q", tc.what, stderr.String(), w)
			}
		}
		if tc.what != "another pepper" && tc.what != "a data dir in use" {
			if after, _ := os.ReadFile(store); !bytes.Equal(after, before) {
				t.Errorf("%s: the store file changed", tc.what)
			}
		}
	}
	// The refused apppassd leaves the running one's ready file alone.
	if r, err := datadir.ReadReady(busy); err != nil || r.PID != running.Pid() {
		t.Errorf("the running apppassd's ready file: %+v, %v", r, err)
	}
}
