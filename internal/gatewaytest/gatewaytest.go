// Package gatewaytest runs the real programs the gateway tests need: it
// builds apppassd and the apppass CLI, starts apppassd on the embedded
// default with free loopback ports, and runs external servers (nginx,
// Dovecot) as child processes that are stopped when the test ends, with
// their logs printed if it failed. Nothing here is a mock.
package gatewaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/internal/syncbuf"
	"github.com/apppass/apppass/rpc/client"
)

// RequireEnv names the variable that turns a missing nginx or Dovecot
// from a skipped test into a failed one (CI sets it).
const RequireEnv = "APPPASS_REQUIRE_GATEWAYS"

// Missing skips the test because something it needs is not installed, or
// fails it when APPPASS_REQUIRE_GATEWAYS=1.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", msg, RequireEnv)
	}
	t.Skip(msg + " (set " + RequireEnv + "=1 to make this a failure)")
}

// Build compiles the main package pkg (an import path) to dir/name and
// returns the path. race adds -race.
func Build(dir, pkg, name string, race bool) (string, error) {
	out := dir + "/" + name
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	if !race {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// FreeAddr returns a free 127.0.0.1:port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Buffer is a bytes.Buffer safe for concurrent writes and reads.
type Buffer = syncbuf.Buffer

// Process is a server started by a test.
type Process struct {
	Name   string
	Output *Buffer // stdout and stderr
	cmd    *exec.Cmd
	done   chan struct{}
}

// Start runs path with args as a child in a process group of its own. At
// the end of the test it gets SIGTERM (then SIGKILL for the group), and if
// the test failed its output and the files in logs are printed.
func Start(t testing.TB, name string, env []string, logs []string, path string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Output: &Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.Output, p.Output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output.String())
			for _, f := range logs {
				b, err := os.ReadFile(f)
				if err == nil {
					t.Logf("%s log %s:\n%s", name, f, b)
				}
			}
		}
	})
	return p
}

