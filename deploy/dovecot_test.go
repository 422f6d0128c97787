package deploy_test

// The revocation tests run Debian's Dovecot with the shipped Lua passdb
// (dovecot/apppass-lua.conf, apppass.lua) and doveadm HTTP API
// (dovecot/doveadm.conf), nginx's mail proxy (nginx/mail.conf) in front of
// it, and the real apppassd with APPPASS_DOVEADM_URLS: mail sessions opened
// with an app password (IMAP IDLE, POP3, IMAP through nginx) must be
// closed by the server once the password is revoked, however it is.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/deploy"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/internal/gatewaytest"
	"github.com/apppass/apppass/stdwebhook"
)

const luaModule = "/usr/lib/dovecot/modules/auth/libauthdb_lua.so"

// staticPassword is every user's password with passdb "static".
const staticPassword = "static-reference-password"

// mailStack is apppassd, Dovecot and nginx's mail proxy, wired together.
type mailStack struct {
	sd           serverDir
	d            *gatewaytest.Daemon
	bin          string // apppassd
	cli          string // apppass
	daemonEnv    []string
	dovecot      *gatewaytest.Process
	imap         string // Dovecot's IMAP
	pop3         string // Dovecot's POP3
	imaps        string // nginx's IMAPS, proxied to Dovecot
	doveadm      string // Dovecot's doveadm HTTP listener
	apiKey       string
	adminKey     string
	ca           *x509.CertPool
	provisioning stdwebhook.Secret
	logs         map[string]string
}

type mailStackOptions struct {
	// passdb is "lua" (default), "checkpassword", or "static" (every user's
	// password is staticPassword, apppassd is not asked).
	passdb string
	// doveadmURL turns Dovecot's doveadm address into apppassd's
	// APPPASS_DOVEADM_URLS (default: "http://" + it).
	doveadmURL func(addr string) string
	// apiKey is the key apppassd is given (default: Dovecot's).
	apiKey string
	// nginx starts the mail proxy too.
	nginx bool
	// performance adds the shipped dovecot/performance.conf: Dovecot's
	// high-performance login mode (a login process serves many
	// connections, a few wait ready) and imap processes kept ready,
	// instead of one new process per connection for each.
	performance bool
}

// nextUser hands each case a user of its own: kicks end all of a user's
// sessions on Dovecot 2.3.
var lastUser atomic.Int64

func nextUser() apppass.User {
	n := 100 + lastUser.Add(1)
	return apppass.User{ContextID: 1, UserID: n, Login: fmt.Sprintf("user%d@example.com", n)}
}

