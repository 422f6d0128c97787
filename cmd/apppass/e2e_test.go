package main

// These tests run the real apppass binary the way Dovecot does (credentials
// on fd 3, SERVICE and TCPREMOTEIP in the environment, the reply program as
// argument) against the real apppassd binary.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/rpc/errcode"
	"github.com/apppass/apppass/storage/ferretdb"
)

var (
	buildOnce  sync.Once
	buildDir   string
	buildErr   error
	apppassd   string // the daemon binary
	apppassCLI string // this command, built
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds apppassd and apppass once per test binary.
func binaries(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "apppass-cli-e2e"); buildErr != nil {
			return
		}
		if apppassd, buildErr = gatewaytest.Build(buildDir, "github.com/apppass/apppass/cmd/apppassd", "apppassd", gatewaytest.RaceEnabled); buildErr != nil {
			return
		}
		apppassCLI, buildErr = gatewaytest.Build(buildDir, "github.com/apppass/apppass/cmd/apppass", "apppass", gatewaytest.RaceEnabled)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// replyProgram writes a reply program that records its arguments and
// environment in the file named by $REPLY_OUT, as Dovecot's
// checkpassword-reply would read them.
func replyProgram(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "reply")
	script := "#!/bin/sh\n{ echo \"ARGS=$*\"; env; } > \"$REPLY_OUT\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

type outcome struct {
	code   int
	stderr string
	reply  map[string]string // the reply program's environment; nil if it did not run
	raw    string
	took   time.Duration
}

// checkpassword runs `apppass checkpassword <reply> extra-arg` with input on
// fd 3 (none if input is nil) and env on top of a Dovecot-like environment.
func checkpassword(t *testing.T, reply string, input []byte, env ...string) outcome {
	t.Helper()
	out := filepath.Join(t.TempDir(), "reply.out")
	cmd := exec.Command(apppassCLI, "checkpassword", reply, "extra-arg")
	cmd.Env = gatewaytest.ChildEnv(append([]string{"SERVICE=imap", "TCPREMOTEIP=192.0.2.5", "REPLY_OUT=" + out, "PATH=/usr/bin:/bin"}, env...)...)
	var stderr gatewaytest.Buffer
	cmd.Stderr = &stderr
	if input != nil {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = w.Write(input); w.Close() }()
		cmd.ExtraFiles = []*os.File{r}
		defer r.Close()
	}
	start := time.Now()
	err := cmd.Run()
	o := outcome{code: cmd.ProcessState.ExitCode(), stderr: stderr.String(), took: time.Since(start)}
	if err != nil && o.code < 0 {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(out); err == nil {
		o.raw = string(raw)
		o.reply = map[string]string{}
		for _, line := range strings.Split(o.raw, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				o.reply[k] = v
			}
		}
	}
	return o
}

func creds(login, password string) []byte { return []byte(login + "\x00" + password + "\x00\x00") }

