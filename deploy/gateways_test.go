package deploy_test

// TestGateways runs the shipped configurations in the real servers: Debian's
// nginx (with the mail module) and Dovecot, on free 127.0.0.1 ports, in
// front of the real apppassd, and logs in with real clients (curl's imap://,
// pop3s://, smtp:// and HTTP Basic). Client addresses vary over 127.0.0.0/8
// so that the failures of one case do not throttle another.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apppass/apppass/deploy"
	"github.com/apppass/apppass/internal/gatewaytest"
)

const (
	mailModule         = "/usr/lib/nginx/modules/ngx_mail_module.so"
	checkpasswordReply = "/usr/lib/dovecot/checkpassword-reply"
)

// stack is everything TestGateways starts.
type stack struct {
	dir     string
	ca      *x509.CertPool
	caFile  string
	d       *gatewaytest.Daemon
	nginx   *gatewaytest.Process
	dovecot *gatewaytest.Process
	smtp    *lineServer
	pop3    *lineServer
	dav     string // https://127.0.0.1:port
	ports   map[string]string
	logs    map[string]string
}

// nextIP hands each case a client address of its own in 127.0.0.0/8.
var lastIP atomic.Int32

func nextIP() string {
	n := lastIP.Add(1)
	return fmt.Sprintf("127.0.%d.%d", n/200, 10+n%200)
}

