package main

import (
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
	"github.com/apppass/apppass/rpc/client"
	"github.com/apppass/apppass/rpc/errcode"
)

// oneErrorLine fails unless stderr is exactly one line naming the command
// and stdout is empty.
func oneErrorLine(t *testing.T, f *fakeSystem, cmd string) {
	t.Helper()
	e := f.stderr.String()
	if strings.Count(e, "\n") != 1 || !strings.HasSuffix(e, "\n") || !strings.HasPrefix(e, "apppass "+cmd+": ") {
		t.Fatalf("want one line starting %q on stderr, got %q", "apppass "+cmd+": ", e)
	}
	if f.stdout.Len() != 0 {
		t.Fatalf("stdout on failure: %q", f.stdout.String())
	}
}

var demoUser = []string{"--context", "1", "--user", "3", "--login", "demo@example.com"}

func withUser(args ...string) []string { return append(append([]string{}, args...), demoUser...) }

// TestAdminUsageErrors: wrong flags and arguments are exit 2 with one line,
// decided before any key is looked for (there is none here) or any call.
func TestAdminUsageErrors(t *testing.T) {
	const secret = "abcd-efgh-ijkl-mnop"
	for _, tc := range []struct {
		name string
		args []string
		in   string // in stderr
	}{
		{"unknown flag", withUser("list", "--bogus"), "flag provided but not defined"},
		{"no user", []string{"list"}, "missing --context, --user, --login"},
		{"no login", []string{"list", "--context", "1", "--user", "3"}, "missing --login"},
		{"blank login", []string{"list", "--context", "1", "--user", "3", "--login", "  "}, "missing --login"},
		{"negative user", []string{"list", "--context", "1", "--user", "-3", "--login", "a"}, "at least 0"},
		{"context not a number", []string{"list", "--context", "one", "--user", "3", "--login", "a"}, "whole number"},
		{"extra argument", withUser("list", "extra"), `unexpected argument "extra"`},
		{"list json=maybe", withUser("list", "--json=maybe"), "invalid boolean"},
		{"add without app", withUser("add", "--name", "x"), "--app and --name are required"},
		{"add without name", withUser("add", "--app", "mail"), "--app and --name are required"},
		{"add bad expires", withUser("add", "--app", "mail", "--name", "x", "--expires", "tomorrow"), "--expires"},
		{"add past duration", withUser("add", "--app", "mail", "--name", "x", "--expires", "-1h"), "--expires"},
		{"add bad idle", withUser("add", "--app", "mail", "--name", "x", "--idle-expiry", "30d"), "--idle-expiry"},
		{"add short idle", withUser("add", "--app", "mail", "--name", "x", "--idle-expiry", "10ms"), "--idle-expiry"},
		{"add bad ip", withUser("add", "--app", "mail", "--name", "x", "--allowed-ip", "300.1.1.1"), "--allowed-ip"},
		{"remove without uuid", withUser("remove"), "want 1 argument"},
		{"remove two uuids", withUser("remove", "a", "b"), "want 1 argument"},
		{"remove blank uuid", withUser("remove", " "), "uuid is empty"},
		{"remove-all extra", withUser("remove-all", "mail"), "unexpected argument"},
		{"apps extra", []string{"apps", "x"}, "unexpected argument"},
		{"health extra", []string{"health", "now"}, "unexpected argument"},
		{"token no user", []string{"token"}, "missing"},
		{"token bad ttl", withUser("token", "--ttl", "-1h"), "--ttl must be positive"},
		{"token ttl not a duration", withUser("token", "--ttl", "1d"), "invalid value"},
		{"authenticate no login", []string{"authenticate", "--protocol", "imap"}, "--login and --protocol are required"},
		{"authenticate no protocol", []string{"authenticate", "--login", "a"}, "--login and --protocol are required"},
		{"authenticate password as argument", []string{"authenticate", "--login", "a", "--protocol", "imap", secret}, "never from the command line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSystem{env: map[string]string{"APPPASS_DATA_DIR": t.TempDir()}}
			if code := run(tc.args, f.system()); code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr %q", code, f.stderr.String())
			}
			oneErrorLine(t, f, tc.args[0])
			if !strings.Contains(f.stderr.String(), tc.in) || !strings.Contains(f.stderr.String(), "--help") {
				t.Fatalf("stderr %q, want %q", f.stderr.String(), tc.in)
			}
			if strings.Contains(f.stderr.String(), secret) {
				t.Fatal("the password was echoed")
			}
		})
	}
}

