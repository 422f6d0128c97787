package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/client"
	"github.com/apppass/apppass/rpc/errcode"
)

var authenticateCommand = &command{
	name:    "authenticate",
	args:    "--login LOGIN --protocol PROTOCOL [--ip IP] [--json] < password",
	summary: "test an app password as a gateway would (gateway or admin key)",
	help: `Asks apppassd whether the password is a valid app password of the login
for the protocol (appPasswords.authenticate), from address --ip, and prints
the password's uuid, user and app when it is. The password is read from
standard input (its first line), or typed at a prompt without echo when
standard input is a terminal; never from the command line, where ps would
show it. A success records a login (lastLogin, a used event); failures count
towards the login throttle like any other.

Exit 0 when the password is accepted, 1 when it is refused (wrong, unknown,
revoked, another app's, throttled, an unknown protocol).

The key is the gateway key (APPPASS_GATEWAY_KEY, APPPASS_GATEWAY_KEY_FILE,
or gateway.key in the data dir), else the admin key.
`,
	run: runAuthenticate,
}

// maxPasswordLine bounds what is read from stdin: app passwords are 19
// characters; anything much longer is not one.
const maxPasswordLine = 1024

func runAuthenticate(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	login := fs.String("login", "", "the login, e.g. alice@example.com (required)")
	protocol := fs.String("protocol", "", "imap, pop3, smtp, caldav, carddav, webdav, drive or eas (required)")
	ip := fs.String("ip", "", "the client's address (passwords with allowed IPs need it)")
	asJSON := fs.Bool("json", false, "print the raw JSON-RPC result instead of a table")
	pos, code, done := parseFlags(sys, c, fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		// Most likely the password: say so without echoing it.
		return usageError(sys, c, "unexpected argument: the password is read from standard input, never from the command line")
	}
	if strings.TrimSpace(*login) == "" || strings.TrimSpace(*protocol) == "" {
		return usageError(sys, c, "--login and --protocol are required")
	}
	s, err := sidecarFromEnv(sys.getenv, demoGatewayKey, adminKey)
	if err != nil {
		return fail(sys, c, err)
	}
	password, err := readPasswordInput(sys)
	defer clear(password)
	if err != nil {
		return usageError(sys, c, "%v", err)
	}
	params := map[string]any{"login": *login, "password": string(password), "protocol": *protocol}
	if *ip != "" {
		params["ip"] = *ip
	}
	var raw json.RawMessage
	if err := s.call(context.Background(), "appPasswords.authenticate", params, &raw); err != nil {
		var re *client.Error
		if errors.As(err, &re) && re.Code == errcode.Rejected {
			fmt.Fprintf(sys.stderr, "apppass %s: refused: not a valid app password of %q for %s (%d)\n", c.name, *login, *protocol, re.Code)
			return exitFailed
		}
		return fail(sys, c, err)
	}
	if *asJSON {
		fmt.Fprintf(sys.stdout, "%s\n", raw)
		return exitSuccess
	}
	var r apppass.Authenticated
	if err := json.Unmarshal(raw, &r); err != nil {
		return fail(sys, c, fmt.Errorf("appPasswords.authenticate: unexpected result: %w", err))
	}
	fmt.Fprintln(sys.stdout, "Accepted.")
	table(sys.stdout, []string{"UUID", "CONTEXT", "USER", "LOGIN", "APP", "SCOPES"}, [][]string{{
		r.UUID, fmt.Sprint(r.ContextID), fmt.Sprint(r.UserID), r.Login, r.AppScope, strings.Join(r.Scopes, ","),
	}})
	return exitSuccess
}

// readPasswordInput prompts for the password on a terminal (no echo), or
// reads the first line of stdin.
func readPasswordInput(sys *system) ([]byte, error) {
	if sys.stdinTerminal != nil && sys.stdinTerminal() {
		fmt.Fprint(sys.stderr, "App password: ")
		p, err := sys.readPassword()
		fmt.Fprintln(sys.stderr)
		if err != nil {
			return nil, fmt.Errorf("reading the password: %v", err)
		}
		return checkPassword(p)
	}
	r := bufio.NewReaderSize(io.LimitReader(sys.stdin, maxPasswordLine+1), maxPasswordLine+1)
	line, err := r.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("the first line of standard input is longer than %d bytes: not an app password", maxPasswordLine)
		}
		return nil, fmt.Errorf("reading the password from standard input: %v", err)
	}
	p := bytes.Clone(line)
	clear(line)
	return checkPassword(p)
}

// checkPassword trims the line end and refuses an empty password.
func checkPassword(p []byte) ([]byte, error) {
	p = bytes.TrimRight(p, "\r\n")
	if len(bytes.TrimSpace(p)) == 0 {
		return nil, errors.New("no password on standard input")
	}
	return p, nil
}
