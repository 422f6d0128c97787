package jsonrpc_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

func TestParseError(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	for _, body := range []string{
		``,
		`   `,
		`{`,
		`{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"`,
		`{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"}}`,
		`not json`,
		`{'jsonrpc':'2.0'}`,
		`[{"jsonrpc":"2.0","id":1,"method":"appPasswords.list"},]`,
		`{"jsonrpc":"2.0","id":1,"method":"appPasswords.add","params":{"appScope":"mail","appName":"x",}}`,
	} {
		status, raw := f.Post(t, "Bearer "+f.Token(Alice), body)
		if status != http.StatusOK {
			t.Fatalf("%q: HTTP %d", body, status)
		}
		r := ParseResponse(t, raw)
		WantError(t, r, errcode.ParseError)
		if string(r.ID) != "null" {
			t.Fatalf("%q: id %s, want null", body, r.ID)
		}
	}
	// None of it did anything.
	if got := f.ListRaw(t, f.Token(Alice)); got != "[]" {
		t.Fatalf("list after parse errors = %s", got)
	}
}

func TestInvalidRequest(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	bearer := "Bearer " + f.Token(Alice)

	t.Run("single", func(t *testing.T) {
		for _, tc := range []struct{ body, id string }{
			{`{"id":1,"method":"appPasswords.list"}`, "1"},                       // missing jsonrpc
			{`{"jsonrpc":"1.0","id":2,"method":"appPasswords.list"}`, "2"},       // wrong version
			{`{"jsonrpc":2.0,"id":3,"method":"appPasswords.list"}`, "3"},         // version not a string
			{`{"jsonrpc":"2.0","id":"four","method":1}`, `"four"`},               // method not a string
			{`{"jsonrpc":"2.0","id":5,"method":null}`, "5"},                      // method null
			{`{"jsonrpc":"2.0","id":6,"method":["appPasswords.list"]}`, "6"},     // method an array
			{`{"jsonrpc":"2.0","id":7}`, "7"},                                    // method missing
			{`{"jsonrpc":"2.0","id":{},"method":"appPasswords.list"}`, "null"},   // id an object
			{`{"jsonrpc":"2.0","id":true,"method":"appPasswords.list"}`, "null"}, // id a boolean
			{`[]`, "null"},   // empty batch
			{`1`, "null"},    // not an object
			{`"x"`, "null"},  // not an object
			{`null`, "null"}, // not an object
			// JSON-RPC 2.0's own example: an invalid request without an id
			// is answered, with a null id.
			{`{"jsonrpc":"2.0","method":1,"params":"bar"}`, "null"},
			{`{"foo":"boo"}`, "null"},
		} {
			status, raw := f.Post(t, bearer, tc.body)
			if status != http.StatusOK {
				t.Fatalf("%s: HTTP %d: %s", tc.body, status, raw)
			}
			r := ParseResponse(t, raw)
			WantError(t, r, errcode.InvalidRequest)
			if string(r.ID) != tc.id {
				t.Fatalf("%s: id %s, want %s", tc.body, r.ID, tc.id)
			}
		}
	})

	t.Run("batch elements", func(t *testing.T) {
		status, raw := f.Post(t, bearer, `[1, "x", {"foo":"boo"}, {"jsonrpc":"2.0","id":9,"method":"appPasswords.list"}]`)
		if status != http.StatusOK {
			t.Fatalf("HTTP %d: %s", status, raw)
		}
		rs := ParseBatch(t, raw)
		if len(rs) != 4 {
			t.Fatalf("batch of 4 got %d answers: %s", len(rs), raw)
		}
		var listed int
		for _, r := range rs {
			switch string(r.ID) {
			case "null":
				WantError(t, r, errcode.InvalidRequest)
			case "9":
				OK(t, r)
				listed++
			default:
				t.Fatalf("unexpected id %s", r.ID)
			}
		}
		if listed != 1 {
			t.Fatalf("the valid call was answered %d times", listed)
		}
		status, raw = f.Post(t, bearer, `[1]`)
		if status != http.StatusOK {
			t.Fatalf("HTTP %d", status)
		}
		rs = ParseBatch(t, raw)
		if len(rs) != 1 || string(rs[0].ID) != "null" {
			t.Fatalf("[1] answered %s", raw)
		}
		WantError(t, rs[0], errcode.InvalidRequest)
	})
}

