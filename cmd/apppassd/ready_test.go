package main_test

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/apppass/apppass/config/datadir"
)

// TestReadyFile: once it listens, apppassd writes where it answers into
// its data dir, without a login, and removes the file when it stops; told
// to choose its ports (127.0.0.1:0), it names the ones it chose; a file a
// killed apppassd left behind does not outlive the next start.
func TestReadyFile(t *testing.T) {
	dir, natsAddr, pprofAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	d := start(t, "APPPASS_DATA_DIR="+dir, "APPPASS_EMBEDDED_NATS_LISTEN="+natsAddr, "APPPASS_PPROF_LISTEN="+pprofAddr)
	r, err := datadir.ReadReady(dir)
	want := datadir.Ready{PID: d.Pid(), HTTP: d.URL, NATS: "nats://" + natsAddr, Metrics: d.URL + "/metrics",
		Pprof: "http://" + pprofAddr + "/debug/pprof/"}
	if err != nil || r != want {
		t.Fatalf("ready file %+v, %v; want %+v", r, err, want)
	}
	path := filepath.Join(dir, datadir.ReadyFile)
	raw, _ := os.ReadFile(path)
	for _, name := range []string{datadir.NATSServiceKeyFile, datadir.NATSGatewayKeyFile, datadir.PepperFile, datadir.UserTokenKeyFile, datadir.GatewayKeyFile, datadir.AdminKeyFile} {
		key, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), strings.TrimSpace(string(key))) {
			t.Fatalf("the ready file holds %s:\n%s", name, raw)
		}
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("ready file mode: %v %v", info, err)
	}
	if code := d.Stop(t); code != 0 {
		t.Fatalf("SIGTERM exit code %d", code)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the ready file outlives a clean stop: %v", err)
	}

	// Ports of its own: the ready file and nats-gateway.url name them.
	cmd := exec.Command(binary)
	cmd.Env = childEnv("APPPASS_DATA_DIR="+dir, "APPPASS_LISTEN=127.0.0.1:0", "APPPASS_EMBEDDED_NATS_LISTEN=127.0.0.1:0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(90 * time.Second)
	for r, err = datadir.ReadReady(dir); err != nil || r.PID != cmd.Process.Pid; r, err = datadir.ReadReady(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("no ready file of pid %d after 90 s: %+v, %v", cmd.Process.Pid, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.HasSuffix(r.HTTP, ":0") || strings.HasSuffix(r.NATS, ":0") {
		t.Fatalf("ready file names port 0: %+v", r)
	}
	for deadline = time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(r.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/readyz: %v", r.HTTP, err)
		}
	}
	gatewayURL, err := os.ReadFile(filepath.Join(dir, datadir.NATSGatewayURLFile))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(strings.TrimSpace(string(gatewayURL)))
	if "nats://"+u.Host != r.NATS {
		t.Fatalf("nats-gateway.url %s, ready file %s", u.Redacted(), r.NATS)
	}
	nc, err := nats.Connect(u.String())
	if err != nil {
		t.Fatalf("connecting to the NATS the ready file names: %v", err)
	}
	nc.Close()

	// Killed, it leaves the file behind; the next start removes it once
	// the data dir is its own, even a start that fails then: its port is
	// taken.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("after SIGKILL: %v", err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	failed := exec.Command(binary)
	failed.Env = childEnv("APPPASS_DATA_DIR="+dir, "APPPASS_LISTEN="+taken.Addr().String(), "APPPASS_EMBEDDED_NATS_LISTEN=127.0.0.1:0")
	if out, err := failed.CombinedOutput(); err == nil || !strings.Contains(string(out), "APPPASS_LISTEN") {
		t.Fatalf("start on a taken port: %v\n%s", err, out)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a killed apppassd's ready file outlives the next start: %v", err)
	}
}
