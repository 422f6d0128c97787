package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apppass/apppass"
)

// target is the daemon under load and what the harness needs to drive it.
type target struct {
	url        string
	natsURL    string
	mongoURI   string
	tokens     *apppass.UserTokens
	gatewayKey string
	digester   *apppass.Digester

	cmd     *exec.Cmd
	dataDir string
	peakRSS atomic.Int64 // bytes
	stop    chan struct{}
	stderr  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var mongoLine = regexp.MustCompile(`embedded FerretDB (mongodb://\S+)`)

// spawn builds apppassd from this module and starts it on the embedded
// default in a fresh data dir, with env added.
func spawn(env ...string) (*target, error) {
	dir, err := os.MkdirTemp("", "apppass-bench")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "apppassd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/apppass/apppass/cmd/apppassd").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building apppassd (run from the repository): %v\n%s", err, out)
	}
	listen, natsListen := freePort(), freePort()
	t := &target{url: "http://" + listen, dataDir: filepath.Join(dir, "data"), stop: make(chan struct{}), stderr: &lockedBuffer{}}
	t.cmd = exec.Command(bin)
	t.cmd.Env = append(os.Environ(), "APPPASS_DATA_DIR="+t.dataDir, "APPPASS_LISTEN="+listen,
		"APPPASS_EMBEDDED_NATS_LISTEN="+natsListen, "APPPASS_MAX_PER_USER=50")
	t.cmd.Env = append(t.cmd.Env, env...)
	t.cmd.Stderr = t.stderr
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(t.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.close()
			return nil, fmt.Errorf("apppassd not ready: %s", t.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := mongoLine.FindStringSubmatch(t.stderr.String()); m != nil {
		t.mongoURI = m[1]
	}
	t.natsURL = "nats://" + natsListen
	if err := t.readKeys(t.dataDir); err != nil {
		t.close()
		return nil, err
	}
	go t.sampleRSS()
	return t, nil
}

// readKeys loads the keys an embedded apppassd keeps in its data dir.
func (t *target) readKeys(dataDir string) error {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dataDir, name))
		return bytes.TrimSpace(b), err
	}
	tokenKey, err := read("user-token.key")
	if err != nil {
		return err
	}
	if t.tokens, err = apppass.NewUserTokens(tokenKey); err != nil {
		return err
	}
	gw, err := read("gateway.key")
	if err != nil {
		return err
	}
	t.gatewayKey = string(gw)
	pepper, err := read("pepper")
	if err != nil {
		return err
	}
	t.digester, err = apppass.NewDigester(pepper)
	return err
}

func (t *target) sampleRSS() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		if rss := readRSS(t.cmd.Process.Pid); rss > t.peakRSS.Load() {
			t.peakRSS.Store(rss)
		}
	}
}

// readRSS returns a process's resident set size in bytes (Linux).
func readRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (t *target) peakRSSMB() float64 { return float64(t.peakRSS.Load()) / (1 << 20) }

func (t *target) close() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = t.cmd.Process.Kill()
	}
	os.RemoveAll(filepath.Dir(t.dataDir))
}

// userToken mints a token for a bench user.
func (t *target) userToken(i int) (apppass.User, string) {
	u := apppass.User{ContextID: 1, UserID: int64(1000 + i), Login: fmt.Sprintf("bench%d@example.com", i)}
	return u, t.tokens.Mint(u, 24*time.Hour, time.Now())
}