func TestCheckpasswordAgainstApppassd(t *testing.T) {
	binaries(t)
	d := gatewaytest.StartDaemon(t, apppassd)
	reply := replyProgram(t)
	mail := d.Add(t, "mail", "Phone")
	cal := d.Add(t, "caldav", "Calendar")
	sidecar := []string{"APPPASS_URL=" + d.URL, "APPPASS_GATEWAY_KEY=" + d.GatewayKey}
	var secrets []string
	for _, p := range []string{mail.Password, cal.Password} {
		secrets = append(secrets, p, gatewaytest.Sloppy(p))
	}
	check := func(name string, o outcome, want int) {
		t.Helper()
		if o.code != want {
			t.Fatalf("%s: exit %d, want %d; stderr: %s", name, o.code, want, o.stderr)
		}
		for _, s := range secrets {
			if strings.Contains(o.stderr, s) || strings.Contains(o.raw, s) {
				t.Fatalf("%s: the password leaked to stderr or the reply program's environment", name)
			}
		}
		if (want == 0) != (o.reply != nil) {
			t.Fatalf("%s: reply program ran: %v", name, o.reply != nil)
		}
	}

	o := checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), sidecar...)
	check("right password", o, 0)
	if o.reply["USER"] != gatewaytest.DemoLogin || o.reply["apppass_uuid"] != mail.UUID ||
		o.reply["EXTRA"] != "apppass_uuid" || o.reply["ARGS"] != "extra-arg" || o.reply["SERVICE"] != "imap" {
		t.Fatalf("reply environment: %s", o.raw)
	}
	if o.stderr != "" {
		t.Fatalf("stderr on success: %s", o.stderr)
	}

	// Typed sloppily, with the login in another case: USER is the login
	// as the sidecar knows it.
	o = checkpassword(t, reply, creds("Demo@EXAMPLE.com", gatewaytest.Sloppy(mail.Password)), sidecar...)
	check("sloppy password", o, 0)
	if o.reply["USER"] != gatewaytest.DemoLogin {
		t.Fatalf("USER=%q", o.reply["USER"])
	}
	for _, service := range []string{"pop3", "smtp", "submission"} {
		check("SERVICE="+service, checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), append(sidecar, "SERVICE="+service)...), 0)
	}

	// The client address reached the sidecar.
	var list []struct {
		UUID      string
		LastLogin *struct{ IP string }
	}
	if e := d.Call(t, d.Token, "appPasswords.list", nil, &list); e != nil {
		t.Fatal(e.Message)
	}
	for _, p := range list {
		if p.UUID == mail.UUID && (p.LastLogin == nil || p.LastLogin.IP != "192.0.2.5") {
			t.Fatalf("lastLogin: %+v", p.LastLogin)
		}
	}

	check("wrong password", checkpassword(t, reply, creds(gatewaytest.DemoLogin, "aaaa-bbbb-cccc-dddd"), sidecar...), 1)
	check("unknown login", checkpassword(t, reply, creds("nobody@example.com", mail.Password), sidecar...), 1)
	check("caldav password on imap", checkpassword(t, reply, creds(gatewaytest.DemoLogin, cal.Password), sidecar...), 1)
	o = checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), append(sidecar, "SERVICE=sieve")...)
	check("SERVICE=sieve", o, 1)
	if !strings.Contains(o.stderr, "-32602") {
		t.Fatalf("SERVICE=sieve: stderr %q", o.stderr)
	}
	o = checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), "APPPASS_URL="+d.URL, "APPPASS_GATEWAY_KEY=not-a-gateway-key-at-all")
	check("wrong gateway key", o, 111)
	if !strings.Contains(o.stderr, "-32001") {
		t.Fatalf("wrong gateway key: stderr %q", o.stderr)
	}
	// A user token is not a gateway key either.
	check("user token as key", checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), "APPPASS_URL="+d.URL, "APPPASS_GATEWAY_KEY="+d.Token), 111)

	// The key from a file, as the Dovecot example configures it.
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	if err := os.WriteFile(keyFile, []byte(d.GatewayKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("key file", checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), "APPPASS_URL="+d.URL, "APPPASS_GATEWAY_KEY_FILE="+keyFile), 0)

	// Called wrongly.
	check("no fd 3", checkpassword(t, reply, nil, sidecar...), 2)
	check("malformed", checkpassword(t, reply, []byte(gatewaytest.DemoLogin+" "+mail.Password), sidecar...), 2)
	check("no key", checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), "APPPASS_URL="+d.URL), 2)
	check("lookup", checkpassword(t, reply, creds(gatewaytest.DemoLogin, ""), append(sidecar, "AUTHORIZED=1")...), 3)

	// Throttled: after five failures from one address even the right
	// password is refused there for a while (exit 1, logged), and not from
	// another address. A fresh password: one apppassd has just accepted is
	// answered from its cache, unthrottled.
	fresh := d.Add(t, "mail", "Laptop")
	secrets = append(secrets, fresh.Password, gatewaytest.Sloppy(fresh.Password))
	from := append(sidecar, "TCPREMOTEIP=192.0.2.99")
	for range 5 {
		check("failure before throttling", checkpassword(t, reply, creds(gatewaytest.DemoLogin, "aaaa-bbbb-cccc-dddd"), from...), 1)
	}
	o = checkpassword(t, reply, creds(gatewaytest.DemoLogin, fresh.Password), from...)
	check("throttled", o, 1)
	if !strings.Contains(o.stderr, "throttled") {
		t.Fatalf("throttled: stderr %q", o.stderr)
	}
	check("another address", checkpassword(t, reply, creds(gatewaytest.DemoLogin, fresh.Password), sidecar...), 0)

	// Revoked: refused at once.
	d.Remove(t, mail.UUID)
	check("revoked", checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), sidecar...), 1)

	// The sidecar gone: a temporary failure, not a wrong password.
	d.Stop(t)
	o = checkpassword(t, reply, creds(gatewaytest.DemoLogin, cal.Password), append(sidecar, "SERVICE=imap")...)
	check("sidecar stopped", o, 111)
	if !strings.Contains(o.stderr, "connection refused") {
		t.Fatalf("sidecar stopped: stderr %q", o.stderr)
	}
}

