package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/apppass/apppass/rpc/client"
)

// fakeSystem runs subcommands in-process: fd 3 holds input (or is absent
// when input is nil), and exec records what would have run.
type fakeSystem struct {
	env            map[string]string
	input          []byte
	stdout, stderr bytes.Buffer
	execPath       string
	execArgv       []string
	execEnv        []string
	// stdin is standard input; with terminal set it is a terminal, from
	// which readPassword returns typed.
	stdin    []byte
	terminal bool
	typed    []byte
}

func (f *fakeSystem) system() *system {
	return &system{
		getenv: func(k string) string { return f.env[k] },
		environ: func() []string {
			var out []string
			for k, v := range f.env {
				out = append(out, k+"="+v)
			}
			return out
		},
		stdout: &f.stdout,
		stderr: &f.stderr,
		input: func() (io.ReadCloser, error) {
			if f.input == nil {
				return nil, errors.New("bad file descriptor")
			}
			return io.NopCloser(bytes.NewReader(f.input)), nil
		},
		exec: func(path string, argv, env []string) error {
			f.execPath, f.execArgv, f.execEnv = path, argv, env
			return errors.New("exec recorded")
		},
		stdin:         bytes.NewReader(f.stdin),
		stdinTerminal: func() bool { return f.terminal },
		readPassword:  func() ([]byte, error) { return bytes.Clone(f.typed), nil },
	}
}

func TestParseInput(t *testing.T) {
	for _, tc := range []struct {
		in              string
		login, password string
		ok              bool
	}{
		{"alice@example.com\x00abcd-efgh-ijkl-mnop\x00\x00", "alice@example.com", "abcd-efgh-ijkl-mnop", true},
		{"alice\x00secret\x00", "alice", "secret", true},                   // no timestamp
		{"alice\x00secret\x001700000000\x00", "alice", "secret", true},     // APOP timestamp
		{"alice\x00pass word\x00\x00trailing", "alice", "pass word", true}, // anything after is ignored
		{"\x00\x00\x00", "", "", true},
		{"alice\x00secret", "", "", false}, // no NUL after the password
		{"alice", "", "", false},
		{"", "", "", false},
	} {
		login, password, err := parseInput([]byte(tc.in))
		if (err == nil) != tc.ok || login != tc.login || password != tc.password {
			t.Errorf("parseInput(%q) = %q, %q, %v", tc.in, login, password, err)
		}
	}
}

func TestReadInputLimit(t *testing.T) {
	if raw, err := readInput(bytes.NewReader(make([]byte, maxInput))); err != nil || len(raw) != maxInput {
		t.Fatalf("512 bytes: %d %v", len(raw), err)
	}
	if _, err := readInput(bytes.NewReader(make([]byte, maxInput+1))); err == nil {
		t.Fatal("513 bytes accepted")
	}
}

func TestProtocolFor(t *testing.T) {
	for service, want := range map[string]string{
		"imap": "imap", "IMAP": "imap", "pop3": "pop3", "smtp": "smtp", "submission": "smtp", "sieve": "sieve",
	} {
		if got, err := protocolFor(service); err != nil || got != want {
			t.Errorf("protocolFor(%q) = %q, %v", service, got, err)
		}
	}
	if _, err := protocolFor(""); err == nil {
		t.Error("an empty SERVICE is accepted")
	}
}

func TestExitCodeFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&client.Error{Code: -32010}, 1},
		{&client.Error{Code: -32029}, 1},
		{&client.Error{Code: -32602}, 1},
		{&client.Error{Code: -32050}, 111},
		{&client.Error{Code: -32603}, 111},
		{&client.Error{Code: -32001}, 111},
		{&client.Error{Code: -32003}, 111},
		{errors.New("dial tcp: connection refused"), 111},
	} {
		if got := exitCodeFor(tc.err); got != tc.want {
			t.Errorf("exitCodeFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestReplyEnv(t *testing.T) {
	env := replyEnv([]string{"PATH=/bin", "USER=dovecot", "EXTRA=old", "apppass_uuid=stale", "SERVICE=imap"}, "demo@example.com", "u-1")
	want := []string{"PATH=/bin", "SERVICE=imap", "USER=demo@example.com", "apppass_uuid=u-1", "EXTRA=apppass_uuid"}
	if !slices.Equal(env, want) {
		t.Fatalf("replyEnv = %q", env)
	}
}

func TestSidecarFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	s, err := sidecarFromEnv(env("APPPASS_GATEWAY_KEY", " key \n"), gatewayKey)
	if err != nil || s.endpoint != defaultURL+"/rpc" || s.bearer != "key" || s.timeout != defaultTimeout {
		t.Fatalf("defaults: %+v %v", s, err)
	}
	s, err = sidecarFromEnv(env("APPPASS_URL", "https://apppass.internal:8443/", "APPPASS_GATEWAY_KEY", "k", "APPPASS_TIMEOUT", "250ms"), gatewayKey)
	if err != nil || s.endpoint != "https://apppass.internal:8443/rpc" || s.timeout.Milliseconds() != 250 {
		t.Fatalf("configured: %+v %v", s, err)
	}
	keyFile := t.TempDir() + "/key"
	if err := writeFile(keyFile, "from-file\n"); err != nil {
		t.Fatal(err)
	}
	if s, err = sidecarFromEnv(env("APPPASS_GATEWAY_KEY_FILE", keyFile), gatewayKey); err != nil || s.bearer != "from-file" {
		t.Fatalf("key file: %+v %v", s, err)
	}
	for _, bad := range [][]string{
		{},
		{"APPPASS_GATEWAY_KEY_FILE", keyFile + ".missing"},
		{"APPPASS_GATEWAY_KEY", "k", "APPPASS_URL", "127.0.0.1:8080"},
		{"APPPASS_GATEWAY_KEY", "k", "APPPASS_TIMEOUT", "5"},
		{"APPPASS_GATEWAY_KEY", "a\nb"},
	} {
		if _, err := sidecarFromEnv(env(bad...), gatewayKey); !errors.Is(err, errConfig) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestCheckpasswordCalledWrongly covers what is decided before the sidecar
// is asked: each is exit 2 (or 3 for lookups, 1 for empty credentials), and
// the reply program never runs.
func TestCheckpasswordCalledWrongly(t *testing.T) {
	good := map[string]string{"SERVICE": "imap", "APPPASS_GATEWAY_KEY": "key", "APPPASS_URL": "http://127.0.0.1:1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	const secret = "abcd-efgh-ijkl-mnop"
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		input []byte
		want  int
	}{
		{"no fd 3", []string{"/bin/true"}, good, nil, 2},
		{"malformed", []string{"/bin/true"}, good, []byte("alice " + secret), 2},
		{"too long", []string{"/bin/true"}, good, append([]byte("alice\x00"+secret+"\x00"), make([]byte, 600)...), 2},
		{"no reply program", nil, good, []byte("alice\x00" + secret + "\x00"), 2},
		{"unknown flag", []string{"-x", "/bin/true"}, good, []byte("alice\x00" + secret + "\x00"), 2},
		{"no SERVICE", []string{"/bin/true"}, with("SERVICE", ""), []byte("alice\x00" + secret + "\x00"), 2},
		{"no gateway key", []string{"/bin/true"}, with("APPPASS_GATEWAY_KEY", ""), []byte("alice\x00" + secret + "\x00"), 2},
		{"bad URL", []string{"/bin/true"}, with("APPPASS_URL", "ftp://x"), []byte("alice\x00" + secret + "\x00"), 2},
		{"lookup", []string{"/bin/true"}, with("AUTHORIZED", "1"), []byte("alice\x00\x00"), 3},
		{"empty password", []string{"/bin/true"}, good, []byte("alice\x00\x00"), 1},
		{"empty login", []string{"/bin/true"}, good, []byte("\x00" + secret + "\x00"), 1},
		{"sidecar unreachable", []string{"/bin/true"}, good, []byte("alice\x00" + secret + "\x00"), 111},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSystem{env: tc.env, input: tc.input}
			got := run(append([]string{"checkpassword"}, tc.args...), f.system())
			if got != tc.want {
				t.Fatalf("exit %d, want %d; stderr: %s", got, tc.want, f.stderr.String())
			}
			if f.execPath != "" {
				t.Fatalf("reply program ran: %s", f.execPath)
			}
			if strings.Contains(f.stderr.String()+f.stdout.String(), secret) {
				t.Fatalf("the password was printed: %s", f.stderr.String())
			}
		})
	}
}

func TestHelpAndUnknownCommands(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		out  string // in stdout
	}{
		{[]string{"--help"}, 0, "checkpassword"},
		{[]string{"-h"}, 0, "Commands:"},
		{[]string{"help", "checkpassword"}, 0, "Usage: apppass checkpassword"},
		{[]string{"checkpassword", "--help"}, 0, "file descriptor 3"},
		{[]string{"help", "nosuch"}, 2, ""},
		{[]string{"nosuch"}, 2, ""},
		{nil, 2, ""},
	} {
		f := &fakeSystem{}
		if got := run(tc.args, f.system()); got != tc.want || !strings.Contains(f.stdout.String(), tc.out) {
			t.Errorf("apppass %q: exit %d, stdout %q", tc.args, got, f.stdout.String())
		}
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
