package jsonrpc_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
)

// TestUIFlow walks what the settings page does: pick an app, add a
// password, list, let a gateway log in with it, delete it.
func TestUIFlow(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	user := f.Token(Alice)

	// getApps: the built-in OX catalogue, in display order.
	rawApps := OK(t, f.Call(t, user, "appPasswords.getApps", ""))
	var apps []json.RawMessage
	if err := json.Unmarshal(rawApps, &apps); err != nil {
		t.Fatalf("getApps result is not an array: %s", rawApps)
	}
	type app struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		// Translations, for the settings page.
		DisplayNames map[string]string `json:"displayNames"`
		Sort         int               `json:"sort"`
		Protocols    []string          `json:"protocols"`
		Scopes       []string          `json:"scopes"`
		Settings     []apppass.Setting `json:"settings"`
	}
	byName := map[string]app{}
	var names []string
	lastSort := -1 << 31
	for _, raw := range apps {
		keys := KeysOf(t, raw)
		for _, k := range []string{"name", "displayName", "sort", "protocols", "scopes"} {
			if !slices.Contains(keys, k) {
				t.Fatalf("app lacks %q: %s", k, raw)
			}
		}
		a := Decode[app](t, raw)
		if a.DisplayName == "" || len(a.Protocols) == 0 || len(a.Scopes) == 0 {
			t.Fatalf("app %q incomplete: %s", a.Name, raw)
		}
		if a.Sort <= lastSort {
			t.Fatalf("apps not in display order at %q (sort %d after %d)", a.Name, a.Sort, lastSort)
		}
		lastSort = a.Sort
		names = append(names, a.Name)
		byName[a.Name] = a
	}
	if want := []string{"mail", "drive", "caldav", "carddav", "calcarddav", "webdav", "eas"}; !slices.Equal(names, want) {
		t.Fatalf("apps %v, want %v", names, want)
	}
	if p := byName["mail"].Protocols; !slices.Equal(p, []string{"imap", "pop3", "smtp"}) {
		t.Fatalf("mail protocols %v", p)
	}
	if p := byName["calcarddav"].Protocols; !slices.Equal(p, []string{"caldav", "carddav"}) {
		t.Fatalf("calcarddav protocols %v", p)
	}
	if d := byName["eas"].DisplayName; d != "Exchange ActiveSync" {
		t.Fatalf("eas displayName %q", d)
	}
	if !slices.Contains(byName["mail"].Scopes, "read_mail") || !slices.Contains(byName["caldav"].Scopes, "write_caldav") {
		t.Fatalf("OX restricted scopes missing: mail %v caldav %v", byName["mail"].Scopes, byName["caldav"].Scopes)
	}

	// Nothing yet: an empty array, not null.
	if got := f.ListRaw(t, user); got != "[]" {
		t.Fatalf("empty list = %s, want []", got)
	}

	// add: the one time the password is shown.
	rawMail := OK(t, f.Call(t, user, "appPasswords.add", `{"appScope":"mail","appName":"  iPhone Mail  "}`))
	WantKeys(t, rawMail, "uuid", "login", "password", "newLogin", "appScope", "name", "created", "expires", "idleExpiry", "allowedIPs", "settings")
	mail := Decode[Created](t, rawMail)
	if !PasswordRE.MatchString(mail.Password) {
		t.Fatalf("password %q is not xxxx-xxxx-xxxx-xxxx", mail.Password)
	}
	if !UUIDRE.MatchString(mail.UUID) {
		t.Fatalf("uuid %q is not a v4 UUID", mail.UUID)
	}
	if mail.Login != Alice.Login || mail.NewLogin || mail.AppScope != "mail" || mail.Name != "iPhone Mail" {
		t.Fatalf("add result %+v", mail)
	}
	RFC3339UTC(t, mail.Created)
	if !slices.Contains(mail.Settings, apppass.Setting{Protocol: "imap", Host: "localhost", Port: 993, Security: "ssl"}) {
		t.Fatalf("mail settings lack IMAP: %+v", mail.Settings)
	}
	cal := f.Add(t, user, "caldav", "Thunderbird")
	dav := f.Add(t, user, "calcarddav", "DAVx5 on my phone")
	if len(cal.Settings) == 0 || len(dav.Settings) == 0 {
		t.Fatal("settings are empty")
	}
	if cal.Password == mail.Password || dav.Password == cal.Password || cal.UUID == mail.UUID || dav.UUID == cal.UUID {
		t.Fatal("two adds returned the same password or uuid")
	}

	// list: newest first, never the password or its digest.
	rawList := f.ListRaw(t, user)
	var rows []json.RawMessage
	if err := json.Unmarshal([]byte(rawList), &rows); err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		WantKeys(t, row, "uuid", "name", "appScope", "created", "lastLogin", "expires", "idleExpiry", "allowedIPs")
	}
	for _, c := range []Created{mail, cal, dav} {
		norm, _ := apppass.NormalizePassword(c.Password)
		for _, secret := range []string{c.Password, string(norm), f.Digester.Digest(norm)} {
			if strings.Contains(rawList, secret) {
				t.Fatalf("list reveals %q: %s", secret, rawList)
			}
		}
	}
	for _, word := range []string{"password", "digest"} {
		if strings.Contains(strings.ToLower(rawList), word) {
			t.Fatalf("list mentions %q: %s", word, rawList)
		}
	}
	list := Decode[[]Listed](t, json.RawMessage(rawList))
	if len(list) != 3 {
		t.Fatalf("list has %d rows, want 3", len(list))
	}
	for i, want := range []Created{dav, cal, mail} {
		got := list[i]
		if got.UUID != want.UUID || got.Name != want.Name || got.AppScope != want.AppScope || got.Created != want.Created {
			t.Fatalf("row %d = %+v, want %+v (newest first)", i, got, want)
		}
		if got.LastLogin != nil {
			t.Fatalf("row %d has lastLogin before any login: %+v", i, got.LastLogin)
		}
	}

	// authenticate: the password however typed, the login in any case.
	upper := strings.ToUpper(mail.Password)
	typed := []string{
		mail.Password,
		upper,
		strings.ReplaceAll(mail.Password, "-", ""),
		strings.ReplaceAll(upper, "-", ""),
		strings.ReplaceAll(mail.Password, "-", " "),
		" " + strings.ReplaceAll(mail.Password, "-", " - ") + " ",
	}
	for _, pw := range typed {
		for _, login := range []string{Alice.Login, "ALICE@Example.COM", "  Alice@example.com "} {
			for _, protocol := range []string{"imap", "smtp", "pop3"} {
				got := OK(t, f.Authenticate(t, login, pw, protocol))
				WantKeys(t, got, "uuid", "contextId", "userId", "login", "appScope", "scopes")
				a := Decode[Authenticated](t, got)
				if a.UUID != mail.UUID || a.ContextID != Alice.ContextID || a.UserID != Alice.UserID ||
					a.Login != Alice.Login || a.AppScope != "mail" || !slices.Equal(a.Scopes, byName["mail"].Scopes) {
					t.Fatalf("authenticate(%q, %q, %s) = %+v", login, pw, protocol, a)
				}
			}
		}
	}
	// The last login is recorded with what the gateway saw.
	r := f.Call(t, GatewaySecret, "appPasswords.authenticate", Params(t, map[string]string{
		"login": Alice.Login, "password": cal.Password, "protocol": "caldav",
		"ip": "192.0.2.7", "device": "Thunderbird on Linux", "userAgent": "Thunderbird/128.0",
	}))
	if a := Decode[Authenticated](t, OK(t, r)); a.UUID != cal.UUID || a.AppScope != "caldav" ||
		!slices.Equal(a.Scopes, byName["caldav"].Scopes) {
		t.Fatalf("caldav login = %+v", a)
	}
	list = f.List(t, user)
	if list[0].LastLogin != nil {
		t.Fatalf("unused password got a lastLogin: %+v", list[0].LastLogin)
	}
	ll := list[1].LastLogin
	if list[1].UUID != cal.UUID || ll == nil {
		t.Fatalf("caldav row after login: %+v", list[1])
	}
	if ll.IP != "192.0.2.7" || ll.Device != "Thunderbird on Linux" || ll.UserAgent != "Thunderbird/128.0" ||
		!ll.Time.After(RFC3339UTC(t, cal.Created)) {
		t.Fatalf("caldav lastLogin = %+v", ll)
	}
	if list[2].LastLogin == nil {
		t.Fatal("mail lastLogin not recorded")
	}
	var rawRows []map[string]json.RawMessage
	_ = json.Unmarshal([]byte(f.ListRaw(t, user)), &rawRows)
	var lastLogin map[string]json.RawMessage
	_ = json.Unmarshal(rawRows[1]["lastLogin"], &lastLogin)
	var llTime string
	_ = json.Unmarshal(lastLogin["time"], &llTime)
	RFC3339UTC(t, llTime)
	if string(rawRows[0]["lastLogin"]) != "null" {
		t.Fatalf("lastLogin of an unused password is %s, want null", rawRows[0]["lastLogin"])
	}
	// calcarddav is good on both of its protocols.
	for _, protocol := range []string{"caldav", "carddav"} {
		if a := Decode[Authenticated](t, OK(t, f.Authenticate(t, Alice.Login, dav.Password, protocol))); a.UUID != dav.UUID {
			t.Fatalf("calcarddav on %s = %+v", protocol, a)
		}
	}

	// remove, then the password is dead.
	if got := OK(t, f.Call(t, user, "appPasswords.remove", Params(t, map[string]string{"uuid": mail.UUID}))); string(got) != `{"result":"OK"}` {
		t.Fatalf("remove = %s", got)
	}
	WantError(t, f.Authenticate(t, Alice.Login, mail.Password, "imap"), errcode.Rejected)
	list = f.List(t, user)
	if len(list) != 2 || list[0].UUID != dav.UUID || list[1].UUID != cal.UUID {
		t.Fatalf("list after remove = %+v", list)
	}
	// A UUID is accepted in upper case too.
	w1 := f.Add(t, user, "webdav", "Finder")
	OK(t, f.Call(t, user, "appPasswords.remove", Params(t, map[string]string{"uuid": strings.ToUpper(w1.UUID)})))
	WantError(t, f.Authenticate(t, Alice.Login, w1.Password, "webdav"), errcode.Rejected)

	// removeAll for one app, then for all.
	w2 := f.Add(t, user, "webdav", "Finder")
	w3 := f.Add(t, user, "webdav", "Windows Explorer")
	if got := OK(t, f.Call(t, user, "appPasswords.removeAll", `{"appScope":"webdav"}`)); string(got) != `{"removed":2}` {
		t.Fatalf("removeAll webdav = %s", got)
	}
	for _, c := range []Created{w2, w3} {
		WantError(t, f.Authenticate(t, Alice.Login, c.Password, "webdav"), errcode.Rejected)
	}
	OK(t, f.Authenticate(t, Alice.Login, cal.Password, "caldav")) // other apps untouched
	if list = f.List(t, user); len(list) != 2 {
		t.Fatalf("list after removeAll webdav = %+v", list)
	}
	if got := OK(t, f.Call(t, user, "appPasswords.removeAll", "")); string(got) != `{"removed":2}` {
		t.Fatalf("removeAll = %s", got)
	}
	WantError(t, f.Authenticate(t, Alice.Login, cal.Password, "caldav"), errcode.Rejected)
	WantError(t, f.Authenticate(t, Alice.Login, dav.Password, "carddav"), errcode.Rejected)
	if got := f.ListRaw(t, user); got != "[]" {
		t.Fatalf("list after removeAll = %s", got)
	}
	if got := OK(t, f.Call(t, user, "appPasswords.removeAll", `{"appScope":null}`)); string(got) != `{"removed":0}` {
		t.Fatalf("removeAll with nothing left = %s", got)
	}
}