func TestMethodNotFound(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	for _, bearer := range []string{f.Token(Alice), GatewaySecret, AdminSecret} {
		for _, m := range []string{"appPasswords.nope", "", "appPasswords.List", "getApps", "appPasswords.getApps "} {
			WantError(t, f.Call(t, bearer, m, ""), errcode.MethodNotFound)
		}
	}
}

func TestInvalidParams(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := f.Token(Alice)
	mine := f.Add(t, user, "mail", "phone")
	before := f.ListRaw(t, user)
	long := strings.Repeat("a", 129)

	for _, tc := range []struct {
		name, bearer, method, params, field, OX string
	}{
		{"appName missing", user, "add", `{"appScope":"mail"}`, "appName", ""},
		{"appName empty", user, "add", `{"appScope":"mail","appName":""}`, "appName", ""},
		{"appName blank", user, "add", `{"appScope":"mail","appName":" \t "}`, "appName", ""},
		{"appName 129 chars", user, "add", `{"appScope":"mail","appName":"` + long + `"}`, "appName", ""},
		{"appName 129 chars after trimming", user, "add", `{"appScope":"mail","appName":"  ` + long + `  "}`, "appName", ""},
		{"appName 129 runes", user, "add", `{"appScope":"mail","appName":"` + strings.Repeat("é", 129) + `"}`, "appName", ""},
		{"appName bell", user, "add", `{"appScope":"mail","appName":"my\u0007phone"}`, "appName", ""},
		{"appName newline", user, "add", `{"appScope":"mail","appName":"my\nphone"}`, "appName", ""},
		{"appName NUL", user, "add", `{"appScope":"mail","appName":"my\u0000phone"}`, "appName", ""},
		{"appName right-to-left override", user, "add", `{"appScope":"mail","appName":"phone\u202Egnp.exe"}`, "appName", ""},
		{"appName bidi isolate", user, "add", `{"appScope":"mail","appName":"phone\u2066x\u2069"}`, "appName", ""},
		{"appName byte order mark", user, "add", `{"appScope":"mail","appName":"\uFEFFphone"}`, "appName", ""},
		{"appName soft hyphen", user, "add", `{"appScope":"mail","appName":"ph\u00ADone"}`, "appName", ""},
		{"appName DEL", user, "add", `{"appScope":"mail","appName":"my\u007fphone"}`, "appName", ""},
		{"appName C1 control", user, "add", `{"appScope":"mail","appName":"my\u0085phone"}`, "appName", ""},
		{"appName operator object", user, "add", `{"appScope":"mail","appName":{"$ne":""}}`, "appName", ""},
		{"appName number", user, "add", `{"appScope":"mail","appName":5}`, "appName", ""},
		{"appName null", user, "add", `{"appScope":"mail","appName":null}`, "appName", ""},
		{"appName array", user, "add", `{"appScope":"mail","appName":["x"]}`, "appName", ""},
		{"appScope unknown", user, "add", `{"appScope":"telnet","appName":"x"}`, "appScope", "ASP-0002"},
		{"appScope wrong case", user, "add", `{"appScope":"Mail","appName":"x"}`, "appScope", "ASP-0002"},
		{"appScope missing", user, "add", `{"appName":"x"}`, "appScope", ""},
		{"appScope operator object", user, "add", `{"appScope":{"$ne":""},"appName":"x"}`, "appScope", ""},
		{"unknown param", user, "add", `{"appScope":"mail","appName":"x","created":"2020-01-01T00:00:00Z"}`, "created", ""},
		{"duplicate key", user, "add", `{"appScope":"mail","appScope":"eas","appName":"x"}`, "appScope", ""},
		{"params array", user, "add", `["mail","x"]`, "params", ""},
		{"params string", user, "add", `"mail"`, "params", ""},
		{"params number", user, "add", `1`, "params", ""},
		{"params missing", user, "add", ``, "appScope", ""},
		{"list unknown param", user, "list", `{"appScope":"mail"}`, "appScope", ""},
		{"getApps unknown param", user, "getApps", `{"lang":"de"}`, "lang", ""},
		{"uuid missing", user, "remove", `{}`, "uuid", ""},
		{"uuid number", user, "remove", `{"uuid":5}`, "uuid", ""},
		{"uuid operator object", user, "remove", `{"uuid":{"$ne":""}}`, "uuid", ""},
		{"uuid not a UUID", user, "remove", `{"uuid":"not-a-uuid"}`, "uuid", ""},
		{"uuid with a suffix", user, "remove", `{"uuid":"` + mine.UUID + `x"}`, "uuid", ""},
		{"uuid with spaces", user, "remove", `{"uuid":" ` + mine.UUID + `"}`, "uuid", ""},
		{"remove unknown param", user, "remove", `{"uuid":"` + mine.UUID + `","reason":"x"}`, "reason", ""},
		{"removeAll appScope unknown", user, "removeAll", `{"appScope":"telnet"}`, "appScope", "ASP-0002"},
		{"removeAll appScope number", user, "removeAll", `{"appScope":7}`, "appScope", ""},
		{"removeAll appScope object", user, "removeAll", `{"appScope":{"$ne":""}}`, "appScope", ""},
		{"protocol unknown", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":"telnet"}`, "protocol", ""},
		{"protocol empty", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":""}`, "protocol", ""},
		{"protocol missing", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `"}`, "protocol", ""},
		{"password missing", GatewaySecret, "authenticate", `{"login":"alice@example.com","protocol":"imap"}`, "password", ""},
		{"password operator object", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":{"$ne":""},"protocol":"imap"}`, "password", ""},
		{"login operator object", GatewaySecret, "authenticate", `{"login":{"$regex":".*"},"password":"` + mine.Password + `","protocol":"imap"}`, "login", ""},
		{"login too long", GatewaySecret, "authenticate", `{"login":"` + strings.Repeat("a", 257) + `","password":"` + mine.Password + `","protocol":"imap"}`, "login", ""},
		{"userAgent too long", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":"imap","userAgent":"` + strings.Repeat("u", 513) + `"}`, "userAgent", ""},
		{"ip not a string", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":"imap","ip":127}`, "ip", ""},
		{"authenticate unknown param", GatewaySecret, "authenticate", `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":"imap","scope":"mail"}`, "scope", ""},
		{"authenticate duplicate key", GatewaySecret, "authenticate", `{"login":"alice@example.com","login":"bob@example.com","password":"` + mine.Password + `","protocol":"imap"}`, "login", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.Call(t, tc.bearer, "appPasswords."+tc.method, tc.params)
			if tc.field == "" { // only the code is fixed
				WantError(t, r, errcode.InvalidParams)
				return
			}
			d := WantInvalid(t, r, tc.field)
			if d.OX != tc.OX {
				t.Fatalf("data.ox = %q, want %q", d.OX, tc.OX)
			}
		})
	}

	// Bad input changed nothing: the one password is still there, still
	// works, and authenticate recorded no login for refused attempts.
	if got := f.ListRaw(t, user); got != before {
		t.Fatalf("list changed by refused calls:\n%s\nwas\n%s", got, before)
	}
	OK(t, f.Authenticate(t, Alice.Login, mine.Password, "imap"))

	// The limits are inclusive: 128 characters (runes) is fine.
	for _, name := range []string{strings.Repeat("a", 128), strings.Repeat("é", 128), "  " + strings.Repeat("z", 128) + "\t"} {
		c := f.Add(t, user, "mail", name)
		if c.Name != strings.TrimSpace(name) {
			t.Fatalf("name %q stored as %q", name, c.Name)
		}
	}
}

// TestRefusedAddChangesNothing: a refused add leaves the list as it was,
// whatever the reason.
func TestRefusedAddChangesNothing(t *testing.T) {
	f := NewFixture(t, FixtureOptions{MaxPerUser: 2})
	user := f.Token(Alice)
	f.Add(t, user, "mail", "phone")
	before := f.ListRaw(t, user)
	for _, p := range []string{
		`{"appScope":"telnet","appName":"x"}`,
		`{"appScope":"mail","appName":""}`,
		`{"appScope":"mail","appName":{"$ne":""}}`,
		`{"appScope":"mail","appName":"x","user":{"contextId":1,"userId":5,"login":"alice@example.com"}}`,
		`{"appScope":"mail","appName":"x","extra":true}`,
		`["mail","x"]`,
	} {
		if r := f.Call(t, user, "appPasswords.add", p); r.Error == nil {
			t.Fatalf("add %s succeeded", p)
		}
		if got := f.ListRaw(t, user); got != before {
			t.Fatalf("list changed by refused add %s:\n%s\nwas\n%s", p, got, before)
		}
	}
	// A bad token or a gateway key cannot add either.
	for bearer, want := range map[string]int64{
		GatewaySecret:                  errcode.Forbidden,
		"nope":                         errcode.Unauthenticated,
		f.Token(Alice, "app_password"): errcode.Forbidden,
	} {
		_, r := f.Call2(t, bearer, "appPasswords.add", `{"appScope":"mail","appName":"x"}`)
		WantError(t, r, want)
	}
	if got := f.ListRaw(t, user); got != before {
		t.Fatalf("list changed by unauthorised adds:\n%s\nwas\n%s", got, before)
	}
	// And at the limit, the refused add changes nothing.
	f.Add(t, user, "mail", "tablet")
	full := f.ListRaw(t, user)
	WantError(t, f.Call(t, user, "appPasswords.add", `{"appScope":"mail","appName":"third"}`), errcode.Limit)
	if got := f.ListRaw(t, user); got != full {
		t.Fatalf("list changed by add over the limit:\n%s\nwas\n%s", got, full)
	}
}

func signHS256(t testing.TB, key []byte, header, claims string) string {
	t.Helper()
	signed := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestUnauthenticated(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	other := NewFixture(t, FixtureOptions{}) // another token key
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	claims := fmt.Sprintf(`{"cid":1,"uid":5,"login":"alice@example.com","exp":%d}`, exp)
	good := f.Token(Alice)
	parts := strings.Split(good, ".")
	// The same claims for bob, under alice's signature.
	bobClaims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"cid":1,"uid":6,"login":"bob@example.com","exp":%d}`, exp)))

	// The fixture's key, to sign tokens that are wrong in other ways.
	key := f.TokenKey

	cases := map[string]string{
		"no Authorization":        "",
		"empty bearer":            "Bearer ",
		"bearer without token":    "Bearer",
		"basic auth":              "Basic " + base64.StdEncoding.EncodeToString([]byte("gw:"+GatewaySecret)),
		"gateway secret bare":     GatewaySecret,
		"garbage bearer":          "Bearer garbage",
		"garbage with dots":       "Bearer a.b.c",
		"gateway secret prefix":   "Bearer " + GatewaySecret[:len(GatewaySecret)-1],
		"gateway secret longer":   "Bearer " + GatewaySecret + "7",
		"gateway secret case":     "Bearer " + strings.ToUpper(GatewaySecret),
		"expired token":           "Bearer " + f.Tokens.Mint(Alice, time.Hour, now.Add(-2*time.Hour)),
		"token expiring now":      "Bearer " + f.Tokens.Mint(Alice, 0, now),
		"token of another key":    "Bearer " + other.Token(Alice),
		"alg none":                "Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".",
		"alg none typ JWT":        "Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		"alg None signed":         "Bearer " + signHS256(t, key, `{"alg":"None"}`, claims),
		"alg HS512 label":         "Bearer " + signHS256(t, key, `{"alg":"HS512","typ":"JWT"}`, claims),
		"alg RS256 label":         "Bearer " + signHS256(t, key, `{"alg":"RS256","typ":"JWT"}`, claims),
		"signature stripped":      "Bearer " + parts[0] + "." + parts[1] + ".",
		"signature of other body": "Bearer " + parts[0] + "." + bobClaims + "." + parts[2],
		"signature truncated":     "Bearer " + good[:len(good)-2],
		"no exp":                  "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, `{"cid":1,"uid":5,"login":"alice@example.com"}`),
		"no login":                "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"cid":1,"uid":5,"exp":%d}`, exp)),
		"empty login":             "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"cid":1,"uid":5,"login":"","exp":%d}`, exp)),
		"cid a string":            "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"cid":"1","uid":5,"login":"alice@example.com","exp":%d}`, exp)),
		"negative uid":            "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"cid":1,"uid":-5,"login":"alice@example.com","exp":%d}`, exp)),
		"exp a string":            "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"cid":1,"uid":5,"login":"alice@example.com","exp":"%d"}`, exp)),
		"claims not JSON":         "Bearer " + signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, `cid=1`),
		"four segments":           "Bearer " + good + ".x",
	}
	for name, authorization := range cases {
		t.Run(name, func(t *testing.T) {
			for _, body := range []string{
				Request("appPasswords.list", ""),
				Request("appPasswords.add", `{"appScope":"mail","appName":"sneaky"}`),
				Request("appPasswords.authenticate", `{"login":"alice@example.com","password":"aaaa-aaaa-aaaa-aaaa","protocol":"imap"}`),
				`[` + Request("appPasswords.list", "") + `]`,
				`{"jsonrpc":"2.0","method":"appPasswords.removeAll"}`,
				`not even JSON`,
			} {
				status, raw := f.Post(t, authorization, body)
				if status != http.StatusUnauthorized {
					t.Fatalf("HTTP %d, want 401: %s", status, raw)
				}
				r := ParseResponse(t, raw)
				WantError(t, r, errcode.Unauthenticated)
				if string(r.ID) != "null" {
					t.Fatalf("id %s, want null", r.ID)
				}
			}
		})
	}
	// The same calls with the right token work, and nothing above added.
	if got := f.ListRaw(t, good); got != "[]" {
		t.Fatalf("unauthenticated add left %s", got)
	}
	// A signed token with the signing key right and the claims right is
	// accepted, so the hand-made tokens above fail for what is wrong in them.
	OK(t, f.Call(t, signHS256(t, key, `{"alg":"HS256","typ":"JWT"}`, claims), "appPasswords.list", ""))
	// The scheme name is case-insensitive (RFC 9110).
	status, raw := f.Post(t, "bearer "+good, Request("appPasswords.list", ""))
	if status != http.StatusOK {
		t.Fatalf("lower-case scheme: HTTP %d %s", status, raw)
	}
	OK(t, ParseResponse(t, raw))
}