// TestAdminBadEnvironment: a malformed APPPASS_URL or APPPASS_TIMEOUT is a
// usage error (2), even with a key at hand.
func TestAdminBadEnvironment(t *testing.T) {
	for _, env := range []map[string]string{
		{"APPPASS_URL": "127.0.0.1:8080"},
		{"APPPASS_URL": "ftp://127.0.0.1"},
		{"APPPASS_TIMEOUT": "5"},
		{"APPPASS_TIMEOUT": "-1s"},
	} {
		for _, args := range [][]string{withUser("list"), {"apps"}, {"health"}} {
			env["APPPASS_ADMIN_KEY"] = "an-admin-key-0123456789"
			f := &fakeSystem{env: env}
			if code := run(args, f.system()); code != exitUsage {
				t.Fatalf("%v %q: exit %d, want 2", env, args, code)
			}
			oneErrorLine(t, f, args[0])
		}
	}
}

// TestAdminMissingKeys: no key anywhere is exit 3 with one line saying
// where it was looked for; a named key file that cannot be read as well.
func TestAdminMissingKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{withUser("list"), "no admin key: set APPPASS_ADMIN_KEY or APPPASS_ADMIN_KEY_FILE (" + filepath.Join(dir, datadir.AdminKeyFile) + " not found"},
		{withUser("add", "--app", "mail", "--name", "x"), "no admin key"},
		{withUser("remove", "some-uuid"), "no admin key"},
		{withUser("remove-all"), "no admin key"},
		{[]string{"apps"}, "no admin key"},
		{[]string{"authenticate", "--login", "a", "--protocol", "imap"}, "no gateway key or admin key: set APPPASS_GATEWAY_KEY or APPPASS_GATEWAY_KEY_FILE or APPPASS_ADMIN_KEY"},
		{withUser("token"), "no user-token key: set APPPASS_USER_TOKEN_KEY (" + filepath.Join(dir, datadir.UserTokenKeyFile) + " not found"},
	} {
		f := &fakeSystem{env: map[string]string{"APPPASS_DATA_DIR": dir}, stdin: []byte("abcd-efgh-ijkl-mnop\n")}
		if code := run(tc.args, f.system()); code != exitUnreachable {
			t.Fatalf("%q: exit %d, want 3; stderr %q", tc.args, code, f.stderr.String())
		}
		oneErrorLine(t, f, tc.args[0])
		if !strings.Contains(f.stderr.String(), tc.want) {
			t.Fatalf("%q: stderr %q, want %q", tc.args, f.stderr.String(), tc.want)
		}
	}

	// A key file that is named but missing, or a data-dir key file that
	// cannot be read (a directory here).
	f := &fakeSystem{env: map[string]string{"APPPASS_ADMIN_KEY_FILE": filepath.Join(dir, "nope")}}
	if code := run(withUser("list"), f.system()); code != exitUnreachable || !strings.Contains(f.stderr.String(), "APPPASS_ADMIN_KEY_FILE") {
		t.Fatalf("missing key file: exit %d %q", code, f.stderr.String())
	}
	if err := os.Mkdir(filepath.Join(dir, datadir.AdminKeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	f = &fakeSystem{env: map[string]string{"APPPASS_DATA_DIR": dir}}
	if code := run([]string{"apps"}, f.system()); code != exitUnreachable || !strings.Contains(f.stderr.String(), "reading the admin key") {
		t.Fatalf("unreadable admin.key: exit %d %q", code, f.stderr.String())
	}
	oneErrorLine(t, f, "apps")

	// A user-token key too short for apppassd: 3, without printing it.
	f = &fakeSystem{env: map[string]string{"APPPASS_USER_TOKEN_KEY": "short-key-secret"}}
	if code := run(withUser("token"), f.system()); code != exitUnreachable || strings.Contains(f.stderr.String(), "short-key-secret") ||
		!strings.Contains(f.stderr.String(), "at least 32 bytes") {
		t.Fatalf("short token key: exit %d %q", code, f.stderr.String())
	}
}

// TestToken: the token verifies with the key, names the user and expires
// after --ttl; the key comes from the variable or else the data dir.
func TestToken(t *testing.T) {
	key := strings.Repeat("k", 40)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, datadir.UserTokenKeyFile), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := apppass.NewUserTokens([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	for name, env := range map[string]map[string]string{
		"variable": {"APPPASS_USER_TOKEN_KEY": key, "APPPASS_DATA_DIR": t.TempDir()},
		"data dir": {"APPPASS_DATA_DIR": dir},
	} {
		f := &fakeSystem{env: env}
		before := time.Now().Truncate(time.Second)
		code := run([]string{"token", "--ttl", "30m", "--login", "alice@example.com", "--user", "0", "--context", "42"}, f.system())
		after := time.Now()
		out := f.stdout.String()
		if code != 0 || f.stderr.Len() != 0 || strings.Count(out, "\n") != 1 {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, code, out, f.stderr.String())
		}
		got, err := tokens.Verify(strings.TrimSpace(out), time.Now())
		if err != nil || got.ViaAppPassword || got.User != (apppass.User{ContextID: 42, UserID: 0, Login: "alice@example.com"}) {
			t.Fatalf("%s: %+v %v", name, got, err)
		}
		if expires := got.Expires; expires.Before(before.Add(30*time.Minute)) || expires.After(after.Add(30*time.Minute)) {
			t.Fatalf("%s: expires %v, want 30m after %v", name, expires, before)
		}
	}
	// Another key's token does not verify: the key really is the one used.
	other, _ := apppass.NewUserTokens([]byte(strings.Repeat("o", 40)))
	f := &fakeSystem{env: map[string]string{"APPPASS_DATA_DIR": dir}}
	run(withUser("token"), f.system())
	if _, err := other.Verify(strings.TrimSpace(f.stdout.String()), time.Now()); err == nil {
		t.Fatal("a token verified with another key")
	}
}

func TestReadPasswordInput(t *testing.T) {
	for _, tc := range []struct {
		stdin string
		want  string
		ok    bool
	}{
		{"abcd-efgh-ijkl-mnop\n", "abcd-efgh-ijkl-mnop", true},
		{"abcd-efgh-ijkl-mnop\r\nsecond line\n", "abcd-efgh-ijkl-mnop", true},
		{"abcd-efgh-ijkl-mnop", "abcd-efgh-ijkl-mnop", true}, // no newline
		{"ABCD EFGH IJKL MNOP\n", "ABCD EFGH IJKL MNOP", true},
		{"", "", false},
		{"\n", "", false},
		{"   \n", "", false},
		{strings.Repeat("a", maxPasswordLine+10) + "\n", "", false},
	} {
		f := &fakeSystem{stdin: []byte(tc.stdin)}
		p, err := readPasswordInput(f.system())
		if (err == nil) != tc.ok || string(p) != tc.want {
			t.Errorf("stdin %.30q: %q %v", tc.stdin, p, err)
		}
		if f.stderr.Len() != 0 {
			t.Errorf("stdin %.30q: a prompt without a terminal: %q", tc.stdin, f.stderr.String())
		}
	}
	// A terminal: prompted on stderr, typed without echo.
	f := &fakeSystem{terminal: true, typed: []byte("abcd-efgh-ijkl-mnop\n"), stdin: []byte("not this\n")}
	if p, err := readPasswordInput(f.system()); err != nil || string(p) != "abcd-efgh-ijkl-mnop" || f.stderr.String() != "App password: \n" {
		t.Fatalf("terminal: %q %v %q", p, err, f.stderr.String())
	}
	f = &fakeSystem{terminal: true, typed: []byte("\n")}
	if _, err := readPasswordInput(f.system()); err == nil {
		t.Fatal("terminal: an empty password accepted")
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	for _, args := range [][]string{
		{"the-uuid", "--context", "1", "--user", "3", "--login", "a"},
		{"--context", "1", "the-uuid", "--user", "3", "--login", "a"},
		{"--context", "1", "--user", "3", "--login", "a", "the-uuid"},
		{"--context", "1", "--user", "3", "--login", "a", "--", "the-uuid"},
	} {
		f := &fakeSystem{}
		u, pos, _, code, done := adminFlags(f.system(), removeCommand, flag.NewFlagSet("remove", flag.ContinueOnError), args, 1)
		if done || code != 0 || !slices.Equal(pos, []string{"the-uuid"}) || u.contextID.v != 1 || u.userID.v != 3 || u.login != "a" {
			t.Errorf("%q: %+v %q %d %v %s", args, u, pos, code, done, f.stderr.String())
		}
	}
	// After "--" a flag-like argument is an argument.
	f := &fakeSystem{}
	_, pos, _, _, done := adminFlags(f.system(), removeCommand, flag.NewFlagSet("remove", flag.ContinueOnError), append(append([]string{}, demoUser...), "--", "--json"), 1)
	if done || !slices.Equal(pos, []string{"--json"}) {
		t.Fatalf("after --: %q %v %s", pos, done, f.stderr.String())
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&client.Error{Code: errcode.Rejected}, 1},
		{&client.Error{Code: -32004}, 1},
		{&client.Error{Code: errcode.InvalidParams}, 1},
		{&client.Error{Code: errcode.Limit}, 1},
		{&client.Error{Code: errcode.Unavailable}, 1},
		{&client.Error{Code: errcode.Unauthenticated}, 3},
		{&client.Error{Code: errcode.Forbidden}, 3},
		{&keyError{"no admin key"}, 3},
		{errors.Join(errConfig, errors.New("APPPASS_URL")), 2},
		{errors.New("calling http://127.0.0.1:1/rpc: connection refused"), 3},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if got := describe(&client.Error{Code: errcode.Limit, Message: "too many failed logins", Data: []byte(`{"retryAfter":7}`)}); got != "too many failed logins (-32029): retry after 7 s" {
		t.Errorf("describe: %q", got)
	}
}

// TestHealthNotApppassd: a URL where something else answers is "cannot
// reach apppassd" (3), not "not ready".
func TestHealthNotApppassd(t *testing.T) {
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	noStatus := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"hello":"world"}`))
	}))
	defer noStatus.Close()
	for _, url := range []string{other.URL, noStatus.URL} {
		f := &fakeSystem{env: map[string]string{"APPPASS_URL": url}}
		if code := run([]string{"health"}, f.system()); code != exitUnreachable || !strings.Contains(f.stderr.String(), "is this apppassd?") {
			t.Fatalf("%s: exit %d %q", url, code, f.stderr.String())
		}
		oneErrorLine(t, f, "health")
	}
}

func TestAdminHelp(t *testing.T) {
	f := &fakeSystem{}
	if code := run([]string{"--help"}, f.system()); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(f.stdout.String(), "  "+c.name+" ") {
			t.Errorf("--help does not list %s", c.name)
		}
	}
	for _, want := range []string{"Exit codes:", "APPPASS_ADMIN_KEY", "APPPASS_DATA_DIR", "--json"} {
		if !strings.Contains(f.stdout.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	flags := map[string][]string{
		"list": {"-context", "-user", "-login", "-json"}, "add": {"-app", "-name", "-expires", "-idle-expiry", "-allowed-ip"},
		"remove": {"-login"}, "remove-all": {"-app"}, "apps": {"-json"}, "token": {"-ttl", "-login"},
		"authenticate": {"-login", "-protocol", "-ip"}, "health": {"-json"},
	}
	for name, want := range flags {
		for _, args := range [][]string{{name, "--help"}, {name, "-h"}, {"help", name}} {
			f := &fakeSystem{}
			if code := run(args, f.system()); code != 0 || f.stderr.Len() != 0 {
				t.Fatalf("%q: exit %d %q", args, code, f.stderr.String())
			}
			out := f.stdout.String()
			if !strings.HasPrefix(out, "Usage: apppass "+name+" ") || !strings.Contains(out, "Exit codes:") {
				t.Fatalf("%q:\n%s", args, out)
			}
			for _, flag := range want {
				if !regexp.MustCompile(`(?m)^  ` + flag + `( |$)`).MatchString(out) {
					t.Fatalf("%q does not list %s:\n%s", args, flag, out)
				}
			}
		}
	}
}