func startMailStack(t testing.TB, o mailStackOptions) *mailStack {
	t.Helper()
	dovecotBin := need(t, "dovecot")
	if o.passdb == "" {
		o.passdb = "lua"
	}
	needFile := luaModule
	if o.passdb == "checkpassword" {
		needFile = checkpasswordReply
	}
	if _, err := os.Stat(needFile); err != nil {
		gatewaytest.Missing(t, "%s is missing (apt-get install dovecot-imapd dovecot-pop3d dovecot-auth-lua)", needFile)
	}
	if _, err := os.Stat("/usr/lib/dovecot/pop3"); err != nil {
		gatewaytest.Missing(t, "Dovecot's POP3 server is missing (apt-get install dovecot-pop3d)")
	}
	sd := newServerDir(t, "bin", "dovecot", "nginx")
	dir := sd.dir
	ms := &mailStack{sd: sd, logs: map[string]string{}, apiKey: "doveadm-" + gatewaytest.RandomHex(16),
		adminKey: "adm-" + gatewaytest.RandomHex(16)}
	for _, p := range []*string{&ms.imap, &ms.pop3, &ms.doveadm} {
		*p = gatewaytest.FreeAddr(t)
	}
	var err error
	if ms.bin, err = gatewaytest.Build(filepath.Join(dir, "bin"), "github.com/apppass/apppass/cmd/apppassd", "apppassd", gatewaytest.RaceEnabled); err != nil {
		t.Fatal(err)
	}
	if ms.cli, err = gatewaytest.Build(filepath.Join(dir, "bin"), "github.com/apppass/apppass/cmd/apppass", "apppass", false); err != nil {
		t.Fatal(err)
	}

	// apppassd first: Dovecot's passdb asks it, and its kicks wait for
	// Dovecot (retried) until it is up.
	doveadmURL := "http://" + ms.doveadm
	if o.doveadmURL != nil {
		doveadmURL = o.doveadmURL(ms.doveadm)
	}
	daemonKey := filepath.Join(dir, "apppassd-doveadm.key")
	writeFile(t, daemonKey, cmp.Or(o.apiKey, ms.apiKey)+"\n")
	provSecret := stdwebhook.GenerateSecret()
	ms.provisioning, _ = stdwebhook.ParseSecret(provSecret)
	gatewayKey := "gw-" + gatewaytest.RandomHex(16)
	ms.daemonEnv = []string{
		"APPPASS_LISTEN=" + gatewaytest.FreeAddr(t), // the same after a restart: the passdb asks it
		"APPPASS_DATA_DIR=" + filepath.Join(dir, "apppassd"),
		"APPPASS_EMBEDDED_NATS_LISTEN=" + gatewaytest.FreeAddr(t),
		"APPPASS_SERVICE_KEYS=test-gateway:gateway:" + gatewayKey + ",test-admin:admin:" + ms.adminKey,
		"APPPASS_MAIL_BACKENDS=imap=" + ms.imap + ",pop3=" + ms.pop3,
		"APPPASS_DOVEADM_URLS=" + doveadmURL,
		"APPPASS_DOVEADM_API_KEY_FILE=" + daemonKey,
		"APPPASS_SWEEP_INTERVAL=200ms",
		"APPPASS_PROVISIONING_SECRET=" + provSecret,
	}
	ms.d = gatewaytest.StartBinary(t, ms.bin, ms.daemonEnv...)
	ms.d.GatewayKey = gatewayKey

	// Dovecot: the shipped passdb and doveadm files, included from a test
	// dovecot.conf that keeps everything in dir.
	dd := filepath.Join(dir, "dovecot")
	gatewayKeyFile := filepath.Join(dd, "apppass-gateway.key")
	sd.writeDovecotKey(t, gatewayKeyFile, gatewayKey)
	apiKeyFile := filepath.Join(dd, "doveadm-api.key")
	writeFile(t, apiKeyFile, ms.apiKey) // no line break: Dovecot would take it as part of the key
	if err := os.Chmod(apiKeyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	render := func(name string, vars map[string]string) string {
		out, err := deploy.Render(name, vars)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	vmail := map[string]string{"VMAIL_USER": sd.vmail.Username, "VMAIL_GROUP": sd.vmailGroup.Name, "VMAIL_HOME": filepath.Join(dir, "vmail")}
	passdb := filepath.Join(dd, "passdb.conf")
	switch o.passdb {
	case "static": // no apppass at all: the benchmarks' reference
		writeFile(t, passdb, fmt.Sprintf("passdb {\n  driver = static\n  args = password=%s\n}\nuserdb {\n  driver = static\n  args = uid=%s gid=%s home=%s/%%Ld/%%Ln\n}\n",
			staticPassword, sd.vmail.Username, sd.vmailGroup.Name, filepath.Join(dir, "vmail")))
	case "lua":
		lua := filepath.Join(dd, "apppass.lua")
		writeFile(t, lua, render("dovecot/apppass.lua", map[string]string{"APPPASS_URL": ms.d.URL, "APPPASS_GATEWAY_KEY_FILE": gatewayKeyFile}))
		vmail["APPPASS_LUA_FILE"] = lua
		writeFile(t, passdb, render("dovecot/apppass-lua.conf", vmail))
	default:
		vmail["APPPASS_CLI"], vmail["APPPASS_URL"], vmail["APPPASS_GATEWAY_KEY_FILE"] = ms.cli, ms.d.URL, gatewayKeyFile
		writeFile(t, passdb, render("dovecot/apppass.conf", vmail))
	}
	dvHost, dvPort, _ := net.SplitHostPort(ms.doveadm)
	writeFile(t, filepath.Join(dd, "doveadm.conf"), render("dovecot/doveadm.conf", map[string]string{
		"DOVEADM_API_KEY_FILE": apiKeyFile, "DOVEADM_HTTP_ADDRESS": dvHost, "DOVEADM_HTTP_PORT": dvPort}))
	imapHost, imapPort, _ := net.SplitHostPort(ms.imap)
	pop3Host, pop3Port, _ := net.SplitHostPort(ms.pop3)
	ms.logs["dovecot"] = filepath.Join(dd, "dovecot.log")
	writeFile(t, filepath.Join(dd, "dovecot.conf"), fmt.Sprintf(`# Test wrapper around deploy/dovecot/: passdb and doveadm HTTP API.
protocols = imap pop3
listen = 127.0.0.1
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[2]s
instance_name = apppass-kick-test
ssl = no
# The test's clients come from other 127.0.0.0/8 addresses than the server's.
disable_plaintext_auth = no
auth_failure_delay = 0
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    address = %[3]s
    port = %[4]s
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = %[5]s
    port = %[6]s
  }
  inet_listener pop3s {
    port = 0
  }
}
!include %[1]s/passdb.conf
!include %[1]s/doveadm.conf
`, dd, ms.logs["dovecot"], imapHost, imapPort, pop3Host, pop3Port))
	if o.performance {
		f, err := os.OpenFile(filepath.Join(dd, "dovecot.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, render("dovecot/performance.conf", map[string]string{"LOGIN_PROCESS_MIN_AVAIL": "2", "IMAP_PROCESS_MIN_AVAIL": "4"}))
		f.Close()
	}
	conf := filepath.Join(dd, "dovecot.conf")
	if out, err := exec.Command(need(t, "doveconf"), "-c", conf, "-n").CombinedOutput(); err != nil {
		t.Fatalf("doveconf: %v\n%s", err, out)
	}
	ms.dovecot = gatewaytest.Start(t, "dovecot", cleanEnv(), []string{ms.logs["dovecot"]}, dovecotBin, "-F", "-c", conf)
	ms.dovecot.WaitTCP(t, ms.imap, ms.pop3, ms.doveadm)

	if o.nginx {
		ms.startNginx(t)
	}
	return ms
}

// startNginx runs the shipped mail.conf, whose IMAP backend (apppassd's
// APPPASS_MAIL_BACKENDS) is this Dovecot.
func (ms *mailStack) startNginx(t testing.TB) {
	t.Helper()
	nginxBin := need(t, "nginx")
	if _, err := os.Stat(mailModule); err != nil {
		gatewaytest.Missing(t, "%s is missing (apt-get install libnginx-mod-mail)", mailModule)
	}
	n := filepath.Join(ms.sd.dir, "nginx")
	certFile, keyFile := filepath.Join(n, "cert.pem"), filepath.Join(n, "key.pem")
	ms.ca = writeCert(t, certFile, keyFile)
	ports := map[string]string{}
	for _, name := range []string{"IMAP_LISTEN", "IMAPS_LISTEN", "POP3S_LISTEN", "SUBMISSION_LISTEN", "SUBMISSIONS_LISTEN"} {
		ports[name] = gatewaytest.FreeAddr(t)
	}
	ms.imaps = ports["IMAPS_LISTEN"]
	vars := map[string]string{"SERVER_NAME": "localhost", "TLS_CERT": certFile, "TLS_KEY": keyFile,
		"APPPASS_ADDR": ms.d.Addr, "APPPASS_GATEWAY_KEY": ms.d.GatewayKey}
	for k, v := range ports {
		vars[k] = v
	}
	mail, err := deploy.Render("nginx/mail.conf", vars)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(n, "mail.conf"), mail)
	ms.logs["nginx"] = filepath.Join(n, "error.log")
	p := runNginx(t, nginxBin, n, false)
	var addrs []string
	for _, a := range ports {
		addrs = append(addrs, a)
	}
	p.WaitTCP(t, addrs...)
}

// token is a user token for u.
func (ms *mailStack) token(t testing.TB, u apppass.User) string {
	return ms.d.UserToken(t, u, time.Hour)
}

// add adds an app password for the user of token.
func (ms *mailStack) add(t testing.TB, token, scope string, extra ...any) gatewaytest.Password {
	t.Helper()
	params := map[string]any{"appScope": scope, "appName": scope + " " + gatewaytest.RandomHex(3)}
	for i := 0; i+1 < len(extra); i += 2 {
		params[extra[i].(string)] = extra[i+1]
	}
	var p gatewaytest.Password
	if e := ms.d.Call(t, token, "appPasswords.add", params, &p); e != nil {
		t.Fatalf("add %s: %d %s", scope, e.Code, e.Message)
	}
	return p
}

func (ms *mailStack) call(t testing.TB, token, method string, params map[string]any) {
	t.Helper()
	if e := ms.d.Call(t, token, method, params, nil); e != nil {
		t.Fatalf("%s: %d %s", method, e.Code, e.Message)
	}
}

// targets reads doveadm.targets.
func (ms *mailStack) targets(t testing.TB) []doveadmTarget {
	t.Helper()
	var out []doveadmTarget
	if e := ms.d.Call(t, ms.adminKey, "doveadm.targets", map[string]any{}, &out); e != nil {
		t.Fatalf("doveadm.targets: %d %s", e.Code, e.Message)
	}
	return out
}

type doveadmTarget struct {
	URL       string            `json:"url"`
	State     string            `json:"state"`
	LastError string            `json:"lastError"`
	Pending   int64             `json:"pending"`
	Requests  map[string]uint64 `json:"requests"`
	Consuming bool              `json:"consuming"`
}

// mailSession is a client's connection to an IMAP or POP3 server; once
// logged in, a goroutine reads it and records when the server closed it.
type mailSession struct {
	name   string
	conn   net.Conn
	r      *bufio.Reader
	closed chan time.Time
	lines  chan string
}

// dialMail connects from the client address from ("": one of its own).
func dialMail(t testing.TB, name, from, addr string, tlsConf *tls.Config) *mailSession {
	t.Helper()
	if from == "" {
		from = nextIP()
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = tls.DialWithDialer(dialer, "tcp", addr, tlsConf)
	} else {
		c, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	m := &mailSession{name: name, conn: c, r: bufio.NewReader(c)}
	m.expect(t, "", "* OK", "+OK")
	return m
}

// expect reads lines until one starts with one of prefixes (after tag, if
// given) or with tag and something else, which it returns as a failure.
func (m *mailSession) expect(t testing.TB, tag string, prefixes ...string) (string, bool) {
	t.Helper()
	_ = m.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer m.conn.SetReadDeadline(time.Time{})
	for {
		line, err := m.r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: reading: %v (so far %q)", m.name, err, line)
		}
		line = strings.TrimRight(line, "\r\n")
		for _, p := range prefixes {
			if strings.HasPrefix(line, tag+p) {
				return line, true
			}
		}
		if (tag != "" && strings.HasPrefix(line, tag)) || strings.HasPrefix(line, "-ERR") {
			return line, false
		}
	}
}

func (m *mailSession) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(m.conn, line+"\r\n"); err != nil {
		t.Fatalf("%s: writing: %v", m.name, err)
	}
}

// watch hands the connection to a reader that records when the server
// closes it (and keeps the lines it sent).
func (m *mailSession) watch() {
	m.closed, m.lines = make(chan time.Time, 1), make(chan string, 64)
	go func() {
		for {
			line, err := m.r.ReadString('\n')
			if err != nil {
				m.closed <- time.Now()
				return
			}
			select {
			case m.lines <- strings.TrimRight(line, "\r\n"):
			default:
			}
		}
	}()
}

// imapLogin logs in over IMAP and reports whether the server accepted.
func imapLogin(t testing.TB, name, addr string, tlsConf *tls.Config, login, password string) (*mailSession, bool) {
	t.Helper()
	return imapLoginFrom(t, name, "", addr, tlsConf, login, password)
}

func imapLoginFrom(t testing.TB, name, from, addr string, tlsConf *tls.Config, login, password string) (*mailSession, bool) {
	t.Helper()
	m := dialMail(t, name, from, addr, tlsConf)
	m.send(t, fmt.Sprintf("a LOGIN %q %q", login, password))
	line, ok := m.expect(t, "a ", "OK")
	if !ok && !strings.HasPrefix(line, "a NO") {
		t.Fatalf("%s: LOGIN answered %q", name, line)
	}
	return m, ok
}

// idle logs in over IMAP and starts IDLE, as a phone's mail app does.
func idle(t testing.TB, name, addr string, tlsConf *tls.Config, login, password string) *mailSession {
	t.Helper()
	m, ok := imapLogin(t, name, addr, tlsConf, login, password)
	if !ok {
		t.Fatalf("%s: login refused", name)
	}
	m.send(t, "b SELECT INBOX")
	if line, ok := m.expect(t, "b ", "OK"); !ok {
		t.Fatalf("%s: SELECT answered %q", name, line)
	}
	m.send(t, "c IDLE")
	if line, ok := m.expect(t, "", "+ "); !ok {
		t.Fatalf("%s: IDLE answered %q", name, line)
	}
	m.watch()
	return m
}

// pop3Session logs in over POP3 and then waits, as a client between polls.
func pop3Session(t testing.TB, addr, login, password string) *mailSession {
	t.Helper()
	m := dialMail(t, "POP3", "", addr, nil)
	m.send(t, "USER "+login)
	if line, ok := m.expect(t, "", "+OK"); !ok {
		t.Fatalf("POP3 USER answered %q", line)
	}
	m.send(t, "PASS "+password)
	if line, ok := m.expect(t, "", "+OK"); !ok {
		t.Fatalf("POP3 PASS answered %q", line)
	}
	m.watch()
	return m
}

// open opens the mail sessions a phone keeps with one password: IMAP IDLE
// and POP3 on Dovecot, and IMAP IDLE through nginx when it runs.
func (ms *mailStack) open(t testing.TB, login, password string) []*mailSession {
	t.Helper()
	s := []*mailSession{
		idle(t, "IMAP IDLE", ms.imap, nil, login, password),
		pop3Session(t, ms.pop3, login, password),
	}
	if ms.imaps != "" {
		s = append(s, idle(t, "IMAP IDLE through nginx", ms.imaps, &tls.Config{RootCAs: ms.ca, ServerName: "localhost"}, login, password))
	}
	return s
}

// requireClosed waits until the server closed every session.
func requireClosed(t testing.TB, sessions []*mailSession, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for _, s := range sessions {
		select {
		case <-s.closed:
		case <-deadline:
			t.Fatalf("%s still open %s after the revocation", s.name, within)
		}
	}
}

// requireOpen checks that an IDLE session still works: it ends IDLE and
// the server answers a NOOP.
func requireOpen(t testing.TB, m *mailSession) {
	t.Helper()
	select {
	case <-m.closed:
		t.Fatalf("%s was closed", m.name)
	default:
	}
	m.send(t, "DONE")
	m.send(t, "d NOOP")
	deadline := time.After(15 * time.Second)
	for {
		select {
		case line := <-m.lines:
			if strings.HasPrefix(line, "d OK") {
				return
			}
		case <-m.closed:
			t.Fatalf("%s was closed", m.name)
		case <-deadline:
			t.Fatalf("%s: no answer to NOOP", m.name)
		}
	}
}

// requireLogin checks whether password logs in over IMAP on Dovecot.
func (ms *mailStack) requireLogin(t testing.TB, login, password string, want bool) {
	t.Helper()
	m, ok := imapLogin(t, "IMAP login", ms.imap, nil, login, password)
	m.conn.Close()
	if ok != want {
		t.Fatalf("IMAP login accepted: %v, want %v", ok, want)
	}
}

func TestRevocationEndsMailSessions(t *testing.T) {
	// A second Dovecot that never answers: its kicks wait, and hold back
	// no one else's.
	down := gatewaytest.FreeAddr(t)
	ms := startMailStack(t, mailStackOptions{nginx: true, doveadmURL: func(addr string) string {
		return "http://" + addr + ",http://" + down
	}})

	// Someone else's session, which no revocation here may end.
	bystander := nextUser()
	bp := ms.add(t, ms.token(t, bystander), "mail")
	other := idle(t, "bystander's IMAP IDLE", ms.imap, nil, bystander.Login, bp.Password)

	t.Run("group", func(t *testing.T) {
		t.Run("remove", func(t *testing.T) {
			t.Parallel()
			u := nextUser()
			token := ms.token(t, u)
			phone, laptop := ms.add(t, token, "mail"), ms.add(t, token, "mail")
			sessions := ms.open(t, u.Login, phone.Password)
			ms.call(t, token, "appPasswords.remove", map[string]any{"uuid": phone.UUID})
			requireClosed(t, sessions, 10*time.Second)
			ms.requireLogin(t, u.Login, phone.Password, false)
			ms.requireLogin(t, u.Login, laptop.Password, true)
		})
		t.Run("removeAll", func(t *testing.T) {
			t.Parallel()
			u := nextUser()
			token := ms.token(t, u)
			phone, tablet := ms.add(t, token, "mail"), ms.add(t, token, "mail")
			sessions := append(ms.open(t, u.Login, phone.Password), ms.open(t, u.Login, tablet.Password)...)
			ms.call(t, token, "appPasswords.removeAll", map[string]any{})
			requireClosed(t, sessions, 10*time.Second)
			ms.requireLogin(t, u.Login, phone.Password, false)
			ms.requireLogin(t, u.Login, tablet.Password, false)
			ms.requireLogin(t, u.Login, ms.add(t, token, "mail").Password, true)
		})
		t.Run("expiry", func(t *testing.T) {
			t.Parallel()
			u := nextUser()
			token := ms.token(t, u)
			expires := time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339Nano)
			phone, laptop := ms.add(t, token, "mail", "expires", expires), ms.add(t, token, "mail")
			sessions := ms.open(t, u.Login, phone.Password)
			requireClosed(t, sessions, 15*time.Second)
			ms.requireLogin(t, u.Login, phone.Password, false)
			ms.requireLogin(t, u.Login, laptop.Password, true)
		})
		t.Run("provisioning webhook", func(t *testing.T) {
			t.Parallel()
			u := nextUser()
			token := ms.token(t, u)
			phone := ms.add(t, token, "mail")
			sessions := ms.open(t, u.Login, phone.Password)
			body := fmt.Sprintf(`{"type":"user.deleted","timestamp":%q,"data":{"contextId":%d,"userId":%d}}`,
				time.Now().UTC().Format(time.RFC3339), u.ContextID, u.UserID)
			req, _ := http.NewRequest(http.MethodPost, ms.d.URL+"/webhooks/provisioning", strings.NewReader(body))
			stdwebhook.SetHeaders(req.Header.Set, "msg_"+gatewaytest.RandomHex(8), time.Now(), []byte(body), ms.provisioning)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), `"revoked":1`) {
				t.Fatalf("provisioning webhook: HTTP %d %s", resp.StatusCode, out)
			}
			requireClosed(t, sessions, 10*time.Second)
			ms.requireLogin(t, u.Login, phone.Password, false)
			ms.requireLogin(t, u.Login, ms.add(t, token, "mail").Password, true)
		})
		t.Run("a calendar password ends no mail session", func(t *testing.T) {
			t.Parallel()
			u, sentinel := nextUser(), nextUser()
			token := ms.token(t, u)
			mail, cal := ms.add(t, token, "mail"), ms.add(t, token, "caldav")
			session := idle(t, "IMAP IDLE", ms.imap, nil, u.Login, mail.Password)
			ms.call(t, token, "appPasswords.remove", map[string]any{"uuid": cal.UUID})
			// Events reach Dovecot in order: once a later revocation's
			// session is closed, the calendar one has been handled.
			stoken := ms.token(t, sentinel)
			sp := ms.add(t, stoken, "mail")
			ss := idle(t, "sentinel IMAP IDLE", ms.imap, nil, sentinel.Login, sp.Password)
			ms.call(t, stoken, "appPasswords.remove", map[string]any{"uuid": sp.UUID})
			requireClosed(t, []*mailSession{ss}, 10*time.Second)
			requireOpen(t, session)
			// And a calendar password is no mail password.
			cal2 := ms.add(t, token, "caldav")
			ms.requireLogin(t, u.Login, cal2.Password, false)
		})
	})
	requireOpen(t, other)

	ts := ms.targets(t)
	if len(ts) != 2 || ts[0].State != "ok" || ts[0].Requests["ok"] == 0 || ts[0].Requests["failed"] != 0 || !ts[0].Consuming || ts[0].Pending != 0 {
		t.Errorf("doveadm.targets, the Dovecot: %+v", ts)
	}
	if len(ts) == 2 && (ts[1].State != "failing" || ts[1].Requests["unreachable"] == 0 || ts[1].Pending == 0 || ts[1].URL != "http://"+down) {
		t.Errorf("doveadm.targets, the one that is down: %+v", ts[1])
	}

	// NATS's gateway user may run consumers of its own, but not read or
	// ack the kicks' (it could keep sessions alive).
	raw, err := os.ReadFile(filepath.Join(ms.d.DataDir, datadir.NATSGatewayURLFile))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js.Consumer(ctx, events.StreamName, events.DoveadmConsumer("http://"+ms.doveadm)); err == nil {
		t.Error("the gateway NATS user may read the kicks' consumer")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, events.StreamName); err != nil {
		t.Errorf("the gateway NATS user cannot see the stream: %v", err)
	}
}