// TestCheckpasswordTimeout: a sidecar that accepts the connection and never
// answers is a temporary failure after APPPASS_TIMEOUT.
func TestCheckpasswordTimeout(t *testing.T) {
	binaries(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	o := checkpassword(t, replyProgram(t), creds(gatewaytest.DemoLogin, "abcd-efgh-ijkl-mnop"),
		"APPPASS_URL=http://"+l.Addr().String(), "APPPASS_GATEWAY_KEY=k", "APPPASS_TIMEOUT=300ms")
	if o.code != 111 || o.took > 5*time.Second || o.reply != nil {
		t.Fatalf("exit %d after %v; stderr %s", o.code, o.took, o.stderr)
	}
}

// TestCheckpasswordStoreUnavailable: apppassd answers -32050 when its
// MongoDB is gone, and that is a temporary failure. apppassd reaches the
// store through a TCP relay the test cuts, as a network failure would.
func TestCheckpasswordStoreUnavailable(t *testing.T) {
	binaries(t)
	fdb, err := ferretdb.Start(t.TempDir(), testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fdb.Stop)
	target := strings.TrimPrefix(fdb.URI, "mongodb://")
	target, _, _ = strings.Cut(target, "/")
	relay := gatewaytest.StartRelay(t, target)
	tokenKey := gatewaytest.RandomHex(32)
	d := gatewaytest.StartDaemon(t, apppassd, "APPPASS_MONGODB_URI="+strings.Replace(fdb.URI, target, relay.Addr, 1),
		"APPPASS_PEPPER="+gatewaytest.RandomHex(32), "APPPASS_USER_TOKEN_KEY="+tokenKey)
	tokens, err := apppass.NewUserTokens([]byte(tokenKey))
	if err != nil {
		t.Fatal(err)
	}
	d.Token = tokens.Mint(apppass.User{ContextID: 1, UserID: 3, Login: gatewaytest.DemoLogin}, time.Hour, time.Now())
	mail := d.Add(t, "mail", "Phone")
	reply := replyProgram(t)
	sidecar := []string{"APPPASS_URL=" + d.URL, "APPPASS_GATEWAY_KEY=" + d.GatewayKey, "APPPASS_TIMEOUT=20s"}
	if o := checkpassword(t, reply, creds(gatewaytest.DemoLogin, mail.Password), sidecar...); o.code != 0 {
		t.Fatalf("before the outage: exit %d: %s", o.code, o.stderr)
	}

	// A password apppassd has not seen yet (a positive answer may be cached).
	cold := d.Add(t, "mail", "Tablet")
	relay.Cut()
	o := checkpassword(t, reply, creds(gatewaytest.DemoLogin, cold.Password), sidecar...)
	if o.code != 111 || !strings.Contains(o.stderr, fmt.Sprint(errcode.Unavailable)) || o.reply != nil {
		t.Fatalf("MongoDB down: exit %d after %v; stderr %s", o.code, o.took, o.stderr)
	}

	// apppass health: apppassd answers but is not ready (1), with the reason.
	r := cli(t, []string{"APPPASS_URL=" + d.URL, "APPPASS_TIMEOUT=20s"}, "", "health")
	if r.code != 1 || !strings.Contains(r.stdout, "unavailable") || !strings.HasPrefix(r.stderr, "apppass health: not ready: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("health with MongoDB down: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = cli(t, []string{"APPPASS_URL=" + d.URL, "APPPASS_TIMEOUT=20s"}, "", "health", "--json")
	if r.code != 1 || !strings.Contains(r.stdout, `"status":"unavailable"`) {
		t.Fatalf("health --json with MongoDB down: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