// TestUsersAreSeparate: a user sees and removes only their own passwords,
// and a user id in another context is another user.
func TestUsersAreSeparate(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	a := f.Add(t, f.Token(Alice), "mail", "alice's phone")
	c := f.Add(t, f.Token(Carol), "mail", "carol's phone")
	for _, u := range []struct {
		user apppass.User
		want string
	}{{Alice, a.UUID}, {Carol, c.UUID}} {
		list := f.List(t, f.Token(u.user))
		if len(list) != 1 || list[0].UUID != u.want {
			t.Fatalf("%s sees %+v", u.user.Login, list)
		}
	}
	if got := f.ListRaw(t, f.Token(Bob)); got != "[]" {
		t.Fatalf("bob sees %s", got)
	}
	if got := OK(t, f.Call(t, f.Token(Bob), "appPasswords.removeAll", "")); string(got) != `{"removed":0}` {
		t.Fatalf("bob's removeAll = %s", got)
	}
	// A password is good only with its owner's login.
	WantError(t, f.Authenticate(t, Carol.Login, a.Password, "imap"), errcode.Rejected)
	if got := Decode[Authenticated](t, OK(t, f.Authenticate(t, Carol.Login, c.Password, "imap"))); got.ContextID != 2 || got.UserID != 5 {
		t.Fatalf("carol authenticated as %+v", got)
	}
	OK(t, f.Authenticate(t, Alice.Login, a.Password, "imap"))
}

