package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/client"
	"github.com/apppass/apppass/rpc/errcode"
)

// Exit codes of the checkpassword protocol, as Dovecot reads them
// (src/auth/db-checkpassword.c).
const (
	exitOK = 0
	// exitRefused: the login is not accepted (wrong, revoked or unknown
	// password, a protocol the app may not use, too many failures).
	exitRefused = 1
	// exitProtocol: we were called wrongly (no fd 3, malformed input, no
	// gateway key). Dovecot logs it and answers a temporary failure.
	exitProtocol = 2
	// exitNoLookups answers a lookup (AUTHORIZED set: a userdb or a
	// credentials lookup, which has no password to check) with
	// "user unknown", the answer Dovecot expects for lookups it cannot have.
	exitNoLookups = 3
	// exitTempFail: the sidecar could not give an answer (down, timed out,
	// MongoDB unavailable). Dovecot tells the client to try again later
	// instead of "wrong password".
	exitTempFail = 111
)

// maxInput is the checkpassword protocol's limit on what arrives on fd 3.
const maxInput = 512

// uuidField is the extra field (and environment variable) carrying the
// app password's uuid to Dovecot.
const uuidField = "apppass_uuid"

var checkpasswordCommand = &command{
	name:    "checkpassword",
	args:    "<reply-program> [args...]",
	summary: "check an app password for Dovecot (checkpassword protocol)",
	help: `Reads "login\0password\0..." (at most 512 bytes) from file descriptor 3 and
asks the sidecar (appPasswords.authenticate) whether the password is a
valid app password of that login for the protocol in SERVICE (imap, pop3,
smtp; Dovecot's "submission" counts as smtp), from the client address in
TCPREMOTEIP.

On success it runs <reply-program> with USER set to the login as the
sidecar knows it and the extra field apppass_uuid (EXTRA=apppass_uuid), so
Dovecot's checkpassword-reply hands both to Dovecot. Otherwise it exits:
  1    the password is refused (wrong, revoked, another app's, throttled)
  2    called wrongly: no file descriptor 3, malformed input, no gateway key
  3    a lookup without a password (AUTHORIZED set): not supported
  111  temporary failure: the sidecar is unreachable, timed out or unavailable

Dovecot (deploy/dovecot/apppass.conf is a complete example):
  passdb {
    driver = checkpassword
    args = /usr/local/bin/apppass checkpassword
  }
  service auth {
    vsz_limit = 1G   # a Go program needs ~750 MB of address space to start
  }
The password is never printed or logged.
`,
	run: runCheckpassword,
}

func runCheckpassword(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(sys.stdout, c)
			return exitOK
		}
		fmt.Fprintf(sys.stderr, "apppass %s: %v (see apppass %s --help)\n", c.name, err, c.name)
		return exitProtocol
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(sys.stderr, "apppass checkpassword: "+format+"\n", a...)
	}
	reply := fs.Args()
	if len(reply) == 0 {
		logf("missing the reply program to run on success (usage: apppass checkpassword <reply-program> [args...])")
		return exitProtocol
	}
	if sys.getenv("AUTHORIZED") != "" {
		logf("lookups without a password (AUTHORIZED=%s) are not supported; use apppass as a passdb only, with a static or prefetch userdb", sys.getenv("AUTHORIZED"))
		return exitNoLookups
	}

	login, password, protocol, code := readCredentials(sys, logf)
	if code != exitOK {
		return code
	}
	if login == "" || password == "" {
		return exitRefused
	}
	s, err := sidecarFromEnv(sys.getenv, gatewayKey)
	if err != nil {
		logf("%v", err)
		return exitProtocol
	}

	a := apppass.LoginAttempt{Login: login, Password: password, Protocol: protocol}
	if ip, err := netip.ParseAddr(sys.getenv("TCPREMOTEIP")); err == nil {
		a.IP = ip.Unmap().String()
	}
	res, err := s.authenticate(a)
	if code := exitCodeFor(err); code != exitOK {
		var re *client.Error
		switch {
		case errors.As(err, &re) && re.Code == errcode.Rejected:
			// An ordinary refusal; Dovecot logs it itself.
		case errors.As(err, &re) && re.Code == errcode.Limit:
			logf("login of %q throttled by the sidecar (retry after %d s)", login, int(re.RetryAfter().Seconds()))
		default:
			logf("login of %q: %v", login, err)
		}
		return code
	}
	if res.Login == "" || res.UUID == "" || strings.ContainsAny(res.Login+res.UUID, "\t\r\n\x00") {
		logf("the sidecar answered an unusable login or uuid")
		return exitTempFail
	}
	return runReply(sys, reply, res.Login, res.UUID, logf)
}