func TestForbidden(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := f.Token(Alice)
	viaApp := f.Token(Alice, "pwd", "app_password")
	mine := f.Add(t, user, "mail", "phone")
	before := f.ListRaw(t, user)
	aliceParam := `{"contextId":1,"userId":5,"login":"alice@example.com"}`
	bobParam := `{"contextId":1,"userId":6,"login":"bob@example.com"}`
	authParams := `{"login":"alice@example.com","password":"` + mine.Password + `","protocol":"imap"}`

	for _, tc := range []struct{ name, bearer, method, params string }{
		{"gateway add", GatewaySecret, "add", `{"appScope":"mail","appName":"x"}`},
		{"gateway add for a user", GatewaySecret, "add", `{"appScope":"mail","appName":"x","user":` + aliceParam + `}`},
		{"gateway list", GatewaySecret, "list", ""},
		{"gateway remove", GatewaySecret, "remove", `{"uuid":"` + mine.UUID + `"}`},
		{"gateway removeAll", GatewaySecret, "removeAll", ""},
		{"gateway getApps", GatewaySecret, "getApps", ""},
		{"user authenticate", user, "authenticate", authParams},
		{"app-password session authenticate", viaApp, "authenticate", authParams},
		{"app-password session add", viaApp, "add", `{"appScope":"mail","appName":"x"}`},
		{"app-password session list", viaApp, "list", ""},
		{"app-password session remove", viaApp, "remove", `{"uuid":"` + mine.UUID + `"}`},
		{"app-password session removeAll", viaApp, "removeAll", ""},
		{"user naming themselves", user, "list", `{"user":` + aliceParam + `}`},
		{"user naming another user in list", user, "list", `{"user":` + bobParam + `}`},
		{"user naming another user in add", user, "add", `{"appScope":"mail","appName":"x","user":` + bobParam + `}`},
		{"user naming another user in remove", user, "remove", `{"uuid":"` + mine.UUID + `","user":` + bobParam + `}`},
		{"user naming another user in removeAll", user, "removeAll", `{"user":` + bobParam + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			WantError(t, f.Call(t, tc.bearer, "appPasswords."+tc.method, tc.params), errcode.Forbidden)
		})
	}
	// Nothing was added, removed or logged in.
	if got := f.ListRaw(t, user); got != before {
		t.Fatalf("forbidden calls changed the list:\n%s\nwas\n%s", got, before)
	}
	if got := f.ListRaw(t, f.Token(Bob)); got != "[]" {
		t.Fatalf("bob's list = %s", got)
	}
	// An app-password session may still read the catalogue.
	OK(t, f.Call(t, viaApp, "appPasswords.getApps", ""))
	// A session opened otherwise ("pwd" in amr) manages passwords.
	OK(t, f.Call(t, f.Token(Alice, "pwd"), "appPasswords.list", ""))
}

