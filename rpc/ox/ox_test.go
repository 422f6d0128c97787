package ox_test

// Tests of the OX-compatible API (/appsuite/api/appPasswords) against a real
// rpc.Server on the embedded FerretDB. Every answer is compared with the
// OX answers recorded in testdata/ox/, each of which names the OX source it
// was taken from: same member names, same JSON types.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

// oxErrorIDRE is OX's error_id: the server's id, a dash, a counter.
var oxErrorIDRE = regexp.MustCompile(`^-?[0-9]+-[0-9]+$`)

// oxFixture returns the recorded OX response of testdata/ox/<name>.json.
func oxFixture(t testing.TB, name string) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "ox", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Source   string                     `json:"source"`
		Response map[string]json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if f.Source == "" || f.Response == nil {
		t.Fatalf("%s: a fixture needs its source and the response", name)
	}
	return f.Response
}

// shape describes a JSON value by member names and JSON types only: the
// values of the same shape differ, their form does not. Arrays are "array";
// their rows are compared one by one.
func oxShape(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("not JSON: %s", raw)
	}
	var describe func(v any) string
	describe = func(v any) string {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = k + ":" + describe(v[k])
			}
			return "{" + strings.Join(parts, ",") + "}"
		case []any:
			return "array"
		case string:
			return "string"
		case float64:
			return "number"
		case bool:
			return "boolean"
		}
		return "null"
	}
	return describe(v)
}

func oxWantShape(t testing.TB, what string, got, want json.RawMessage) {
	t.Helper()
	if g, w := oxShape(t, got), oxShape(t, want); g != w {
		t.Fatalf("%s: shape %s, OX's is %s\n got: %s", what, g, w, got)
	}
}

// rows splits a JSON array.
func oxRows(t testing.TB, raw json.RawMessage) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("not an array: %s", raw)
	}
	return out
}

// oxData expects a success and returns its data.
func oxData(t testing.TB, body map[string]json.RawMessage) json.RawMessage {
	t.Helper()
	if len(body) != 1 || body["data"] == nil {
		t.Fatalf("want {\"data\": …}, got %v", body)
	}
	return body["data"]
}

// oxErr is OX's error envelope as it arrives.
type oxErr struct {
	Error      string `json:"error"`
	Params     []any  `json:"error_params"`
	Categories string `json:"categories"`
	Category   int    `json:"category"`
	Code       string `json:"code"`
	ID         string `json:"error_id"`
	Desc       string `json:"error_desc"`
}

// wantOXError checks body is OX's error envelope, shaped as OX's, with code,
// and returns it.
func wantOXError(t testing.TB, body map[string]json.RawMessage, code string) oxErr {
	t.Helper()
	raw, _ := json.Marshal(body)
	oxWantShape(t, "error "+code, raw, oxJSON(t, oxFixture(t, "error-ASP-0002")))
	var e oxErr
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	if e.Code != code {
		t.Fatalf("code %s (%s), want %s", e.Code, e.Desc, code)
	}
	// Category name and legacy number as OX's Categories table pairs them.
	categories := map[string]int{"ERROR": 8, "PERMISSION_DENIED": 3, "TRY_AGAIN": 4}
	if n, ok := categories[e.Categories]; !ok || n != e.Category {
		t.Fatalf("categories %q with category %d", e.Categories, e.Category)
	}
	if e.Error == "" || e.Desc == "" {
		t.Fatalf("error and error_desc must be set: %s", raw)
	}
	if !oxErrorIDRE.MatchString(e.ID) {
		t.Fatalf("error_id %q is not <server id>-<count>", e.ID)
	}
	for _, p := range e.Params {
		if _, ok := p.(string); !ok {
			t.Fatalf("error_params %v: want strings", e.Params)
		}
	}
	return e
}

func oxJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func oxValues(kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// TestOXFlow walks the App Suite dialog through the OX API: the apps, an
// add, the list, a login with the new password, its removal.
func TestOXFlow(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := "Bearer " + f.Token(Alice)
	// App Suite's HTTP layer adds its session id to every request.
	const session = "session=0123456789abcdef0123456789abcdef"

	// getApps: OX's shape, the catalogue's values.
	apps := oxData(t, f.OX(t, user, http.MethodGet, "action=getApps&"+session, ""))
	want := oxRows(t, oxFixture(t, "getApps")["data"])
	var viaRPC []struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		Sort        int    `json:"sort"`
	}
	if err := json.Unmarshal(OK(t, f.Call(t, f.Token(Alice), "appPasswords.getApps", "")), &viaRPC); err != nil {
		t.Fatal(err)
	}
	got := oxRows(t, apps)
	if len(got) != len(viaRPC) || len(got) == 0 {
		t.Fatalf("getApps has %d apps, JSON-RPC %d", len(got), len(viaRPC))
	}
	for i, row := range got {
		oxWantShape(t, "getApps row", row, want[0])
		if string(row) != string(oxJSON(t, viaRPC[i])) {
			t.Fatalf("getApps row %d = %s, JSON-RPC has %+v", i, row, viaRPC[i])
		}
	}

	if l := oxData(t, f.OX(t, user, http.MethodGet, "action=list&"+session, "")); string(l) != "[]" {
		t.Fatalf("list of a new user = %s", l)
	}

	// add, the fields in the body as App Suite sends them.
	addFixture := oxFixture(t, "add")["data"]
	added := oxData(t, f.OX(t, user, http.MethodPost, "action=add&"+session, oxValues("appScope", "mail", "appName", "My phone")))
	oxWantShape(t, "add", added, addFixture)
	var mail struct {
		Password string `json:"password"`
		Login    string `json:"login"`
		NewLogin bool   `json:"newLogin"`
	}
	if err := json.Unmarshal(added, &mail); err != nil {
		t.Fatal(err)
	}
	if !PasswordRE.MatchString(mail.Password) || mail.Login != Alice.Login || mail.NewLogin {
		t.Fatalf("add = %s", added)
	}
	// The fields may come in the query too.
	added = oxData(t, f.OX(t, user, http.MethodPost, "action=add&appScope=caldav&appName=Laptop+calendar&"+session, ""))
	oxWantShape(t, "add (query)", added, addFixture)

	// list: OX's keys; a never-used password has no LastLogin.
	listFixture := oxRows(t, oxFixture(t, "list")["data"])
	used, neverUsed := listFixture[0], listFixture[1]
	byScope := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, row := range oxRows(t, oxData(t, f.OX(t, user, http.MethodGet, "action=list&"+session, ""))) {
			var m map[string]any
			_ = json.Unmarshal(row, &m)
			out[m["Scope"].(string)] = m
		}
		return out
	}
	listed := byScope()
	if len(listed) != 2 {
		t.Fatalf("list has %d rows, want 2: %v", len(listed), listed)
	}
	for scope, row := range listed {
		oxWantShape(t, "never-used "+scope, oxJSON(t, row), neverUsed)
	}
	rpcList := f.List(t, f.Token(Alice))
	for _, p := range rpcList {
		row := listed[p.AppScope]
		if row["UUID"] != p.UUID || row["Name"] != p.Name || !UUIDRE.MatchString(p.UUID) {
			t.Fatalf("OX row %v, JSON-RPC row %+v", row, p)
		}
	}
	if listed["mail"]["Name"] != "My phone" || listed["caldav"]["Name"] != "Laptop calendar" {
		t.Fatalf("names: %v", listed)
	}

	// The password works where gateways check it, and the use shows.
	OK(t, f.Call(t, GatewaySecret, "appPasswords.authenticate",
		`{"login":"alice@example.com","password":"`+mail.Password+`","protocol":"imap","ip":"192.0.2.7","device":"K-9 Mail"}`))
	listed = byScope()
	oxWantShape(t, "used mail", oxJSON(t, listed["mail"]), used)
	oxWantShape(t, "never-used caldav", oxJSON(t, listed["caldav"]), neverUsed)
	var lastLogin time.Time
	for _, p := range f.List(t, f.Token(Alice)) {
		if p.AppScope == "mail" && p.LastLogin != nil {
			lastLogin = p.LastLogin.Time
		}
	}
	m := listed["mail"]
	if lastLogin.IsZero() || m["LastLogin"] != float64(lastLogin.UnixMilli()) || m["IP"] != "192.0.2.7" || m["LastDevice"] != "K-9 Mail" {
		t.Fatalf("used row %v, lastLogin %v", m, lastLogin)
	}

	// remove: OX's answer, and the password stops working.
	removed := oxData(t, f.OX(t, user, http.MethodPost, "action=remove&"+session, oxValues("uuid", m["UUID"].(string))))
	oxWantShape(t, "remove", removed, oxFixture(t, "remove")["data"])
	if string(removed) != `{"result":"OK"}` {
		t.Fatalf("remove = %s", removed)
	}
	WantError(t, f.Authenticate(t, Alice.Login, mail.Password, "imap"), errcode.Rejected)
	oxData(t, f.OX(t, user, http.MethodPost, "action=remove", oxValues("uuid", listed["caldav"]["UUID"].(string), "session", "x")))
	if l := oxData(t, f.OX(t, user, http.MethodGet, "action=list&"+session, "")); string(l) != "[]" {
		t.Fatalf("list after removing both = %s", l)
	}
}