// readCredentials reads login and password from file descriptor 3 and the
// protocol from SERVICE; a code other than exitOK says why it cannot.
func readCredentials(sys *system, logf func(string, ...any)) (login, password, protocol string, code int) {
	in, err := sys.input()
	if err != nil {
		logf("no credentials on file descriptor 3 (%v): run me as Dovecot's checkpassword passdb", err)
		return "", "", "", exitProtocol
	}
	raw, err := readInput(in)
	in.Close()
	defer clear(raw)
	if err != nil {
		logf("%v", err)
		return "", "", "", exitProtocol
	}
	if login, password, err = parseInput(raw); err != nil {
		logf("%v", err)
		return "", "", "", exitProtocol
	}
	if protocol, err = protocolFor(sys.getenv("SERVICE")); err != nil {
		logf("%v", err)
		return "", "", "", exitProtocol
	}
	return login, password, protocol, exitOK
}

// runReply replaces this process with the reply program, which hands login
// and uuid to Dovecot; it returns only if it cannot.
func runReply(sys *system, reply []string, login, uuid string, logf func(string, ...any)) int {
	path := reply[0]
	if !strings.Contains(path, "/") {
		var err error
		if path, err = exec.LookPath(path); err != nil {
			logf("reply program: %v", err)
			return exitTempFail
		}
	}
	err := sys.exec(path, reply, replyEnv(sys.environ(), login, uuid))
	logf("running the reply program %s: %v", path, err)
	return exitTempFail
}

// exitCodeFor maps the outcome of appPasswords.authenticate to an exit code.
func exitCodeFor(err error) int {
	if err == nil {
		return exitOK
	}
	var re *client.Error
	if errors.As(err, &re) {
		switch re.Code {
		case errcode.Rejected, errcode.Limit:
			return exitRefused
		case errcode.InvalidParams:
			// Not a password this protocol can take (say SERVICE=sieve, or
			// a login longer than any real one): refused, and logged.
			return exitRefused
		}
		// -32050 (MongoDB unavailable), -32603, and a gateway key the
		// sidecar does not accept (-32001, -32003): not the user's fault,
		// so never "wrong password".
	}
	return exitTempFail
}

// openFD3 returns file descriptor 3, where checkpassword credentials arrive.
func openFD3() (io.ReadCloser, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(3, &st); err != nil {
		return nil, err
	}
	return os.NewFile(3, "checkpassword-input"), nil
}

// readInput reads all of fd 3, at most maxInput bytes.
func readInput(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("reading file descriptor 3: %v", err)
	}
	if len(raw) > maxInput {
		clear(raw)
		return nil, fmt.Errorf("more than %d bytes on file descriptor 3", maxInput)
	}
	return raw, nil
}

// parseInput splits "login\0password\0timestamp\0" (the timestamp, for APOP
// only, may be missing or empty).
func parseInput(raw []byte) (login, password string, err error) {
	i := bytes.IndexByte(raw, 0)
	if i < 0 {
		return "", "", errors.New(`malformed input on file descriptor 3: want "login\0password\0"`)
	}
	rest := raw[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 {
		return "", "", errors.New(`malformed input on file descriptor 3: want "login\0password\0"`)
	}
	return string(raw[:i]), string(rest[:j]), nil
}

// protocolFor turns Dovecot's SERVICE into the sidecar's protocol name.
func protocolFor(service string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(service))
	switch s {
	case "":
		return "", errors.New("SERVICE is not set (imap, pop3, smtp, submission, …)")
	case "submission":
		return "smtp", nil
	}
	return s, nil
}

// replyEnv is the environment for the reply program: ours, with USER, the
// uuid and EXTRA naming it (Dovecot's checkpassword-reply turns each name in
// EXTRA into an extra field).
func replyEnv(environ []string, login, uuid string) []string {
	out := make([]string, 0, len(environ)+3)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if name == "USER" || name == "EXTRA" || name == uuidField {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "USER="+login, uuidField+"="+uuid, "EXTRA="+uuidField)
}