func TestNotFound(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	mine := f.Add(t, f.Token(Alice), "mail", "phone")
	bobs := f.Add(t, f.Token(Bob), "mail", "phone")
	carols := f.Add(t, f.Token(Carol), "mail", "phone")

	unknown := f.Call(t, f.Token(Alice), "appPasswords.remove", `{"uuid":"00000000-0000-4000-8000-000000000000"}`)
	WantError(t, unknown, errcode.NotFound)
	for _, uuid := range []string{bobs.UUID, carols.UUID} {
		r := f.Call(t, f.Token(Alice), "appPasswords.remove", `{"uuid":"`+uuid+`"}`)
		WantError(t, r, errcode.NotFound)
		// Not mine and not there look exactly alike.
		if a, b := mustJSON(t, r.Error), mustJSON(t, unknown.Error); a != b {
			t.Fatalf("another user's uuid answers %s, an unknown one %s", a, b)
		}
	}
	// Bob's and carol's are untouched.
	OK(t, f.Authenticate(t, Bob.Login, bobs.Password, "imap"))
	OK(t, f.Authenticate(t, Carol.Login, carols.Password, "imap"))
	if l := f.List(t, f.Token(Bob)); len(l) != 1 || l[0].UUID != bobs.UUID {
		t.Fatalf("bob's list = %+v", l)
	}
	// Removing twice: the second is not found.
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.remove", `{"uuid":"`+mine.UUID+`"}`))
	WantError(t, f.Call(t, f.Token(Alice), "appPasswords.remove", `{"uuid":"`+mine.UUID+`"}`), errcode.NotFound)
	// An admin naming the wrong user gets the same.
	WantError(t, f.Call(t, AdminSecret, "appPasswords.remove",
		`{"uuid":"`+bobs.UUID+`","user":{"contextId":1,"userId":5,"login":"alice@example.com"}}`), errcode.NotFound)
	OK(t, f.Authenticate(t, Bob.Login, bobs.Password, "imap"))
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRejected(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	mail := f.Add(t, f.Token(Alice), "mail", "phone")
	cal := f.Add(t, f.Token(Alice), "caldav", "calendar")
	revoked := f.Add(t, f.Token(Alice), "mail", "old phone")
	bobs := f.Add(t, f.Token(Bob), "mail", "phone")
	OK(t, f.Call(t, f.Token(Alice), "appPasswords.remove", `{"uuid":"`+revoked.UUID+`"}`))

	wrong := []byte(mail.Password)
	wrong[0] = 'a' + (wrong[0]-'a'+1)%26 // one letter off
	var first string
	for _, tc := range []struct{ name, login, Password, protocol string }{
		{"wrong password", Alice.Login, string(wrong), "imap"},
		{"password too short", Alice.Login, mail.Password[:18], "imap"},
		{"password too long", Alice.Login, mail.Password + "a", "imap"},
		{"password with a digit", Alice.Login, "1" + mail.Password[1:], "imap"},
		{"empty password", Alice.Login, "", "imap"},
		{"unknown login", "mallory@example.com", mail.Password, "imap"},
		{"empty login", "", mail.Password, "imap"},
		{"another user's login", Bob.Login, mail.Password, "imap"},
		{"another user's password", Alice.Login, bobs.Password, "imap"},
		{"revoked", Alice.Login, revoked.Password, "imap"},
		{"caldav password on imap", Alice.Login, cal.Password, "imap"},
		{"caldav password on carddav", Alice.Login, cal.Password, "carddav"},
		{"mail password on caldav", Alice.Login, mail.Password, "caldav"},
		{"mail password on eas", Alice.Login, mail.Password, "eas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.Authenticate(t, tc.login, tc.Password, tc.protocol)
			WantError(t, r, errcode.Rejected)
			// Every refusal is the same answer.
			if got := mustJSON(t, r.Error); first == "" {
				first = got
			} else if got != first {
				t.Fatalf("refusal %s differs from %s", got, first)
			}
		})
	}
	// No refused attempt recorded a login.
	for _, row := range f.List(t, f.Token(Alice)) {
		if row.LastLogin != nil {
			t.Fatalf("%s has lastLogin %+v after refused attempts only", row.AppScope, row.LastLogin)
		}
	}
	// And the right ones still work.
	OK(t, f.Authenticate(t, Alice.Login, mail.Password, "imap"))
	OK(t, f.Authenticate(t, Alice.Login, cal.Password, "caldav"))
}

