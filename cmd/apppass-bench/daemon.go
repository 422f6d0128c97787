package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/internal/syncbuf"
	"github.com/apppass/apppass/storage/ferretdb"
	"github.com/apppass/apppass/storage/mongo"
	"github.com/apppass/apppass/storage/sqlite"
)

// target is the daemon under load and what the harness needs to drive it.
type target struct {
	url        string
	natsURL    string
	store      string // "sqlite" or "mongo"
	mongoURI   string // for "mongo": the FerretDB the bench started
	tokens     *apppass.UserTokens
	gatewayKey string
	adminKey   string
	digester   *apppass.Digester
	ferret     *ferretdb.Server

	cmd     *exec.Cmd
	dataDir string
	peakRSS atomic.Int64 // bytes
	stop    chan struct{}
	stderr  *syncbuf.Buffer
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// spawn builds apppassd from this module and starts it in a fresh data
// dir on the store named ("sqlite", the embedded default, or "mongo", the
// MongoDB adapter on a FerretDB the bench starts), with env added. apppassd
// chooses its own ports, which the bench reads from its ready file; for
// MongoDB the bench chooses every key itself.
func spawn(store string, env ...string) (*target, error) {
	dir, err := os.MkdirTemp("", "apppass-bench")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "apppassd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/apppass/apppass/cmd/apppassd").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building apppassd (run from the repository): %v\n%s", err, out)
	}
	t := &target{store: store, dataDir: filepath.Join(dir, "data"), stop: make(chan struct{}), stderr: &syncbuf.Buffer{}}
	t.cmd = exec.Command(bin)
	t.cmd.Env = append(os.Environ(), "APPPASS_DATA_DIR="+t.dataDir, "APPPASS_LISTEN=127.0.0.1:0",
		"APPPASS_EMBEDDED_NATS_LISTEN=127.0.0.1:0", "APPPASS_MAX_PER_USER=50")
	if store == "mongo" {
		if err := t.startMongo(dir); err != nil {
			return nil, err
		}
	}
	t.cmd.Env = append(t.cmd.Env, env...)
	t.cmd.Stderr = t.stderr
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	if err := t.waitReady(60 * time.Second); err != nil {
		t.close()
		return nil, err
	}
	if store != "mongo" {
		if err := t.readKeys(t.dataDir); err != nil {
			t.close()
			return nil, err
		}
	}
	go t.sampleRSS()
	return t, nil
}

// startMongo starts the FerretDB apppassd's MongoDB adapter runs on, with
// keys of the bench's choosing.
func (t *target) startMongo(dir string) error {
	var err error
	if t.ferret, err = ferretdb.Start(filepath.Join(dir, "ferretdb"), slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	t.mongoURI = t.ferret.URI
	pepper, tokenKey := randomKey(), randomKey()
	t.gatewayKey, t.adminKey = randomKey(), randomKey()
	if t.digester, err = apppass.NewDigester([]byte(pepper)); err != nil {
		return err
	}
	if t.tokens, err = apppass.NewUserTokens([]byte(tokenKey)); err != nil {
		return err
	}
	t.cmd.Env = append(t.cmd.Env, "APPPASS_MONGODB_URI="+t.mongoURI, "APPPASS_PEPPER="+pepper,
		"APPPASS_USER_TOKEN_KEY="+tokenKey, "APPPASS_SERVICE_KEYS=bench-gw:gateway:"+t.gatewayKey+",bench-admin:admin:"+t.adminKey)
	return nil
}

// waitReady waits for apppassd's ready file (this process's: a file of
// another pid is not its) and for /readyz to answer 200, then takes the
// addresses: HTTP from the ready file, and the embedded NATS's URL with
// the gateway user's login from the data dir.
func (t *target) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if r, err := datadir.ReadReady(t.dataDir); err == nil && r.PID == t.cmd.Process.Pid {
			t.url = r.HTTP
			if resp, err := http.Get(t.url + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apppassd not ready: %s", t.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	u, err := os.ReadFile(filepath.Join(t.dataDir, datadir.NATSGatewayURLFile))
	if err != nil {
		return err
	}
	t.natsURL = strings.TrimSpace(string(u))
	return nil
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// openStore opens the daemon's store beside it, for seeding: the same
// SQLite file (SQLite serves two handles safely; only an exclusive open,
// as apppassd's own, would refuse), or the same MongoDB database.
func (t *target) openStore(ctx context.Context) (apppass.Store, error) {
	if t.store == "mongo" {
		return mongo.Open(ctx, t.mongoURI, "apppass")
	}
	return sqlite.Open(filepath.Join(t.dataDir, datadir.StoreFile), sqlite.Options{})
}

// readKeys loads the keys an embedded apppassd keeps in its data dir.
func (t *target) readKeys(dataDir string) error {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dataDir, name))
		return bytes.TrimSpace(b), err
	}
	tokenKey, err := read(datadir.UserTokenKeyFile)
	if err != nil {
		return err
	}
	if t.tokens, err = apppass.NewUserTokens(tokenKey); err != nil {
		return err
	}
	gw, err := read(datadir.GatewayKeyFile)
	if err != nil {
		return err
	}
	admin, err := read(datadir.AdminKeyFile)
	if err != nil {
		return err
	}
	t.gatewayKey, t.adminKey = string(gw), string(admin)
	pepper, err := read(datadir.PepperFile)
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
	if t.ferret != nil {
		t.ferret.Stop()
	}
	os.RemoveAll(filepath.Dir(t.dataDir))
}

// userToken mints a token for a bench user.
func (t *target) userToken(i int) (apppass.User, string) {
	u := apppass.User{ContextID: 1, UserID: int64(1000 + i), Login: fmt.Sprintf("bench%d@example.com", i)}
	return u, t.tokens.Mint(u, 24*time.Hour, time.Now())
}

// settleAfterDrain is how long apppassd keeps working once its outbox is
// empty: the embedded NATS's acked events are kept 3 s
// (natsserver.KeepPublished) and purged by the relay's next sweep.
const settleAfterDrain = 5 * time.Second

// settle waits until apppassd's outbox is empty (GET /readyz's
// pendingEvents) and then settleAfterDrain, at most a minute in all.
func (t *target) settle(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var ready struct {
			PendingEvents *int64 `json:"pendingEvents"`
		}
		resp, err := http.Get(t.url + "/readyz")
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&ready)
			resp.Body.Close()
		}
		if err == nil && ready.PendingEvents != nil && *ready.PendingEvents == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apppassd's outbox did not drain within a minute (%v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settleAfterDrain):
		return nil
	}
}