// need returns the path of a program, skipping (or, with
// APPPASS_REQUIRE_GATEWAYS=1, failing) the test when it is missing.
func need(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gatewaytest.Missing(t, "%s is not installed (apt-get install nginx libnginx-mod-mail dovecot-imapd dovecot-pop3d dovecot-auth-lua curl)", name)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func startStack(t testing.TB) *stack {
	t.Helper()
	nginxBin, dovecotBin := need(t, "nginx"), need(t, "dovecot")
	need(t, "curl")
	for _, f := range []string{mailModule, checkpasswordReply} {
		if _, err := os.Stat(f); err != nil {
			gatewaytest.Missing(t, "%s is missing (apt-get install libnginx-mod-mail dovecot-imapd)", f)
		}
	}
	sd := newServerDir(t, "bin", "nginx", "dovecot")
	dir, vmail, vmailGroup := sd.dir, sd.vmail, sd.vmailGroup
	s := &stack{dir: dir, ports: map[string]string{}, logs: map[string]string{}}

	// Binaries: apppassd like the other end-to-end tests; the CLI without
	// the race detector, which needs far more address space than Dovecot's
	// auth process allows its children.
	apppassd, err := gatewaytest.Build(filepath.Join(dir, "bin"), "github.com/apppass/apppass/cmd/apppassd", "apppassd", gatewaytest.RaceEnabled)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := gatewaytest.Build(filepath.Join(dir, "bin"), "github.com/apppass/apppass/cmd/apppass", "apppass", false)
	if err != nil {
		t.Fatal(err)
	}

	s.caFile = filepath.Join(dir, "cert.pem")
	keyFile := filepath.Join(dir, "key.pem")
	s.ca = writeCert(t, s.caFile, keyFile)

	s.smtp, s.pop3 = startSMTPSink(t), startPOP3Sink(t)
	upstream := startDAVUpstream(t)
	for _, name := range []string{"dovecot", "dav", "imap", "imaps", "pop3s", "submission", "submissions"} {
		s.ports[name] = gatewaytest.FreeAddr(t)
	}
	s.d = gatewaytest.StartDaemon(t, apppassd,
		"APPPASS_MAIL_BACKENDS=imap="+s.ports["dovecot"]+",pop3="+s.pop3.addr+",smtp="+s.smtp.addr)

	// Dovecot: the shipped fragment, included from a test dovecot.conf that
	// keeps everything in dir.
	keyPath := filepath.Join(dir, "dovecot", "apppass-gateway.key")
	sd.writeDovecotKey(t, keyPath, s.d.GatewayKey)
	fragment, err := deploy.Render("dovecot/apppass.conf", map[string]string{
		"APPPASS_CLI":              cli,
		"APPPASS_URL":              s.d.URL,
		"APPPASS_GATEWAY_KEY_FILE": keyPath,
		"VMAIL_USER":               vmail.Username,
		"VMAIL_GROUP":              vmailGroup.Name,
		"VMAIL_HOME":               filepath.Join(dir, "vmail"),
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "dovecot", "apppass.conf"), fragment)
	host, port, _ := net.SplitHostPort(s.ports["dovecot"])
	s.logs["dovecot"] = filepath.Join(dir, "dovecot", "dovecot.log")
	writeFile(t, filepath.Join(dir, "dovecot", "dovecot.conf"), fmt.Sprintf(`# Test wrapper around deploy/dovecot/apppass.conf.
protocols = imap
listen = %[1]s
base_dir = %[3]s/run
state_dir = %[3]s/state
log_path = %[4]s
instance_name = apppass-test
ssl = no
# The test's clients come from other 127.0.0.0/8 addresses than the server's.
disable_plaintext_auth = no
auth_failure_delay = 0
# Log the checkpassword replies (never the passwords) to check the extra field.
auth_debug = yes
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    address = %[1]s
    port = %[2]s
  }
  inet_listener imaps {
    port = 0
  }
}
!include %[3]s/apppass.conf
`, host, port, filepath.Join(dir, "dovecot"), s.logs["dovecot"]))
	conf := filepath.Join(dir, "dovecot", "dovecot.conf")
	if out, err := exec.Command(need(t, "doveconf"), "-c", conf, "-n").CombinedOutput(); err != nil {
		t.Fatalf("doveconf: %v\n%s", err, out)
	}
	s.dovecot = gatewaytest.Start(t, "dovecot", cleanEnv(), []string{s.logs["dovecot"]}, dovecotBin, "-F", "-c", conf)
	s.dovecot.WaitTCP(t, s.ports["dovecot"])

	// nginx: the shipped dav.conf and mail.conf, included from a test
	// nginx.conf that keeps everything in dir.
	s.dav = "https://" + s.ports["dav"]
	dav, err := deploy.Render("nginx/dav.conf", map[string]string{
		"SERVER_NAME":         "localhost",
		"DAV_LISTEN":          s.ports["dav"],
		"TLS_CERT":            s.caFile,
		"TLS_KEY":             keyFile,
		"DAV_UPSTREAM":        upstream.URL,
		"APPPASS_ADDR":        s.d.Addr,
		"APPPASS_GATEWAY_KEY": s.d.GatewayKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	mail, err := deploy.Render("nginx/mail.conf", map[string]string{
		"SERVER_NAME":         "localhost",
		"TLS_CERT":            s.caFile,
		"TLS_KEY":             keyFile,
		"APPPASS_ADDR":        s.d.Addr,
		"APPPASS_GATEWAY_KEY": s.d.GatewayKey,
		"IMAP_LISTEN":         s.ports["imap"],
		"IMAPS_LISTEN":        s.ports["imaps"],
		"POP3S_LISTEN":        s.ports["pop3s"],
		"SUBMISSION_LISTEN":   s.ports["submission"],
		"SUBMISSIONS_LISTEN":  s.ports["submissions"],
	})
	if err != nil {
		t.Fatal(err)
	}
	n := filepath.Join(dir, "nginx")
	writeFile(t, filepath.Join(n, "dav.conf"), dav)
	writeFile(t, filepath.Join(n, "mail.conf"), mail)
	s.logs["nginx"] = filepath.Join(n, "error.log")
	s.nginx = runNginx(t, nginxBin, n, true)
	s.nginx.WaitTCP(t, s.ports["dav"], s.ports["imap"], s.ports["imaps"], s.ports["pop3s"], s.ports["submission"], s.ports["submissions"])
	return s
}

// runNginx runs nginx with a test nginx.conf in dir that keeps everything
// there and includes the shipped files written to dir: mail.conf, and
// dav.conf when withDAV. Its log is dir/error.log.
func runNginx(t testing.TB, nginxBin, dir string, withDAV bool) *gatewaytest.Process {
	t.Helper()
	http := ""
	if withDAV {
		http = fmt.Sprintf(`http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/dav.conf;
}
`, dir)
	}
	writeFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf(`# Test wrapper around the shipped deploy/nginx files.
load_module %[2]s;
daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events {
    worker_connections 256;
}
%[3]sinclude %[1]s/mail.conf;
`, dir, mailModule, http))
	args := []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(nginxBin, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	return gatewaytest.Start(t, "nginx", cleanEnv(), []string{filepath.Join(dir, "error.log")}, nginxBin, args...)
}

// serverDir is a test directory the real servers can use: nginx's workers
// and Dovecot's processes run as other users and must reach the files in
// it; vmail (owned by nobody) holds the mail.
type serverDir struct {
	dir          string
	vmail        *user.User
	vmailGroup   *user.Group
	dovecotGroup *user.Group
}

func newServerDir(t testing.TB, subdirs ...string) serverDir {
	t.Helper()
	if os.Geteuid() != 0 {
		gatewaytest.Missing(t, "Dovecot and nginx are run as root here (they switch to their own users)")
	}
	vmail, err := user.Lookup("nobody")
	if err != nil {
		gatewaytest.Missing(t, "no user nobody: %v", err)
	}
	if _, err := user.Lookup("dovecot"); err != nil {
		gatewaytest.Missing(t, "no user dovecot (it comes with the dovecot-core package): %v", err)
	}
	vmailGroup, err := user.LookupGroupId(vmail.Gid)
	if err != nil {
		t.Fatal(err)
	}
	dovecotGroup, err := user.LookupGroup("dovecot")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "apppass-gateways")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range append(subdirs, "vmail") {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(vmail.Uid)
	gid, _ := strconv.Atoi(vmail.Gid)
	if err := os.Chown(filepath.Join(dir, "vmail"), uid, gid); err != nil {
		t.Fatal(err)
	}
	return serverDir{dir: dir, vmail: vmail, vmailGroup: vmailGroup, dovecotGroup: dovecotGroup}
}

// writeDovecotKey writes a key file only root and Dovecot's auth
// processes (group dovecot) can read.
func (sd serverDir) writeDovecotKey(t testing.TB, path, key string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(sd.dovecotGroup.Gid)
	if err := os.Chown(path, 0, gid); err != nil {
		t.Fatal(err)
	}
}

func cleanEnv() []string { return gatewaytest.ChildEnv("PATH=/usr/sbin:/usr/bin:/sbin:/bin") }

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// log returns a server's log file.
func (s *stack) log(name string) string {
	b, _ := os.ReadFile(s.logs[name])
	return string(b)
}

// davResponse is what a DAV client saw.
type davResponse struct {
	status int
	header http.Header
	echo   davEcho // what reached the upstream, when something did
}

// davRequest sends method path from the client address from, with HTTP
// Basic login:password unless password is empty.
func (s *stack) davRequest(t testing.TB, from, method, path, password string, body io.Reader, header ...string) davResponse {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: dialer.DialContext, TLSClientConfig: &tls.Config{RootCAs: s.ca}, DisableKeepAlives: true,
	}}
	req, err := http.NewRequest(method, s.dav+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if password != "" {
		req.SetBasicAuth(gatewaytest.DemoLogin, password)
	}
	req.Header.Set("User-Agent", "gateway-test/1.0")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := davResponse{status: resp.StatusCode, header: resp.Header}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &r.echo); err != nil {
			t.Fatalf("%s %s: not the upstream's answer: %s", method, path, raw)
		}
	}
	return r
}

