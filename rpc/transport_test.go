package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apppass/apppass/docs"
	"github.com/apppass/apppass/rpc"
)

func TestBatch(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	bearer := "Bearer " + f.token(alice)

	status, raw := f.post(t, bearer, `[
		{"jsonrpc":"2.0","id":"a","method":"appPasswords.add","params":{"appScope":"mail","appName":"answered"}},
		{"jsonrpc":"2.0","method":"appPasswords.add","params":{"appScope":"drive","appName":"notified"}},
		{"jsonrpc":"2.0","id":2,"method":"appPasswords.getApps"},
		{"jsonrpc":"2.0","id":3,"method":"appPasswords.nope"},
		{"jsonrpc":"2.0","id":4,"method":"appPasswords.add","params":{"appScope":"telnet","appName":"x"}},
		1
	]`)
	if status != http.StatusOK {
		t.Fatalf("HTTP %d: %s", status, raw)
	}
	rs := parseBatch(t, raw)
	var ids []string
	for _, r := range rs {
		ids = append(ids, string(r.ID))
	}
	slices.Sort(ids)
	if want := []string{`"a"`, "2", "3", "4", "null"}; !slices.Equal(ids, want) {
		t.Fatalf("batch answered ids %v, want %v (no answer to the notification): %s", ids, want, raw)
	}
	for _, r := range rs {
		switch string(r.ID) {
		case `"a"`:
			if c := decode[created](t, ok(t, r)); c.Name != "answered" || !passwordRE.MatchString(c.Password) {
				t.Fatalf("add in batch = %+v", c)
			}
		case "2":
			if n := len(decode[[]map[string]any](t, ok(t, r))); n != 7 {
				t.Fatalf("getApps in batch: %d apps", n)
			}
		case "3":
			wantError(t, r, rpc.CodeMethodNotFound)
		case "4":
			wantInvalid(t, r, "appScope")
		case "null":
			wantError(t, r, rpc.CodeInvalidRequest)
		}
	}
	// The notification was carried out, just not answered.
	list := f.list(t, f.token(alice))
	if len(list) != 2 || list[0].Name != "notified" || list[1].Name != "answered" {
		t.Fatalf("list after batch = %+v", list)
	}

	t.Run("notifications only", func(t *testing.T) {
		for _, body := range []string{
			`{"jsonrpc":"2.0","method":"appPasswords.list"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.nope"}`,
			`{"jsonrpc":"2.0","method":"appPasswords.add","params":{"appScope":"telnet"}}`,
			`[{"jsonrpc":"2.0","method":"appPasswords.list"},{"jsonrpc":"2.0","method":"appPasswords.getApps","params":{}}]`,
			`[{"jsonrpc":"2.0","method":"appPasswords.add","params":{"appScope":"eas","appName":"quiet"}}]`,
		} {
			status, raw := f.post(t, bearer, body)
			if status != http.StatusNoContent || len(raw) != 0 {
				t.Fatalf("%s: HTTP %d %q, want 204 and no body", body, status, raw)
			}
		}
		if list := f.list(t, f.token(alice)); len(list) != 3 || list[0].Name != "quiet" {
			t.Fatalf("list after notifications = %+v", list)
		}
	})

	t.Run("one caller for the whole batch", func(t *testing.T) {
		// A gateway key's batch: authenticate works, add is forbidden.
		c := f.add(t, f.token(bob), "caldav", "cal")
		status, raw := f.post(t, "Bearer "+gatewaySecret, `[
			{"jsonrpc":"2.0","id":1,"method":"appPasswords.authenticate","params":{"login":"bob@example.com","password":"`+c.Password+`","protocol":"caldav"}},
			{"jsonrpc":"2.0","id":2,"method":"appPasswords.add","params":{"appScope":"mail","appName":"x"}}]`)
		if status != http.StatusOK {
			t.Fatalf("HTTP %d", status)
		}
		rs := parseBatch(t, raw)
		if len(rs) != 2 {
			t.Fatalf("answers: %s", raw)
		}
		for _, r := range rs {
			if string(r.ID) == "1" {
				ok(t, r)
			} else {
				wantError(t, r, rpc.CodeForbidden)
			}
		}
	})
}

func TestIDsEchoed(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	bearer := "Bearer " + f.token(alice)
	ids := []string{`"abc"`, `""`, `"1"`, `"caf\u00e9"`, `42`, `0`, `-7`, `12345678901234567890`, `1.5`, `2e3`, `null`}
	for _, id := range ids {
		for _, method := range []string{"appPasswords.list", "appPasswords.nope"} { // a result and an error
			status, raw := f.post(t, bearer, `{"jsonrpc":"2.0","method":"`+method+`","id":`+id+`}`)
			if status != http.StatusOK {
				t.Fatalf("id %s: HTTP %d", id, status)
			}
			if r := parseResponse(t, raw); string(r.ID) != id {
				t.Fatalf("id %s came back as %s", id, r.ID)
			}
		}
	}
	// In a batch too, each with its own.
	var batch []string
	for _, id := range ids {
		batch = append(batch, `{"jsonrpc":"2.0","method":"appPasswords.getApps","id":`+id+`}`)
	}
	status, raw := f.post(t, bearer, "["+strings.Join(batch, ",")+"]")
	if status != http.StatusOK {
		t.Fatalf("HTTP %d", status)
	}
	rs := parseBatch(t, raw)
	if len(rs) != len(ids) {
		t.Fatalf("%d answers to %d calls", len(rs), len(ids))
	}
	for i, r := range rs {
		if string(r.ID) != ids[i] {
			t.Fatalf("answer %d has id %s, want %s", i, r.ID, ids[i])
		}
		ok(t, r)
	}
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	bearer := "Bearer " + f.token(alice)

	// Exactly 1 MiB is accepted.
	call := request("appPasswords.list", "")
	status, raw := f.post(t, bearer, call+strings.Repeat(" ", rpc.MaxBodyBytes-len(call)))
	if status != http.StatusOK {
		t.Fatalf("1 MiB body: HTTP %d %s", status, raw)
	}
	ok(t, parseResponse(t, raw))
	// One byte more is not.
	status, raw = f.post(t, bearer, call+strings.Repeat(" ", rpc.MaxBodyBytes-len(call)+1))
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("1 MiB + 1 body: HTTP %d %s", status, raw)
	}

	// The body is never read whole: the client below never finishes it,
	// so an answer at all proves the server stopped reading.
	for _, tc := range []struct {
		name          string
		contentLength int64
		sent          int // bytes the client gets to send before it stalls
	}{
		{"declared by Content-Length", 8 << 20, 0},
		{"chunked, length unknown", -1, rpc.MaxBodyBytes + 64<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &stallingReader{n: tc.sent, release: make(chan struct{})}
			defer close(body.release)
			req, err := http.NewRequest(http.MethodPost, f.URL+"/rpc", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.contentLength
			req.Header.Set("Authorization", bearer)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("HTTP %d, want 413: %s", resp.StatusCode, out)
			}
			wantError(t, parseResponse(t, out), rpc.CodeInvalidRequest)
		})
	}
	// The server is fine afterwards.
	ok(t, f.call(t, f.token(alice), "appPasswords.list", ""))
}

