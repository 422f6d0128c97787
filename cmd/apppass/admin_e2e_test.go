package main

// The admin CLI, built, against the real apppassd on the embedded default
// with no service keys configured: the keys come from the data dir, as for
// a newcomer who ran `go run ./cmd/apppassd`.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/internal/gatewaytest"
)

type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs the built apppass with args, env (and nothing else of APPPASS_)
// and stdin, in an empty directory (so ./data is not found by accident).
func cli(t *testing.T, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(apppassCLI, args...)
	cmd.Env = gatewaytest.ChildEnv(env...)
	cmd.Dir = t.TempDir()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr gatewaytest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	if err != nil && r.code < 0 {
		t.Fatal(err)
	}
	return r
}

var passwordPattern = regexp.MustCompile(`\b[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}\b`)

func TestAdminCLIAgainstApppassd(t *testing.T) {
	binaries(t)
	dataDir := t.TempDir()
	// No service keys: apppassd generates gateway.key and admin.key.
	d := gatewaytest.StartDaemon(t, apppassd, "APPPASS_SERVICE_KEYS=", "APPPASS_DATA_DIR="+dataDir)
	readKey := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(raw))
	}
	adminSecret, gatewaySecret, tokenKey := readKey(datadir.AdminKeyFile), readKey(datadir.GatewayKeyFile), readKey(datadir.UserTokenKeyFile)
	if len(adminSecret) < 16 || adminSecret == gatewaySecret {
		t.Fatalf("admin.key: %d characters, same as gateway.key: %v", len(adminSecret), adminSecret == gatewaySecret)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.Stdout.String(), "Admin CLI") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(d.Stdout.String(), "go run ./cmd/apppass list --context 1 --user 3 --login demo@example.com") {
		t.Fatalf("the welcome text does not mention the admin CLI:\n%s", d.Stdout.String())
	}

	env := []string{"APPPASS_URL=" + d.URL, "APPPASS_DATA_DIR=" + dataDir}
	user := []string{"--context", "1", "--user", "3", "--login", gatewaytest.DemoLogin}
	var outputs []cliResult // every run, checked for secrets at the end
	do := func(name string, want int, stdin string, args ...string) cliResult {
		t.Helper()
		r := cli(t, env, stdin, args...)
		outputs = append(outputs, r)
		if r.code != want {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", name, r.code, want, r.stdout, r.stderr)
		}
		if want != 0 && (strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "apppass "+args[0]+": ")) {
			t.Fatalf("%s: want one error line on stderr, got %q", name, r.stderr)
		}
		return r
	}
	with := func(args ...string) []string { return append(append([]string{}, args...), user...) }

	// token: a token apppassd accepts, for that user.
	r := do("token", 0, "", with("token", "--ttl", "10m")...)
	token := strings.TrimSpace(r.stdout)
	if strings.Count(r.stdout, "\n") != 1 || strings.Count(token, ".") != 2 {
		t.Fatalf("token output: %q", r.stdout)
	}
	var viaToken gatewaytest.Password
	if e := d.Call(t, token, "appPasswords.add", map[string]any{"appScope": "drive", "appName": "Via token"}, &viaToken); e != nil {
		t.Fatalf("apppassd refused the minted token: %d %s", e.Code, e.Message)
	}

	// apps
	r = do("apps", 0, "", "apps")
	if !regexp.MustCompile(`(?m)^NAME\s+DISPLAY NAME\s+PROTOCOLS\s+SCOPES$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^mail\s+Mail App\s+imap,pop3,smtp\s+read_mail`).MatchString(r.stdout) {
		t.Fatalf("apps table:\n%s", r.stdout)
	}
	var apps []apppass.App
	if err := json.Unmarshal([]byte(do("apps --json", 0, "", "apps", "--json").stdout), &apps); err != nil || len(apps) != 7 || apps[0].Name != "mail" {
		t.Fatalf("apps --json: %v %+v", err, apps)
	}

	// add (table), then list shows it, as a table and as JSON, next to the
	// one added with the token.
	r = do("add", 0, "", with("add", "--app", "mail", "--name", "CLI phone", "--idle-expiry", "720h", "--allowed-ip", "192.0.2.0/24", "--allowed-ip", "2001:db8::1")...)
	password := passwordPattern.FindString(r.stdout)
	uuid := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`).FindString(r.stdout)
	if password == "" || uuid == "" || !strings.Contains(r.stdout, "PASSWORD") || !strings.Contains(r.stdout, "shown only this once") {
		t.Fatalf("add output:\n%s", r.stdout)
	}
	r = do("list", 0, "", with("list")...)
	if !regexp.MustCompile(`(?m)^UUID\s+NAME\s+APP\s+CREATED\s+LAST LOGIN\s+LIMITS$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^`+uuid+`\s+CLI phone\s+mail\s+\S+\s+never\s+idle 720h0m0s; from 192\.0\.2\.0/24,2001:db8::1/128$`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, viaToken.UUID) {
		t.Fatalf("list table:\n%s", r.stdout)
	}
	var list []listed
	if err := json.Unmarshal([]byte(do("list --json", 0, "", with("list", "--json")...).stdout), &list); err != nil || len(list) != 2 {
		t.Fatalf("list --json: %v %+v", err, list)
	}
	if list[0].UUID != uuid || list[0].Name != "CLI phone" || list[0].IdleExpiry == nil || len(list[0].AllowedIPs) != 2 || list[1].UUID != viaToken.UUID {
		t.Fatalf("list --json: %+v", list)
	}

	// authenticate, the password on stdin: accepted (0), from an address
	// it allows; refused (1) when wrong or from elsewhere.
	r = do("authenticate", 0, password+"\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "imap", "--ip", "192.0.2.7")
	if !strings.HasPrefix(r.stdout, "Accepted.") || !strings.Contains(r.stdout, uuid) || r.stderr != "" {
		t.Fatalf("authenticate: %q %q", r.stdout, r.stderr)
	}
	r = do("authenticate --json", 0, gatewaytest.Sloppy(password), "authenticate", "--json", "--login", "Demo@Example.com", "--protocol", "smtp", "--ip", "2001:db8::1")
	var accepted struct{ UUID, Login string }
	if err := json.Unmarshal([]byte(r.stdout), &accepted); err != nil || accepted.UUID != uuid || accepted.Login != gatewaytest.DemoLogin {
		t.Fatalf("authenticate --json: %v %q", err, r.stdout)
	}
	r = do("wrong password", 1, "aaaa-bbbb-cccc-dddd\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "imap", "--ip", "192.0.2.7")
	if !strings.Contains(r.stderr, "refused") || r.stdout != "" {
		t.Fatalf("wrong password: %q %q", r.stdout, r.stderr)
	}
	do("not an allowed address", 1, password+"\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "imap", "--ip", "198.51.100.1")
	do("another app's protocol", 1, password+"\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "caldav", "--ip", "192.0.2.7")
	r = do("unknown protocol", 1, password+"\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "gopher")
	if !strings.Contains(r.stderr, "-32602") {
		t.Fatalf("unknown protocol: %q", r.stderr)
	}
	// With only the admin key (no gateway key anywhere), authenticate uses it.
	r = cli(t, []string{"APPPASS_URL=" + d.URL, "APPPASS_DATA_DIR=" + t.TempDir(), "APPPASS_ADMIN_KEY=" + adminSecret}, password,
		"authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "pop3", "--ip", "192.0.2.8")
	outputs = append(outputs, r)
	if r.code != 0 {
		t.Fatalf("authenticate with the admin key: exit %d: %s", r.code, r.stderr)
	}

	// remove: gone, and a second remove is "no such app password".
	r = do("remove", 0, "", with("remove", uuid)...)
	if r.stdout != "Removed "+uuid+".\n" {
		t.Fatalf("remove: %q", r.stdout)
	}
	do("revoked password", 1, password+"\n", "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "imap", "--ip", "192.0.2.7")
	r = do("remove again", 1, "", append([]string{"remove", "--json", uuid}, user...)...)
	if !strings.Contains(r.stderr, "-32004") {
		t.Fatalf("remove again: %q", r.stderr)
	}
	// Another user's password is not this user's to remove.
	r = do("other user's uuid", 1, "", "remove", viaToken.UUID, "--context", "1", "--user", "4", "--login", "other@example.com")
	if !strings.Contains(r.stderr, "-32004") {
		t.Fatalf("other user's uuid: %q", r.stderr)
	}
	if r = do("remove --json", 0, "", with("remove", "--json", viaToken.UUID)...); strings.TrimSpace(r.stdout) != `{"result":"OK"}` {
		t.Fatalf("remove --json: %q", r.stdout)
	}
	if r = do("list empty", 0, "", with("list")...); r.stdout != "No app passwords for demo@example.com.\n" {
		t.Fatalf("empty list: %q", r.stdout)
	}
	if r = do("list empty --json", 0, "", with("list", "--json")...); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("empty list --json: %q", r.stdout)
	}

	// remove-all: one app's, then the rest, with the counts.
	var added []string
	for _, app := range []string{"mail", "caldav", "caldav", "eas"} {
		r = do("add --json", 0, "", with("add", "--json", "--app", app, "--name", "bulk "+app, "--expires", "24h")...)
		var p struct{ Password, Expires string }
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || !passwordPattern.MatchString(p.Password) || p.Expires == "" {
			t.Fatalf("add --json: %v %q", err, r.stdout)
		}
		added = append(added, p.Password)
	}
	if r = do("remove-all --app", 0, "", with("remove-all", "--app", "caldav")...); r.stdout != "Removed 2 app password(s).\n" {
		t.Fatalf("remove-all --app caldav: %q", r.stdout)
	}
	if r = do("remove-all --json", 0, "", with("remove-all", "--json")...); strings.TrimSpace(r.stdout) != `{"removed":2}` {
		t.Fatalf("remove-all --json: %q", r.stdout)
	}
	if r = do("remove-all nothing left", 0, "", with("remove-all")...); r.stdout != "Removed 0 app password(s).\n" {
		t.Fatalf("remove-all on nothing: %q", r.stdout)
	}
	do("removed by remove-all", 1, added[1], "authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "caldav", "--ip", "192.0.2.9")

	// In-process, the password typed at a terminal prompt.
	typed := d.Add(t, "mail", "Typed")
	f := &fakeSystem{env: map[string]string{"APPPASS_URL": d.URL, "APPPASS_DATA_DIR": dataDir}, terminal: true, typed: []byte(typed.Password + "\n")}
	if code := run([]string{"authenticate", "--login", gatewaytest.DemoLogin, "--protocol", "imap"}, f.system()); code != 0 ||
		f.stderr.String() != "App password: \n" || !strings.Contains(f.stdout.String(), typed.UUID) || strings.Contains(f.stdout.String()+f.stderr.String(), typed.Password) {
		t.Fatalf("typed password: exit %d, stdout %q, stderr %q", code, f.stdout.String(), f.stderr.String())
	}

	// apppassd says no: exit 1 with its message.
	r = do("unknown app", 1, "", with("add", "--app", "nosuch", "--name", "x")...)
	if !strings.Contains(r.stderr, "-32602") || !strings.Contains(r.stderr, "appScope") {
		t.Fatalf("unknown app: %q", r.stderr)
	}

	// health: ready.
	r = do("health", 0, "", "health")
	if !regexp.MustCompile(`(?m)^status:\s+ready$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^pendingEvents:\s+\d+$`).MatchString(r.stdout) {
		t.Fatalf("health: %q", r.stdout)
	}
	var ready struct {
		Status        string `json:"status"`
		PendingEvents *int   `json:"pendingEvents"`
	}
	if err := json.Unmarshal([]byte(do("health --json", 0, "", "health", "--json").stdout), &ready); err != nil || ready.Status != "ready" || ready.PendingEvents == nil {
		t.Fatalf("health --json: %v %+v", err, ready)
	}

	// Keys apppassd does not take: exit 3, one line.
	for _, tc := range []struct{ name, key, code string }{
		{"wrong admin key", "not-the-admin-key-0123456789", "-32001"},
		{"gateway key as admin key", gatewaySecret, "-32003"},
		{"user token as admin key", token, "-32003"},
	} {
		r = cli(t, append(env, "APPPASS_ADMIN_KEY="+tc.key), "", with("list")...)
		outputs = append(outputs, r)
		if r.code != 3 || !strings.Contains(r.stderr, tc.code) || strings.Count(r.stderr, "\n") != 1 || strings.Contains(r.stderr, tc.key) {
			t.Fatalf("%s: exit %d: %q", tc.name, r.code, r.stderr)
		}
	}
	// No admin key anywhere: exit 3, saying where it looked.
	r = cli(t, []string{"APPPASS_URL=" + d.URL, "APPPASS_DATA_DIR=" + t.TempDir()}, "", with("list")...)
	if r.code != 3 || !strings.HasPrefix(r.stderr, "apppass list: no admin key: set APPPASS_ADMIN_KEY") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("no admin key: exit %d: %q", r.code, r.stderr)
	}

	// Secrets: the keys and tokens never printed (the token only by
	// token), app passwords only by add.
	for i, o := range outputs {
		all := o.stdout + o.stderr
		for _, s := range []string{adminSecret, gatewaySecret, tokenKey} {
			if strings.Contains(all, s) {
				t.Fatalf("output %d printed a key: %q", i, all)
			}
		}
		if i > 0 && strings.Contains(all, token) {
			t.Fatalf("output %d printed the user token", i)
		}
		shown := passwordPattern.FindAllString(all, -1)
		if len(shown) > 0 && !strings.Contains(o.stdout, "shown only this once") && !strings.Contains(o.stdout, `"password"`) {
			t.Fatalf("output %d printed a password: %q", i, all)
		}
	}

	// apppassd gone: health and calls cannot reach it (3).
	d.Stop(t)
	r = cli(t, env, "", "health")
	if r.code != 3 || !strings.Contains(r.stderr, "connection refused") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("health with apppassd down: exit %d: %q", r.code, r.stderr)
	}
	r = cli(t, env, "", with("list")...)
	if r.code != 3 || !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("list with apppassd down: exit %d: %q", r.code, r.stderr)
	}
}
