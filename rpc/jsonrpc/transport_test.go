package jsonrpc_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/rpc/jsonrpc"
)

func TestBatch(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	bearer := "Bearer " + f.Token(Alice)

	status, raw := f.Post(t, bearer, `[
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
	rs := ParseBatch(t, raw)
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
			if c := Decode[Created](t, OK(t, r)); c.Name != "answered" || !PasswordRE.MatchString(c.Password) {
				t.Fatalf("add in batch = %+v", c)
			}
		case "2":
			if n := len(Decode[[]map[string]any](t, OK(t, r))); n != 7 {
				t.Fatalf("getApps in batch: %d apps", n)
			}
		case "3":
			WantError(t, r, errcode.MethodNotFound)
		case "4":
			WantInvalid(t, r, "appScope")
		case "null":
			WantError(t, r, errcode.InvalidRequest)
		}
	}
	// The notification was carried out, just not answered.
	list := f.List(t, f.Token(Alice))
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
			status, raw := f.Post(t, bearer, body)
			if status != http.StatusNoContent || len(raw) != 0 {
				t.Fatalf("%s: HTTP %d %q, want 204 and no body", body, status, raw)
			}
		}
		if list := f.List(t, f.Token(Alice)); len(list) != 3 || list[0].Name != "quiet" {
			t.Fatalf("list after notifications = %+v", list)
		}
	})

	t.Run("one caller for the whole batch", func(t *testing.T) {
		// A gateway key's batch: authenticate works, add is forbidden.
		c := f.Add(t, f.Token(Bob), "caldav", "cal")
		status, raw := f.Post(t, "Bearer "+GatewaySecret, `[
			{"jsonrpc":"2.0","id":1,"method":"appPasswords.authenticate","params":{"login":"bob@example.com","password":"`+c.Password+`","protocol":"caldav"}},
			{"jsonrpc":"2.0","id":2,"method":"appPasswords.add","params":{"appScope":"mail","appName":"x"}}]`)
		if status != http.StatusOK {
			t.Fatalf("HTTP %d", status)
		}
		rs := ParseBatch(t, raw)
		if len(rs) != 2 {
			t.Fatalf("answers: %s", raw)
		}
		for _, r := range rs {
			if string(r.ID) == "1" {
				OK(t, r)
			} else {
				WantError(t, r, errcode.Forbidden)
			}
		}
	})
}

func TestIDsEchoed(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	bearer := "Bearer " + f.Token(Alice)
	ids := []string{`"abc"`, `""`, `"1"`, `"caf\u00e9"`, `42`, `0`, `-7`, `12345678901234567890`, `1.5`, `2e3`, `null`}
	for _, id := range ids {
		for _, method := range []string{"appPasswords.list", "appPasswords.nope"} { // a result and an error
			status, raw := f.Post(t, bearer, `{"jsonrpc":"2.0","method":"`+method+`","id":`+id+`}`)
			if status != http.StatusOK {
				t.Fatalf("id %s: HTTP %d", id, status)
			}
			if r := ParseResponse(t, raw); string(r.ID) != id {
				t.Fatalf("id %s came back as %s", id, r.ID)
			}
		}
	}
	// In a batch too, each with its own.
	var batch []string
	for _, id := range ids {
		batch = append(batch, `{"jsonrpc":"2.0","method":"appPasswords.getApps","id":`+id+`}`)
	}
	status, raw := f.Post(t, bearer, "["+strings.Join(batch, ",")+"]")
	if status != http.StatusOK {
		t.Fatalf("HTTP %d", status)
	}
	rs := ParseBatch(t, raw)
	if len(rs) != len(ids) {
		t.Fatalf("%d answers to %d calls", len(rs), len(ids))
	}
	for i, r := range rs {
		if string(r.ID) != ids[i] {
			t.Fatalf("answer %d has id %s, want %s", i, r.ID, ids[i])
		}
		OK(t, r)
	}
}

func TestBodyLimit(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	bearer := "Bearer " + f.Token(Alice)

	// Exactly 1 MiB is accepted.
	call := Request("appPasswords.list", "")
	status, raw := f.Post(t, bearer, call+strings.Repeat(" ", jsonrpc.MaxBodyBytes-len(call)))
	if status != http.StatusOK {
		t.Fatalf("1 MiB body: HTTP %d %s", status, raw)
	}
	OK(t, ParseResponse(t, raw))
	// One byte more is not.
	status, raw = f.Post(t, bearer, call+strings.Repeat(" ", jsonrpc.MaxBodyBytes-len(call)+1))
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
		{"chunked, length unknown", -1, jsonrpc.MaxBodyBytes + 64<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &StallingReader{N: tc.sent, Release: make(chan struct{})}
			defer close(body.Release)
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
			WantError(t, ParseResponse(t, out), errcode.InvalidRequest)
		})
	}
	// The server is fine afterwards.
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.list", ""))
}

// TestStoreDown stops the real FerretDB under a server on the MongoDB
// adapter: calls answer -32050 without internals, and /readyz turns 503.
func TestStoreDown(t *testing.T) {
	uri, stopStore := StoppableStore(t)
	f := NewFixture(t, FixtureOptions{MongoURI: uri})
	c := f.Add(t, f.Token(Alice), "mail", "phone")
	stopStore()

	// Calls in flight together: the first meets the closed connection,
	// the others the driver's cleared pool or the server selection
	// timeout. All of them are "unavailable".
	calls := []struct{ bearer, body string }{
		{f.Token(Alice), Request("appPasswords.add", `{"appScope":"mail","appName":"x"}`)},
		{f.Token(Alice), Request("appPasswords.list", "")},
		{f.Token(Alice), Request("appPasswords.remove", `{"uuid":"`+c.UUID+`"}`)},
		{f.Token(Alice), Request("appPasswords.removeAll", "")},
		{GatewaySecret, Request("appPasswords.authenticate", `{"login":"alice@example.com","password":"`+c.Password+`","protocol":"imap"}`)},
	}
	bodies := make([][]byte, len(calls))
	statuses := make([]int, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], bodies[i], errs[i] = f.PostAsync("Bearer "+call.bearer, call.body)
		}()
	}
	wg.Wait()
	var rs []Response
	for i := range calls {
		if errs[i] != nil || statuses[i] != http.StatusOK {
			t.Fatalf("call %d: HTTP %d, %v", i, statuses[i], errs[i])
		}
		rs = append(rs, ParseResponse(t, bodies[i]))
	}
	for _, r := range rs {
		WantError(t, r, errcode.Unavailable)
		if m := r.Error.Message; strings.Contains(m, "127.0.0.1") || strings.Contains(m, "refused") || strings.Contains(m, "server selection") {
			t.Fatalf("message shows internals: %q", m)
		}
	}
	// The catalogue needs no store.
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.getApps", ""))
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