// curl runs curl from the client address from and returns its exit code
// (0 ok, 67 login denied) and output.
func (s *stack) curl(t testing.TB, from string, args ...string) (int, string) {
	t.Helper()
	base := []string{"--silent", "--show-error", "--max-time", "30", "--cacert", s.caFile, "--interface", from}
	cmd := exec.Command("curl", append(base, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// imap logs in over IMAP and lists the mailboxes. nginx insists on TLS;
// the test's Dovecot has none.
func (s *stack) imap(t testing.TB, from, url, password string, extra ...string) (int, string) {
	args := []string{"--url", url, "--user", gatewaytest.DemoLogin + ":" + password}
	if !strings.Contains(url, s.ports["dovecot"]) {
		args = append(args, "--ssl-reqd")
	}
	return s.curl(t, from, append(args, extra...)...)
}

func (s *stack) submit(t testing.TB, from, url, password, mech, subject string) (int, string) {
	msg := filepath.Join(t.TempDir(), "msg")
	writeFile(t, msg, "From: demo@example.com\r\nTo: friend@example.org\r\nSubject: "+subject+"\r\n\r\nHello.\r\n")
	return s.curl(t, from, "--ssl-reqd", "--url", url, "--user", gatewaytest.DemoLogin+":"+password,
		"--login-options", "AUTH="+mech, "--mail-from", "demo@example.com", "--mail-rcpt", "friend@example.org", "--upload-file", msg)
}

func TestGateways(t *testing.T) {
	s := startStack(t)
	d := s.d
	cal := d.Add(t, "caldav", "Calendar")
	card := d.Add(t, "carddav", "Contacts")
	web := d.Add(t, "webdav", "Files")
	eas := d.Add(t, "eas", "Phone sync")
	mail := d.Add(t, "mail", "Phone mail")
	imapURL := "imap://" + s.ports["imap"] + "/"
	dovecotURL := "imap://" + s.ports["dovecot"] + "/"

	// Alongside everything else (ten refusals take 20 s): a mail session
	// ends after ten failed logins.
	sessionEnded := make(chan error, 1)
	go func() { sessionEnded <- s.failTenTimes(nextIP()) }()

	t.Run("dav", func(t *testing.T) {
		t.Run("caldav password on /caldav/", func(t *testing.T) {
			t.Parallel()
			from := nextIP()
			r := s.davRequest(t, from, "GET", "/caldav/calendars/demo/", cal.Password, nil,
				"X-AppPass-User", "999", "X-AppPass-Scopes", "admin", "X-AppPass-UUID", "forged")
			want := map[string]string{"User": "3", "Context": "1", "Login": gatewaytest.DemoLogin, "Uuid": cal.UUID}
			if r.status != 200 || r.echo.Path != "/caldav/calendars/demo/" || r.echo.RealIP != from {
				t.Fatalf("status %d, upstream saw %+v", r.status, r.echo)
			}
			for k, v := range want {
				if r.echo.AppPass[k] != v {
					t.Errorf("upstream got X-AppPass-%s %q, want %q (all: %v)", k, r.echo.AppPass[k], v, r.echo.AppPass)
				}
			}
			if !strings.Contains(r.echo.AppPass["Scopes"], "read_caldav") || strings.Contains(r.echo.AppPass["Scopes"], "admin") {
				t.Errorf("upstream got scopes %q", r.echo.AppPass["Scopes"])
			}
			if r.echo.Authorization != "" {
				t.Errorf("upstream got the client's Authorization header")
			}
		})
		t.Run("typed sloppily", func(t *testing.T) {
			t.Parallel()
			if r := s.davRequest(t, nextIP(), "GET", "/caldav/", gatewaytest.Sloppy(cal.Password), nil); r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
		})
		t.Run("PROPFIND with a body", func(t *testing.T) {
			t.Parallel()
			body := `<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop></propfind>`
			r := s.davRequest(t, nextIP(), "PROPFIND", "/caldav/", cal.Password, strings.NewReader(body), "Depth", "1", "Content-Type", "application/xml")
			if r.status != 200 || r.echo.Method != "PROPFIND" || r.echo.BodyBytes != len(body) {
				t.Fatalf("status %d, upstream saw %+v", r.status, r.echo)
			}
		})
		t.Run("PUT of 5 MB on /webdav/", func(t *testing.T) {
			t.Parallel()
			r := s.davRequest(t, nextIP(), "PUT", "/webdav/big.bin", web.Password, strings.NewReader(strings.Repeat("x", 5<<20)))
			if r.status != 200 || r.echo.BodyBytes != 5<<20 || r.echo.AppPass["Uuid"] != web.UUID {
				t.Fatalf("status %d, upstream saw %+v", r.status, r.echo)
			}
		})
		t.Run("each location's protocol", func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct {
				path string
				p    gatewaytest.Password
			}{{"/carddav/addressbooks/", card}, {"/webdav/", web}, {"/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=x1&DeviceType=iPhone", eas}} {
				if r := s.davRequest(t, nextIP(), "POST", c.path, c.p.Password, nil); r.status != 200 || r.echo.AppPass["Uuid"] != c.p.UUID {
					t.Errorf("%s with a %s password: status %d", c.path, c.p.AppScope, r.status)
				}
			}
		})
		refused := func(t *testing.T, path, password string) {
			t.Helper()
			r := s.davRequest(t, nextIP(), "GET", path, password, nil)
			if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic realm=") {
				t.Fatalf("%s: status %d, WWW-Authenticate %q", path, r.status, r.header.Get("WWW-Authenticate"))
			}
		}
		t.Run("wrong password", func(t *testing.T) { t.Parallel(); refused(t, "/caldav/", "abcd-efgh-ijkl-mnop") })
		t.Run("no password", func(t *testing.T) { t.Parallel(); refused(t, "/caldav/", "") })
		t.Run("mail password on /caldav/", func(t *testing.T) { t.Parallel(); refused(t, "/caldav/", mail.Password) })
		t.Run("caldav password on /carddav/", func(t *testing.T) { t.Parallel(); refused(t, "/carddav/", cal.Password) })
		t.Run("caldav password on /webdav/", func(t *testing.T) { t.Parallel(); refused(t, "/webdav/", cal.Password) })
		t.Run("revoked", func(t *testing.T) {
			t.Parallel()
			p := d.Add(t, "caldav", "Old laptop")
			from := nextIP()
			if r := s.davRequest(t, from, "GET", "/caldav/", p.Password, nil); r.status != 200 {
				t.Fatalf("before remove: %d", r.status)
			}
			d.Remove(t, p.UUID)
			if r := s.davRequest(t, from, "GET", "/caldav/", p.Password, nil); r.status != 401 {
				t.Fatalf("after remove: %d", r.status)
			}
		})
	})

	t.Run("mail via nginx", func(t *testing.T) {
		t.Run("IMAP with STARTTLS", func(t *testing.T) {
			t.Parallel()
			code, out := s.imap(t, nextIP(), imapURL, mail.Password)
			if code != 0 || !strings.Contains(out, "INBOX") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
			code, out = s.imap(t, nextIP(), imapURL, gatewaytest.Sloppy(mail.Password))
			if code != 0 || !strings.Contains(out, "INBOX") {
				t.Fatalf("typed sloppily: curl exit %d: %s", code, out)
			}
		})
		t.Run("IMAP over TLS", func(t *testing.T) {
			t.Parallel()
			if code, out := s.imap(t, nextIP(), "imaps://"+s.ports["imaps"]+"/", mail.Password); code != 0 || !strings.Contains(out, "INBOX") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("IMAP refuses a login before STARTTLS", func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", s.ports["imap"], 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			say := func(cmd string) string {
				if cmd != "" {
					fmt.Fprintf(c, "%s\r\n", cmd)
				}
				var all string
				for {
					line, err := r.ReadString('\n')
					all += line
					if err != nil || !strings.HasPrefix(line, "* ") || cmd == "" {
						return all
					}
				}
			}
			say("")
			if got := say("a0 CAPABILITY"); !strings.Contains(got, "STARTTLS") || !strings.Contains(got, "LOGINDISABLED") {
				t.Fatalf("CAPABILITY without TLS: %q", got)
			}
			if got := say("a1 LOGIN " + gatewaytest.DemoLogin + " abcd-efgh-ijkl-mnop"); !strings.HasPrefix(got, "a1 BAD") && !strings.HasPrefix(got, "a1 NO") {
				t.Fatalf("LOGIN without TLS answered %q", got)
			}
		})
		t.Run("IMAP login decoded once", func(t *testing.T) {
			t.Parallel()
			// nginx sends "demo%2540example.com"; decoding it twice would
			// log in demo@example.com.
			code, out := s.curl(t, nextIP(), "--ssl-reqd", "--url", imapURL, "--user", "demo%40example.com:"+mail.Password)
			if code != 67 {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("IMAP wrong password", func(t *testing.T) {
			t.Parallel()
			if code, out := s.imap(t, nextIP(), imapURL, "abcd-efgh-ijkl-mnop"); code != 67 {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("IMAP with a caldav password", func(t *testing.T) {
			t.Parallel()
			if code, out := s.imap(t, nextIP(), imapURL, cal.Password); code != 67 {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("POP3 over TLS", func(t *testing.T) {
			t.Parallel()
			code, out := s.curl(t, nextIP(), "--url", "pop3s://"+s.ports["pop3s"]+"/", "--user", gatewaytest.DemoLogin+":"+mail.Password)
			if code != 0 || !s.pop3.saw("USER "+gatewaytest.DemoLogin) {
				t.Fatalf("curl exit %d: %s", code, out)
			}
			if code, out := s.curl(t, nextIP(), "--url", "pop3s://"+s.ports["pop3s"]+"/", "--user", gatewaytest.DemoLogin+":"+cal.Password); code != 67 {
				t.Fatalf("a caldav password: curl exit %d: %s", code, out)
			}
		})
		t.Run("SMTP submission with STARTTLS, AUTH PLAIN", func(t *testing.T) {
			t.Parallel()
			code, out := s.submit(t, nextIP(), "smtp://"+s.ports["submission"], mail.Password, "PLAIN", "via submission")
			if code != 0 || !s.smtp.saw("LOGIN="+gatewaytest.DemoLogin) || !s.smtp.saw("Subject: via submission") {
				t.Fatalf("curl exit %d: %s; sink saw %q", code, out, s.smtp.events())
			}
		})
		t.Run("SMTP over TLS, AUTH LOGIN", func(t *testing.T) {
			t.Parallel()
			code, out := s.submit(t, nextIP(), "smtps://"+s.ports["submissions"], gatewaytest.Sloppy(mail.Password), "LOGIN", "via submissions")
			if code != 0 || !s.smtp.saw("Subject: via submissions") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("SMTP wrong password", func(t *testing.T) {
			t.Parallel()
			if code, out := s.submit(t, nextIP(), "smtp://"+s.ports["submission"], "abcd-efgh-ijkl-mnop", "PLAIN", "wrong"); code != 67 {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("SMTP with a caldav password", func(t *testing.T) {
			t.Parallel()
			if code, out := s.submit(t, nextIP(), "smtp://"+s.ports["submission"], cal.Password, "PLAIN", "caldav"); code != 67 || s.smtp.saw("Subject: caldav") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("revoked", func(t *testing.T) {
			t.Parallel()
			p := d.Add(t, "mail", "Old phone")
			from := nextIP()
			if code, out := s.imap(t, from, imapURL, p.Password); code != 0 {
				t.Fatalf("before remove: curl exit %d: %s", code, out)
			}
			d.Remove(t, p.UUID)
			if code, out := s.imap(t, from, imapURL, p.Password); code != 67 {
				t.Fatalf("IMAP after remove: curl exit %d: %s", code, out)
			}
			if code, out := s.submit(t, from, "smtp://"+s.ports["submission"], p.Password, "PLAIN", "revoked"); code != 67 {
				t.Fatalf("SMTP after remove: curl exit %d: %s", code, out)
			}
		})
	})

	t.Run("dovecot checkpassword", func(t *testing.T) {
		t.Run("right password", func(t *testing.T) {
			t.Parallel()
			code, out := s.imap(t, nextIP(), dovecotURL, mail.Password)
			if code != 0 || !strings.Contains(out, "INBOX") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
			if code, out := s.imap(t, nextIP(), dovecotURL, gatewaytest.Sloppy(mail.Password)); code != 0 {
				t.Fatalf("typed sloppily: curl exit %d: %s", code, out)
			}
			// Dovecot got the uuid as an extra field.
			if !strings.Contains(s.log("dovecot"), "apppass_uuid="+mail.UUID) {
				t.Fatalf("no apppass_uuid=%s in the Dovecot log", mail.UUID)
			}
		})
		refused := func(t *testing.T, password string) {
			t.Helper()
			code, out := s.imap(t, nextIP(), dovecotURL, password, "--verbose")
			if code != 67 || !strings.Contains(out, "AUTHENTICATIONFAILED") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		}
		t.Run("wrong password", func(t *testing.T) { t.Parallel(); refused(t, "abcd-efgh-ijkl-mnop") })
		t.Run("caldav password", func(t *testing.T) { t.Parallel(); refused(t, cal.Password) })
		t.Run("revoked", func(t *testing.T) {
			t.Parallel()
			p := d.Add(t, "mail", "Old tablet")
			if code, out := s.imap(t, nextIP(), dovecotURL, p.Password); code != 0 {
				t.Fatalf("before remove: curl exit %d: %s", code, out)
			}
			d.Remove(t, p.UUID)
			refused(t, p.Password)
		})
	})

	// Failed logins from one address throttle that login there, on every
	// gateway, and not from the user's other addresses.
	t.Run("throttled", func(t *testing.T) {
		// Passwords not used before: a password apppassd has just accepted
		// is answered from its cache, which no guess can hit, unthrottled.
		cal, mail := d.Add(t, "caldav", "New calendar"), d.Add(t, "mail", "New phone")
		from := nextIP()
		// Five failures block for 1 s, each further one (counted once the
		// block is over) twice as long: seven leave 4 s for the checks.
		deadline := time.Now().Add(30 * time.Second)
		for counted := 0; counted < 7; {
			e := d.Call(t, d.GatewayKey, "appPasswords.authenticate", map[string]any{
				"login": gatewaytest.DemoLogin, "password": "abcd-efgh-ijkl-mnop", "protocol": "caldav", "ip": from}, nil)
			switch {
			case e != nil && e.Code == -32010:
				counted++
			case e != nil && e.Code == -32029 && time.Now().Before(deadline):
				time.Sleep(50 * time.Millisecond)
			default:
				t.Fatalf("a wrong password: %+v", e)
			}
		}
		t.Run("DAV", func(t *testing.T) {
			t.Parallel()
			r := s.davRequest(t, from, "GET", "/caldav/", cal.Password, nil)
			if retry, _ := strconv.Atoi(r.header.Get("Retry-After")); r.status != 429 || retry < 1 {
				t.Fatalf("status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
			}
		})
		t.Run("IMAP via nginx", func(t *testing.T) {
			t.Parallel()
			if code, out := s.imap(t, from, imapURL, mail.Password, "--verbose"); code != 67 || !strings.Contains(out, "Too many failed logins") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
		})
		t.Run("Dovecot", func(t *testing.T) {
			t.Parallel()
			if code, out := s.imap(t, from, dovecotURL, mail.Password, "--verbose"); code != 67 || !strings.Contains(out, "AUTHENTICATIONFAILED") {
				t.Fatalf("curl exit %d: %s", code, out)
			}
			if !strings.Contains(s.log("dovecot"), "throttled by the sidecar") {
				t.Fatal("the Dovecot log does not say the login was throttled")
			}
		})
	})
	t.Run("not throttled elsewhere", func(t *testing.T) {
		if r := s.davRequest(t, nextIP(), "GET", "/caldav/", cal.Password, nil); r.status != 200 {
			t.Fatalf("from another address: status %d", r.status)
		}
	})

	// nginx keeps each attempt of a mail session in memory until the
	// session ends and asks the auth server to end it after 10 to 20: no
	// Auth-Wait then, and nginx closes the connection.
	t.Run("mail session ends after ten failures", func(t *testing.T) {
		if err := <-sessionEnded; err != nil {
			t.Fatal(err)
		}
	})

	// With apppassd gone, every gateway says "try again later", never
	// "wrong password".
	t.Run("apppassd down", func(t *testing.T) {
		d.Stop(t)
		if r := s.davRequest(t, nextIP(), "GET", "/caldav/", cal.Password, nil); r.status != 503 {
			t.Fatalf("DAV: status %d", r.status)
		}
		// nginx drops the connection (curl: 56), never "login denied" (67).
		if code, out := s.imap(t, nextIP(), imapURL, mail.Password, "--verbose"); code == 0 || code == 67 {
			t.Fatalf("IMAP via nginx: curl exit %d: %s", code, out)
		}
		code, out := s.imap(t, nextIP(), dovecotURL, mail.Password, "--verbose")
		if code != 67 || !strings.Contains(out, "UNAVAILABLE") || strings.Contains(out, "AUTHENTICATIONFAILED") {
			t.Fatalf("Dovecot: curl exit %d: %s", code, out)
		}
		if log := s.log("dovecot"); !strings.Contains(log, "exited with status 111") {
			t.Fatalf("Dovecot log has no checkpassword exit 111:\n%s", log)
		}
	})

	for _, p := range []gatewaytest.Password{cal, card, web, eas, mail} {
		for _, name := range []string{"dovecot", "nginx"} {
			if log := s.log(name); strings.Contains(log, p.Password) || strings.Contains(log, gatewaytest.Sloppy(p.Password)) {
				t.Errorf("a password appears in the %s log", name)
			}
		}
	}
}

// failTenTimes logs in with wrong passwords on one IMAPS connection from
// the client address from: ten are refused, and then nginx closes it.
func (s *stack) failTenTimes(from string) error {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(dialer, "tcp", s.ports["imaps"], &tls.Config{RootCAs: s.ca})
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return fmt.Errorf("greeting: %v", err)
	}
	for i := 1; i <= 11; i++ {
		// A different unknown login each time: the pair throttle stays out of it.
		fmt.Fprintf(c, "a%d LOGIN nobody%d@example.com abcd-efgh-ijkl-mnop\r\n", i, i)
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := r.ReadString('\n')
		switch {
		case i <= 10 && !strings.HasPrefix(line, fmt.Sprintf("a%d NO ", i)):
			return fmt.Errorf("attempt %d: %q, %v", i, line, err)
		case i == 11 && err == nil:
			return fmt.Errorf("attempt 11 was answered (%q): the session did not end", line)
		}
	}
	return nil
}