func TestLimit(t *testing.T) {

	t.Run("sequential", func(t *testing.T) {
		f := NewFixture(t, FixtureOptions{MaxPerUser: 3})
		user := f.Token(Alice)
		var made []Created
		for i := range 3 {
			made = append(made, f.Add(t, user, "mail", fmt.Sprint("phone ", i)))
		}
		WantError(t, f.Call(t, user, "appPasswords.add", `{"appScope":"drive","appName":"fourth"}`), errcode.Limit)
		if l := f.List(t, user); len(l) != 3 {
			t.Fatalf("list has %d after the refused add", len(l))
		}
		// The limit is per user.
		f.Add(t, f.Token(Bob), "mail", "bob's phone")
		f.Add(t, f.Token(Carol), "mail", "carol's phone")
		// Removing one makes room for one.
		OK(t, f.Call(t, user, "appPasswords.remove", `{"uuid":"`+made[1].UUID+`"}`))
		f.Add(t, user, "drive", "fourth")
		WantError(t, f.Call(t, user, "appPasswords.add", `{"appScope":"drive","appName":"fifth"}`), errcode.Limit)
		// An admin is held to the same limit.
		WantError(t, f.Call(t, AdminSecret, "appPasswords.add",
			`{"appScope":"drive","appName":"fifth","user":{"contextId":1,"userId":5,"login":"alice@example.com"}}`), errcode.Limit)
		if got := OK(t, f.Call(t, user, "appPasswords.removeAll", "")); string(got) != `{"removed":3}` {
			t.Fatalf("removeAll = %s", got)
		}
		for i := range 3 {
			f.Add(t, user, "eas", fmt.Sprint("again ", i))
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		f := NewFixture(t, FixtureOptions{MaxPerUser: 3})
		user := f.Token(Alice)
		const n = 10
		var wg sync.WaitGroup
		bodies := make([][]byte, n)
		errs := make([]error, n)
		statuses := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i], bodies[i], errs[i] = f.PostAsync("Bearer "+user,
					Request("appPasswords.add", fmt.Sprintf(`{"appScope":"mail","appName":"racer %d"}`, i)))
			}()
		}
		wg.Wait()
		var won []string
		for i := range n {
			if errs[i] != nil || statuses[i] != http.StatusOK {
				t.Fatalf("racer %d: HTTP %d, %v", i, statuses[i], errs[i])
			}
			r := ParseResponse(t, bodies[i])
			if r.Error == nil {
				won = append(won, Decode[Created](t, r.Result).UUID)
				continue
			}
			if r.Error.Code != errcode.Limit {
				t.Errorf("racer %d: error %d %q, want success or %d", i, r.Error.Code, r.Error.Message, errcode.Limit)
			}
		}
		if len(won) != 3 {
			t.Fatalf("%d of %d concurrent adds succeeded with a limit of 3", len(won), n)
		}
		list := f.List(t, user)
		if len(list) != 3 {
			t.Fatalf("list has %d passwords, want 3", len(list))
		}
		for _, row := range list {
			if !strings.Contains(strings.Join(won, " "), row.UUID) {
				t.Fatalf("listed %s was not among the winners %v", row.UUID, won)
			}
		}
	})
}