// TestOXErrors sends every kind of bad request: each answers OX's error
// envelope with the code OX would use, and changes nothing.
func TestOXErrors(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	aliceToken := f.Token(Alice)
	user := "Bearer " + aliceToken
	mine := f.Add(t, aliceToken, "mail", "phone")
	bobs := f.Add(t, f.Token(Bob), "mail", "bob's phone")
	snapshot := func() string {
		return f.ListRaw(t, aliceToken) + f.ListRaw(t, f.Token(Bob))
	}
	before := snapshot()

	viaAppPassword := "Bearer " + f.Token(Alice, "app_password")
	expired := "Bearer " + f.Tokens.Mint(Alice, time.Minute, time.Now().Add(-time.Hour))
	addMail := oxValues("appScope", "mail", "appName", "x")
	cases := []struct {
		name                      string
		auth, method, query, form string
		code                      string
		params                    []any // nil: not checked
		wantMessage               string
	}{
		{name: "no token", method: "GET", query: "action=list", code: "SES-0203", params: []any{}},
		{name: "garbage token", auth: "Bearer garbage", method: "POST", query: "action=add", form: addMail, code: "SES-0203"},
		{name: "expired token", auth: expired, method: "POST", query: "action=add", form: addMail, code: "SES-0203"},
		{name: "basic auth", auth: "Basic " + GatewaySecret, method: "GET", query: "action=getApps", code: "SES-0203"},
		{name: "gateway key getApps", auth: "Bearer " + GatewaySecret, method: "GET", query: "action=getApps", code: "ASP-0001"},
		{name: "gateway key add", auth: "Bearer " + GatewaySecret, method: "POST", query: "action=add", form: addMail, code: "ASP-0001"},
		{name: "app password session add", auth: viaAppPassword, method: "POST", query: "action=add", form: addMail, code: "ASP-0001",
			wantMessage: "This account isn't authorized to perform this action."},
		{name: "app password session list", auth: viaAppPassword, method: "GET", query: "action=list", code: "ASP-0001"},
		{name: "app password session remove", auth: viaAppPassword, method: "POST", query: "action=remove", form: oxValues("uuid", mine.UUID), code: "ASP-0001"},
		{name: "admin key names no user", auth: "Bearer " + AdminSecret, method: "GET", query: "action=list", code: "SVL-0010"},
		{name: "unknown scope", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "bogus", "appName", "x"),
			code: "ASP-0002", params: []any{"bogus"}, wantMessage: "Unknown application type bogus"},
		{name: "empty name", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "mail", "appName", ""), code: "SVL-0010"},
		{name: "blank name", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "mail", "appName", "   "), code: "SVL-0010"},
		{name: "name too long", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "mail", "appName", strings.Repeat("n", 200)), code: "SVL-0010"},
		{name: "control character in name", auth: user, method: "POST", query: "action=add", form: "appScope=mail&appName=a%00b", code: "SVL-0010"},
		{name: "oversized field", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "mail", "appName", strings.Repeat("n", 5000)),
			code: "SVL-0010", params: []any{"appName", "must be at most 1024 bytes"}},
		{name: "name not UTF-8", auth: user, method: "POST", query: "action=add", form: "appScope=mail&appName=%ff", code: "SVL-0010",
			params: []any{"appName", "is not valid UTF-8"}},
		{name: "missing name", auth: user, method: "POST", query: "action=add", form: oxValues("appScope", "mail"), code: "SVL-0002", params: []any{"appName"}},
		{name: "missing everything", auth: user, method: "POST", query: "action=add", code: "SVL-0002", params: []any{"appScope"}},
		{name: "operator in field name", auth: user, method: "POST", query: "action=add", form: "appScope%5B%24ne%5D=&appName=x", code: "SVL-0030",
			params: []any{"appScope[$ne]"}},
		{name: "operator next to a good field", auth: user, method: "POST", query: "action=add", form: "appScope=mail&appScope%5B%24ne%5D=&appName=x",
			code: "SVL-0030", params: []any{"appScope[$ne]"}},
		{name: "repeated field", auth: user, method: "POST", query: "action=add", form: "appScope=mail&appScope=drive&appName=x",
			code: "SVL-0010", params: []any{"appScope", "is given more than once"}},
		{name: "field in query and body", auth: user, method: "POST", query: "action=add&appScope=mail", form: addMail,
			code: "SVL-0010", params: []any{"appScope", "is given more than once"}},
		{name: "repeated action", auth: user, method: "POST", query: "action=add", form: addMail + "&action=add", code: "SVL-0010",
			params: []any{"action", "is given more than once"}},
		{name: "unknown parameter", auth: user, method: "GET", query: "action=list&user=bob%40example.com", code: "SVL-0030", params: []any{"user"}},
		{name: "unknown uuid", auth: user, method: "POST", query: "action=remove", form: oxValues("uuid", "6c1e1b8a-3f0e-4d3e-9a51-2f4b7c0d9e11"),
			code: "SVL-0010", params: []any{"uuid", "no such app password"}},
		{name: "someone else's uuid", auth: user, method: "POST", query: "action=remove", form: oxValues("uuid", bobs.UUID),
			code: "SVL-0010", params: []any{"uuid", "no such app password"}},
		{name: "malformed uuid", auth: user, method: "POST", query: "action=remove", form: oxValues("uuid", "not-a-uuid"), code: "SVL-0010"},
		{name: "missing uuid", auth: user, method: "POST", query: "action=remove", code: "SVL-0002", params: []any{"uuid"}},
		{name: "unknown action", auth: user, method: "GET", query: "action=bogus", code: "SVL-0021", params: []any{"bogus", "appPasswords"}},
		{name: "missing action", auth: user, method: "GET", query: "", code: "SVL-0002", params: []any{"action"}},
		{name: "GET for add", auth: user, method: "GET", query: "action=add&appScope=mail&appName=x", code: "SVL-0020"},
		{name: "GET for remove", auth: user, method: "GET", query: "action=remove&uuid=" + mine.UUID, code: "SVL-0020"},
		{name: "POST for list", auth: user, method: "POST", query: "action=list", code: "SVL-0020"},
		{name: "DELETE for remove", auth: user, method: "DELETE", query: "action=remove&uuid=" + mine.UUID, code: "SVL-0020"},
		{name: "body over 16 KiB", auth: user, method: "POST", query: "action=add", form: addMail + "&pad=" + strings.Repeat("p", 20<<10), code: "SVL-0020"},
		{name: "malformed encoding", auth: user, method: "POST", query: "action=add", form: "appScope=mail&appName=%zz", code: "SVL-0020"},
	}
	ids := map[string]bool{}
	seen := map[string]oxErr{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := wantOXError(t, f.OX(t, c.auth, c.method, c.query, c.form), c.code)
			seen[c.code] = e
			if c.params != nil && !slices.Equal(e.Params, c.params) {
				t.Fatalf("error_params %#v, want %#v", e.Params, c.params)
			}
			if c.wantMessage != "" && e.Error != c.wantMessage {
				t.Fatalf("error %q, want %q", e.Error, c.wantMessage)
			}
			if ids[e.ID] {
				t.Fatalf("error_id %s given twice", e.ID)
			}
			ids[e.ID] = true
			if after := snapshot(); after != before {
				t.Fatalf("the request changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	// The codes recorded from OX keep OX's category.
	for _, code := range []string{"ASP-0001", "ASP-0002", "SVL-0021", "SES-0203"} {
		var want oxErr
		if err := json.Unmarshal(oxJSON(t, oxFixture(t, "error-"+code)), &want); err != nil {
			t.Fatal(err)
		}
		got, ok := seen[code]
		if !ok || got.Categories != want.Categories || got.Category != want.Category {
			t.Fatalf("%s: categories %q/%d, OX's %q/%d", code, got.Categories, got.Category, want.Categories, want.Category)
		}
	}
	// A session opened with an app password may still read the apps, as in OX.
	oxData(t, f.OX(t, viaAppPassword, http.MethodGet, "action=getApps", ""))
}

// TestOXLimit: the per-user limit is an OX error too, and the refused add
// stores nothing.
func TestOXLimit(t *testing.T) {
	f := NewFixture(t, FixtureOptions{MaxPerUser: 1})
	user := "Bearer " + f.Token(Alice)
	oxData(t, f.OX(t, user, http.MethodPost, "action=add", oxValues("appScope", "mail", "appName", "one")))
	e := wantOXError(t, f.OX(t, user, http.MethodPost, "action=add", oxValues("appScope", "mail", "appName", "two")), "ASP-0005")
	if len(e.Params) != 1 || !strings.Contains(e.Desc, "maximum number") {
		t.Fatalf("limit error %+v", e)
	}
	if l := f.List(t, f.Token(Alice)); len(l) != 1 || l[0].Name != "one" {
		t.Fatalf("list after the refused add: %+v", l)
	}
}

// TestOXStoreDown: with MongoDB gone the store's actions answer ASP-0010
// without internals; the catalogue still answers.
func TestOXStoreDown(t *testing.T) {
	uri, stopStore := StoppableStore(t)
	f := NewFixture(t, FixtureOptions{MongoURI: uri})
	user := "Bearer " + f.Token(Alice)
	c := f.Add(t, f.Token(Alice), "mail", "phone")
	stopStore()
	for _, req := range []struct{ method, query, form string }{
		{http.MethodGet, "action=list", ""},
		{http.MethodPost, "action=add", oxValues("appScope", "mail", "appName", "x")},
		{http.MethodPost, "action=remove", oxValues("uuid", c.UUID)},
	} {
		got := wantOXError(t, f.OX(t, user, req.method, req.query, req.form), "ASP-0010")
		if s := fmt.Sprint(got); strings.Contains(s, "127.0.0.1") || strings.Contains(s, "refused") {
			t.Fatalf("%s shows internals: %s", req.query, s)
		}
	}
	oxData(t, f.OX(t, user, http.MethodGet, "action=getApps", ""))
}