// TestDoveadmOutage: a Dovecot whose doveadm API cannot be reached gets
// its kicks once it can, a refused API key is reported, neither holds up
// remove, and each is logged once, not at every retry.
func TestDoveadmOutage(t *testing.T) {
	var relay *gatewaytest.Relay
	ms := startMailStack(t, mailStackOptions{doveadmURL: func(addr string) string {
		relay = gatewaytest.StartRelay(t, addr)
		return "http://" + relay.Addr
	}})
	u := nextUser()
	token := ms.token(t, u)
	phone, laptop := ms.add(t, token, "mail"), ms.add(t, token, "mail")
	waitTarget(t, ms, func(d doveadmTarget) bool { return d.State == "ok" && d.Pending == 0 && d.Consuming })

	relay.Cut()
	session := idle(t, "IMAP IDLE", ms.imap, nil, u.Login, phone.Password)
	ms.call(t, token, "appPasswords.remove", map[string]any{"uuid": phone.UUID})
	ms.requireLogin(t, u.Login, phone.Password, false)
	d := waitTarget(t, ms, func(d doveadmTarget) bool {
		return d.State == "failing" && d.Pending >= 1 && d.Requests["unreachable"] >= 2
	})
	if strings.Contains(d.LastError, ms.apiKey) {
		t.Fatalf("lastError shows the key: %q", d.LastError)
	}
	select {
	case <-session.closed:
		t.Fatal("the session was closed without doveadm")
	default:
	}

	relay.Restore(t)
	requireClosed(t, []*mailSession{session}, 30*time.Second)
	ms.requireLogin(t, u.Login, laptop.Password, true)
	waitTarget(t, ms, func(d doveadmTarget) bool { return d.State == "ok" && d.Pending == 0 })
	logs := ms.d.Stderr.String()
	if n := strings.Count(logs, "doveadm: request failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "doveadm: Dovecot answers again") || !strings.Contains(logs, relay.Addr) {
		t.Errorf("recovery not logged with the Dovecot's URL:\n%s", logs)
	}
	if strings.Contains(logs, ms.apiKey) {
		t.Error("the API key is in the log")
	}
	metrics := get(t, ms.d.URL+"/metrics")
	for _, want := range []string{
		`apppass_doveadm_requests_total{dovecot="http://` + relay.Addr + `",outcome="unreachable"}`,
		`apppass_doveadm_up{dovecot="http://` + relay.Addr + `"} 1`,
		`apppass_doveadm_pending_events{dovecot="http://` + relay.Addr + `"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A wrong API key: apppassd started again on the same data dir with
	// another key. The durable consumer resumes; its kicks are refused.
	if code := ms.d.Stop(t); code != 0 {
		t.Fatalf("apppassd exited %d", code)
	}
	writeFile(t, filepath.Join(ms.sd.dir, "apppassd-doveadm.key"), "wrong-key\n")
	ms.d = gatewaytest.StartBinary(t, ms.bin, ms.daemonEnv...)
	ms.d.GatewayKey = gatewayKeyOf(ms.daemonEnv)
	other := ms.add(t, token, "mail")
	session = idle(t, "IMAP IDLE", ms.imap, nil, u.Login, other.Password)
	ms.call(t, token, "appPasswords.remove", map[string]any{"uuid": other.UUID})
	d = waitTarget(t, ms, func(d doveadmTarget) bool { return d.State == "failing" && d.Requests["unauthorized"] >= 2 })
	if !strings.Contains(d.LastError, "401") || strings.Contains(d.LastError, "wrong-key") {
		t.Errorf("lastError %q", d.LastError)
	}
	logs = ms.d.Stderr.String()
	if n := strings.Count(logs, "doveadm: request failed"); n != 1 || strings.Contains(logs, "wrong-key") {
		t.Errorf("a refused key was logged %d times (want once, without the key):\n%s", n, logs)
	}
	select {
	case <-session.closed:
		t.Fatal("the session was closed with a refused key")
	default:
	}
	// The admin CLI shows it.
	cmd := exec.Command(ms.cli, "doveadm")
	cmd.Env = gatewaytest.ChildEnv("APPPASS_URL="+ms.d.URL, "APPPASS_ADMIN_KEY="+ms.adminKey)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "failing") || !strings.Contains(string(out), "401") {
		t.Errorf("apppass doveadm: %v\n%s", err, out)
	}

	// Without apppassd the Lua passdb answers a temporary failure, not
	// "wrong password".
	ms.d.Stop(t)
	m := dialMail(t, "IMAP login without apppassd", "", ms.imap, nil)
	m.send(t, fmt.Sprintf("a LOGIN %q %q", u.Login, laptop.Password))
	if line, _ := m.expect(t, "a ", "OK"); !strings.HasPrefix(line, "a NO [UNAVAILABLE]") {
		t.Fatalf("without apppassd, LOGIN answered %q, want a temporary failure", line)
	}
}

func gatewayKeyOf(env []string) string {
	for _, kv := range env {
		if keys, ok := strings.CutPrefix(kv, "APPPASS_SERVICE_KEYS=test-gateway:gateway:"); ok {
			return strings.SplitN(keys, ",", 2)[0]
		}
	}
	return ""
}

// waitTarget polls doveadm.targets until the one Dovecot satisfies ok.
func waitTarget(t testing.TB, ms *mailStack, ok func(doveadmTarget) bool) doveadmTarget {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ts := ms.targets(t)
		if len(ts) == 1 && ok(ts[0]) {
			return ts[0]
		}
		if time.Now().After(deadline) {
			raw, _ := json.Marshal(ts)
			t.Fatalf("doveadm.targets never got there: %s", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