func TestHTTPRoutes(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	get := func(t *testing.T, url string, header http.Header) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	statusOf := func(t *testing.T, body []byte) string {
		t.Helper()
		var s struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("not JSON: %s", body)
		}
		return s.Status
	}

	if code, body := get(t, f.URL+"/healthz", nil); code != http.StatusOK || statusOf(t, body) != "ok" {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, body := get(t, f.URL+"/readyz", nil); code != http.StatusOK || statusOf(t, body) != "ready" {
		t.Fatalf("readyz: %d %s", code, body)
	}
	// GET /rpc is for WebSocket upgrades only.
	if code, body := get(t, f.URL+"/rpc", http.Header{"Authorization": {"Bearer " + f.token(alice)}}); code != http.StatusBadRequest {
		t.Fatalf("GET /rpc without upgrade: %d %s", code, body)
	}
	// The AsyncAPI document of the events: no token, and any page may read
	// it (AsyncAPI Studio is one), like /openrpc.json.
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/asyncapi.yaml", nil)
	req.Header.Set("Origin", "https://studio.asyncapi.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || !bytes.Equal(served, docs.AsyncAPI) {
		t.Fatalf("GET /asyncapi.yaml: %d %v, %d bytes", resp.StatusCode, resp.Header, len(served))
	}
	if resp, err := http.Post(f.URL+"/asyncapi.yaml", "application/yaml", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /asyncapi.yaml: %d", resp.StatusCode)
	}
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(method, f.URL+"/rpc", strings.NewReader(request("appPasswords.list", "")))
		req.Header.Set("Authorization", "Bearer "+f.token(alice))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("%s /rpc: HTTP %d", method, resp.StatusCode)
		}
	}

	t.Run("not ready", func(t *testing.T) {
		down := newFixture(t, fixtureOptions{ready: func(context.Context) error {
			return errors.New("NATS is unreachable")
		}})
		code, body := get(t, down.URL+"/readyz", nil)
		if code != http.StatusServiceUnavailable || statusOf(t, body) != "unavailable" {
			t.Fatalf("readyz when not ready: %d %s", code, body)
		}
		// Alive all the same.
		if code, _ := get(t, down.URL+"/healthz", nil); code != http.StatusOK {
			t.Fatalf("healthz when not ready: %d", code)
		}
	})
}

// TestStoreDown stops the real FerretDB under a server on the MongoDB
// adapter: calls answer -32050 without internals, and /readyz turns 503.
func TestStoreDown(t *testing.T) {
	uri, stopStore := stoppableStore(t)
	f := newFixture(t, fixtureOptions{mongoURI: uri})
	c := f.add(t, f.token(alice), "mail", "phone")
	stopStore()

	// Calls in flight together: the first meets the closed connection,
	// the others the driver's cleared pool or the server selection
	// timeout. All of them are "unavailable".
	calls := []struct{ bearer, body string }{
		{f.token(alice), request("appPasswords.add", `{"appScope":"mail","appName":"x"}`)},
		{f.token(alice), request("appPasswords.list", "")},
		{f.token(alice), request("appPasswords.remove", `{"uuid":"`+c.UUID+`"}`)},
		{f.token(alice), request("appPasswords.removeAll", "")},
		{gatewaySecret, request("appPasswords.authenticate", `{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`)},
	}
	bodies := make([][]byte, len(calls))
	statuses := make([]int, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], bodies[i], errs[i] = f.postAsync("Bearer "+call.bearer, call.body)
		}()
	}
	wg.Wait()
	var rs []response
	for i := range calls {
		if errs[i] != nil || statuses[i] != http.StatusOK {
			t.Fatalf("call %d: HTTP %d, %v", i, statuses[i], errs[i])
		}
		rs = append(rs, parseResponse(t, bodies[i]))
	}
	for _, r := range rs {
		wantError(t, r, rpc.CodeUnavailable)
		if m := r.Error.Message; strings.Contains(m, "127.0.0.1") || strings.Contains(m, "refused") || strings.Contains(m, "server selection") {
			t.Fatalf("message shows internals: %q", m)
		}
	}
	// The catalogue needs no store.
	ok(t, f.call(t, f.token(alice), "appPasswords.getApps", ""))
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the store down: HTTP %d", resp.StatusCode)
	}
}