// TestAdmin: an admin key manages any user's passwords, naming the user.
func TestAdmin(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	aliceParam := map[string]any{"contextId": Alice.ContextID, "userId": Alice.UserID, "login": Alice.Login}

	c := Decode[Created](t, OK(t, f.Call(t, AdminSecret, "appPasswords.add",
		Params(t, map[string]any{"user": aliceParam, "appScope": "eas", "appName": "Outlook"}))))
	if c.Login != Alice.Login || c.AppScope != "eas" || c.Name != "Outlook" || !PasswordRE.MatchString(c.Password) {
		t.Fatalf("admin add = %+v", c)
	}
	// The user sees it, and so does the admin.
	if list := f.List(t, f.Token(Alice)); len(list) != 1 || list[0].UUID != c.UUID {
		t.Fatalf("alice's list = %+v", list)
	}
	adminList := Decode[[]Listed](t, OK(t, f.Call(t, AdminSecret, "appPasswords.list", Params(t, map[string]any{"user": aliceParam}))))
	if len(adminList) != 1 || adminList[0].UUID != c.UUID {
		t.Fatalf("admin list = %+v", adminList)
	}
	if got := OK(t, f.Call(t, AdminSecret, "appPasswords.list",
		`{"user":{"contextId":1,"userId":6,"login":"bob@example.com"}}`)); string(got) != "[]" {
		t.Fatalf("admin list of bob = %s", got)
	}
	// Admins may authenticate too, and see the apps.
	if a := Decode[Authenticated](t, OK(t, f.Call(t, AdminSecret, "appPasswords.authenticate",
		Params(t, map[string]string{"login": Alice.Login, "password": c.Password, "protocol": "eas"})))); a.UUID != c.UUID {
		t.Fatalf("admin authenticate = %+v", a)
	}
	OK(t, f.Call(t, AdminSecret, "appPasswords.getApps", ""))
	// The user is named by contextId and userId: another context's user 5 is not alice.
	WantError(t, f.Call(t, AdminSecret, "appPasswords.remove",
		Params(t, map[string]any{"user": map[string]any{"contextId": 2, "userId": 5, "login": Carol.Login}, "uuid": c.UUID})), errcode.NotFound)
	if got := OK(t, f.Call(t, AdminSecret, "appPasswords.remove", Params(t, map[string]any{"user": aliceParam, "uuid": c.UUID}))); string(got) != `{"result":"OK"}` {
		t.Fatalf("admin remove = %s", got)
	}
	WantError(t, f.Authenticate(t, Alice.Login, c.Password, "eas"), errcode.Rejected)
	f.Add(t, f.Token(Alice), "mail", "one")
	f.Add(t, f.Token(Alice), "drive", "two")
	if got := OK(t, f.Call(t, AdminSecret, "appPasswords.removeAll", Params(t, map[string]any{"user": aliceParam, "appScope": "drive"}))); string(got) != `{"removed":1}` {
		t.Fatalf("admin removeAll drive = %s", got)
	}
	if got := OK(t, f.Call(t, AdminSecret, "appPasswords.removeAll", Params(t, map[string]any{"user": aliceParam}))); string(got) != `{"removed":1}` {
		t.Fatalf("admin removeAll = %s", got)
	}

	t.Run("user missing", func(t *testing.T) {
		for method, p := range map[string]string{
			"appPasswords.add":       `{"appScope":"mail","appName":"x"}`,
			"appPasswords.list":      "",
			"appPasswords.remove":    `{"uuid":"` + c.UUID + `"}`,
			"appPasswords.removeAll": `{}`,
		} {
			WantInvalid(t, f.Call(t, AdminSecret, method, p), "user")
		}
	})

	t.Run("user malformed", func(t *testing.T) {
		for _, tc := range []struct{ user, field string }{
			{`"alice@example.com"`, "user"},
			{`[1,5,"alice@example.com"]`, "user"},
			{`5`, "user"},
			{`null`, "user.contextId"},
			{`{}`, "user.contextId"},
			{`{"userId":5,"login":"alice@example.com"}`, "user.contextId"},
			{`{"contextId":1,"login":"alice@example.com"}`, "user.userId"},
			{`{"contextId":1,"userId":5}`, "user.login"},
			{`{"contextId":"1","userId":5,"login":"alice@example.com"}`, "user.contextId"},
			{`{"contextId":1,"userId":-5,"login":"alice@example.com"}`, "user.userId"},
			{`{"contextId":1.5,"userId":5,"login":"alice@example.com"}`, "user.contextId"},
			{`{"contextId":1,"userId":5,"login":""}`, "user.login"},
			{`{"contextId":1,"userId":5,"login":"   "}`, "user.login"},
			{`{"contextId":1,"userId":5,"login":{"$ne":""}}`, "user.login"},
			{`{"contextId":{"$gt":0},"userId":5,"login":"alice@example.com"}`, "user.contextId"},
			{`{"contextId":1,"userId":5,"login":"alice@example.com","role":"admin"}`, "user.role"},
			{`{"contextId":1,"contextId":2,"userId":5,"login":"alice@example.com"}`, "user.contextId"},
		} {
			r := f.Call(t, AdminSecret, "appPasswords.add", `{"appScope":"mail","appName":"x","user":`+tc.user+`}`)
			d := WantInvalid(t, r, tc.field)
			if !strings.HasPrefix(d.Field, "user") {
				t.Fatalf("field %q does not start with user", d.Field)
			}
		}
		if got := f.ListRaw(t, f.Token(Alice)); got != "[]" {
			t.Fatalf("malformed admin adds left passwords behind: %s", got)
		}
	})
}