// Stop ends the process: SIGTERM, and after 10 s SIGKILL to its group.
func (p *Process) Stop() {
	pid := p.cmd.Process.Pid
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	// Anything its children left in the group (nothing, normally).
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitTCP waits until addr accepts connections, failing the test if p
// exits first or 30 s pass.
func (p *Process) WaitTCP(t testing.TB, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if p.Exited() {
				t.Fatalf("%s exited before listening on %s:\n%s", p.Name, addr, p.Output.String())
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not listening on %s after 30 s:\n%s", p.Name, addr, p.Output.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Daemon is a running apppassd.
type Daemon struct {
	URL        string // http://127.0.0.1:port
	Addr       string // 127.0.0.1:port
	Token      string // the example user token it printed (demo@example.com)
	GatewayKey string
	DataDir    string // its APPPASS_DATA_DIR
	Stdout     *Buffer
	Stderr     *Buffer
	cmd        *exec.Cmd
	done       chan struct{}
}

// DemoLogin is the login of the user the example token is for.
const DemoLogin = "demo@example.com"

var tokenLine = regexp.MustCompile(`export TOKEN=(\S+)`)

// StartDaemon runs the apppassd binary on the embedded default (a fresh
// data dir, free ports) with a gateway key of its own plus env, waits until
// /readyz answers 200 and reads the user token it printed (unless env sets
// APPPASS_USER_TOKEN_KEY: then it prints none). It is killed at the end of
// the test.
func StartDaemon(t testing.TB, binary string, env ...string) *Daemon {
	t.Helper()
	gatewayKey := "gw-" + RandomHex(16)
	base := []string{
		"APPPASS_DATA_DIR=" + t.TempDir(),
		"APPPASS_EMBEDDED_NATS_LISTEN=" + FreeAddr(t),
		"APPPASS_SERVICE_KEYS=test-gateway:gateway:" + gatewayKey,
	}
	d := StartBinary(t, binary, append(base, env...)...)
	d.GatewayKey = gatewayKey
	deadline := time.Now().Add(90 * time.Second)
	for !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "APPPASS_USER_TOKEN_KEY=") }) {
		if m := tokenLine.FindStringSubmatch(d.Stdout.String()); m != nil {
			d.Token = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("apppassd printed no user token: %s", d.Stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// StartBinary runs an apppassd binary with the environment env (and a free
// APPPASS_LISTEN unless env sets one, nothing else set for it) and waits
// until /readyz answers 200. It is killed at the end of the test; if the
// test failed, the end of its stderr is printed.
func StartBinary(t testing.TB, binary string, env ...string) *Daemon {
	t.Helper()
	addr := ""
	for _, kv := range env {
		if a, ok := strings.CutPrefix(kv, "APPPASS_LISTEN="); ok {
			addr = a
		}
	}
	if addr == "" {
		addr = FreeAddr(t)
	}
	d := &Daemon{URL: "http://" + addr, Addr: addr, Stdout: &Buffer{}, Stderr: &Buffer{}, done: make(chan struct{})}
	for _, kv := range env {
		if dir, ok := strings.CutPrefix(kv, "APPPASS_DATA_DIR="); ok {
			d.DataDir = dir
		}
	}
	d.cmd = exec.Command(binary)
	d.cmd.Env = ChildEnv(append([]string{"APPPASS_LISTEN=" + addr}, env...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.Stdout, d.Stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.Kill()
		if t.Failed() {
			t.Logf("apppassd stderr (last 8 kB):\n%s", lastBytes(d.Stderr.String(), 8<<10))
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if d.Exited() {
			t.Fatalf("apppassd exited early: %s", d.Stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("apppassd not ready after 90 s: %s", d.Stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// ChildEnv is the test's environment without APPPASS_ settings, plus env.
func ChildEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "APPPASS_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// Stop sends SIGTERM, waits for apppassd to exit and returns its exit code.
func (d *Daemon) Stop(t testing.TB) int {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.Kill()
		t.Fatal("apppassd did not exit within 60 s of SIGTERM")
	}
	return d.cmd.ProcessState.ExitCode()
}

// Kill kills apppassd (SIGKILL, if it still runs) and waits for it.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// NATSURL is the URL a gateway subscribes to the embedded NATS server
// with: the gateway user's, which apppassd writes in its data dir.
func (d *Daemon) NATSURL(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.DataDir, datadir.NATSGatewayURLFile))
	if err != nil {
		t.Fatalf("the embedded NATS's gateway URL: %v", err)
	}
	return strings.TrimSpace(string(raw))
}

// UserToken mints a user token for user, valid for ttl, with the
// user-token key apppassd generated in its data dir (as `apppass token`
// does).
func (d *Daemon) UserToken(t testing.TB, user apppass.User, ttl time.Duration) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.DataDir, datadir.UserTokenKeyFile))
	if err != nil {
		t.Fatalf("the user-token key: %v", err)
	}
	tokens, err := apppass.NewUserTokens([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		t.Fatal(err)
	}
	return tokens.Mint(user, ttl, time.Now())
}

// Exited reports whether apppassd has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Call makes one JSON-RPC call over HTTP. A JSON-RPC error is returned;
// anything else going wrong fails the test. out may be nil.
func (d *Daemon) Call(t testing.TB, bearer, method string, params, out any) *client.Error {
	t.Helper()
	c := client.Client{URL: d.URL + "/rpc", Bearer: bearer}
	err := c.Call(context.Background(), method, params, out)
	var answered *client.Error
	if errors.As(err, &answered) {
		return answered
	}
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return nil
}

// Password is an app password as appPasswords.add shows it.
type Password struct {
	UUID     string `json:"uuid"`
	Login    string `json:"login"`
	Password string `json:"password"`
	AppScope string `json:"appScope"`
}

// Add adds an app password for the demo user.
func (d *Daemon) Add(t testing.TB, appScope, name string) Password {
	t.Helper()
	var p Password
	if e := d.Call(t, d.Token, "appPasswords.add", map[string]any{"appScope": appScope, "appName": name}, &p); e != nil {
		t.Fatalf("add %s: %d %s", appScope, e.Code, e.Message)
	}
	return p
}

// Remove revokes an app password of the demo user.
func (d *Daemon) Remove(t testing.TB, uuid string) {
	t.Helper()
	if e := d.Call(t, d.Token, "appPasswords.remove", map[string]any{"uuid": uuid}, nil); e != nil {
		t.Fatalf("remove %s: %d %s", uuid, e.Code, e.Message)
	}
}

// Sloppy is how a user might type p: upper case, without dashes.
func Sloppy(p string) string {
	return strings.ToUpper(strings.ReplaceAll(p, "-", ""))
}

// Relay forwards TCP connections to a target until cut: a network path a
// test can break.
type Relay struct {
	Addr   string
	target string
	l      net.Listener
	mu     sync.Mutex
	conns  []net.Conn
}

// StartRelay listens on a free loopback port and forwards to target.
func StartRelay(t testing.TB, target string) *Relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{Addr: l.Addr().String(), target: target}
	t.Cleanup(r.Cut)
	r.serve(l)
	return r
}

// Restore listens again on the relay's address after Cut: the path is back.
func (r *Relay) Restore(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	r.serve(l)
}

func (r *Relay) serve(l net.Listener) {
	r.mu.Lock()
	r.l, r.conns = l, nil
	r.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// Cut closes the listener and every connection through it.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.l.Close()
	for _, c := range r.conns {
		c.Close()
	}
}
