package dovecot

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The client against a recording HTTP server: what it sends, and how it
// reads each kind of answer. That it works with Dovecot is tested with a
// real one (deploy/dovecot_test.go).

func TestParseBaseURL(t *testing.T) {
	for raw, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":     "http://127.0.0.1:8080",
		"https://mail.example.com":   "https://mail.example.com",
		"http://[::1]:8080":          "http://[::1]:8080",
		"HTTP://Dovecot.example:443": "http://Dovecot.example:443",
	} {
		if got, err := ParseBaseURL(raw); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", raw, got, err, want)
		}
	}
	for raw, why := range map[string]string{
		"":                                     "not a base URL",
		"127.0.0.1:8080":                       "not a base URL",
		"ftp://host":                           "not a base URL",
		"http://":                              "not a base URL",
		"http://doveadm:secret@host:8080":      "credentials",
		"http://host:8080/doveadm/v1":          "apppassd adds /doveadm/v1",
		"http://host:8080/?x=1":                "query",
		"http://host:8080#frag":                "query or fragment",
		"http://host:8080 http://other:8080":   "not a base URL",
		"mailto:someone@example.com":           "not a base URL",
		"http://host:8080/prefix/doveadm/v1/x": "has a path",
	} {
		_, err := ParseBaseURL(raw)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want an error about %q", raw, err, why)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error shows the password: %v", raw, err)
		}
	}
}

// recorder answers every request with answer(commands) and keeps what came.
func recorder(t *testing.T, status int, answer func(cmds [][]json.RawMessage) string) (*Client, *[]*http.Request, *[][][]json.RawMessage) {
	t.Helper()
	var reqs []*http.Request
	var bodies [][][]json.RawMessage
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var cmds [][]json.RawMessage
		if err := json.Unmarshal(raw, &cmds); err != nil {
			t.Errorf("request body is not a list of commands: %s", raw)
		}
		reqs, bodies = append(reqs, r), append(bodies, cmds)
		w.WriteHeader(status)
		io.WriteString(w, answer(cmds))
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL, "the-api-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, &reqs, &bodies
}

func TestKickUserRequest(t *testing.T) {
	c, reqs, bodies := recorder(t, 200, func([][]json.RawMessage) string {
		return `[["doveadmResponse",[{"result":"bob"}],"0"],["doveadmResponse",[{"entries":"0"}],"1"]]`
	})
	if err := c.KickUser(context.Background(), "bob*@example.com"); err != nil {
		t.Fatal(err)
	}
	r := (*reqs)[0]
	if r.Method != http.MethodPost || r.URL.Path != APIPath || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if got := r.Header.Get("Authorization"); got != "X-Dovecot-API "+base64.StdEncoding.EncodeToString([]byte("the-api-key")) {
		t.Errorf("Authorization %q", got)
	}
	want := `[["kick",{"mask":["bob?@example.com"]},"0"],["authCacheFlush",{"user":["bob*@example.com"]},"1"]]`
	if got, _ := json.Marshal((*bodies)[0]); string(got) != want {
		t.Errorf("body %s\nwant %s", got, want)
	}
}

func TestAnswers(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		answer string
		want   error // nil, or the kind of error
		says   string
	}{
		{"kicked", 200, `[["doveadmResponse",[],"0"],["doveadmResponse",[],"1"]]`, nil, ""},
		{"nobody to kick (exit code 68)", 200, `[["error",{"type":"exitCode","exitCode":68},"0"],["doveadmResponse",[],"1"]]`, nil, ""},
		{"flush failed", 200, `[["doveadmResponse",[],"0"],["error",{"type":"exitCode","exitCode":75},"1"]]`, ErrFailed, "authCacheFlush: exitCode exit code 75"},
		{"kick failed otherwise", 200, `[["error",{"type":"exitCode","exitCode":1},"0"],["doveadmResponse",[],"1"]]`, ErrFailed, "kick: exitCode exit code 1"},
		{"wrong key", 401, `{}`, ErrUnauthorized, "401"},
		{"forbidden", 403, ``, ErrUnauthorized, "403"},
		{"server error", 500, `oops`, ErrFailed, "HTTP 500"},
		{"unavailable", 503, ``, ErrFailed, "HTTP 503"},
		{"not JSON", 200, `<html>`, ErrFailed, "unreadable"},
		{"not a list of replies", 200, `{"a":1}`, ErrFailed, "unreadable"},
		{"a reply too short", 200, `[["doveadmResponse","0"],["doveadmResponse",[],"1"]]`, ErrFailed, "unreadable"},
		{"a missing reply", 200, `[["doveadmResponse",[],"0"]]`, ErrFailed, "no answer for authCacheFlush"},
		{"an unknown tag", 200, `[["doveadmResponse",[],"0"],["doveadmResponse",[],"7"]]`, ErrFailed, "unknown tag"},
		{"a tag with spaces", 200, `[["doveadmResponse",[]," 0"],["doveadmResponse",[],"1"]]`, ErrFailed, "unknown tag"},
		{"an unknown reply type", 200, `[["surprise",[],"0"],["doveadmResponse",[],"1"]]`, ErrFailed, `type "surprise"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, _, _ := recorder(t, c.status, func([][]json.RawMessage) string { return c.answer })
			err := client.KickUser(context.Background(), "bob")
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want %v saying %q", err, c.want, c.says)
			}
			if strings.Contains(err.Error(), "the-api-key") {
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := NewClient("http://"+addr, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.FlushAuthCache(context.Background(), "bob"); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("%v, want unreachable naming %s", err, addr)
	}
	// A connection cut mid-answer is unreachable too.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, `[["doveadm`)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	c, _ = NewClient(srv.URL, "k", nil)
	if err := c.KickUser(context.Background(), "bob"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("%v, want unreachable", err)
	}
}

func TestNewClientRefuses(t *testing.T) {
	if _, err := NewClient("http://127.0.0.1:1", "", nil); err == nil {
		t.Error("an empty key is accepted")
	}
	if _, err := NewClient("http://127.0.0.1:1/doveadm/v1", "k", nil); err == nil {
		t.Error("a URL with the API path is accepted")
	}
}
