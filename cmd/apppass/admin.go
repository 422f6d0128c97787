package main

// The admin subcommands: an admin key manages a named user's app passwords
// (docs/methods.md, "Callers": admins pass the user as the "user" param).

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/apppass/apppass"
)

// userFlags are --context, --user and --login, which name the user an
// admin acts for. All three are required: apppassd matches the login too.
type userFlags struct {
	contextID, userID optionalID
	login             string
}

// optionalID is an id flag that knows whether it was given (0 is an id).
type optionalID struct {
	v   int64
	set bool
}

func (o *optionalID) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *optionalID) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a whole number of at least 0, got %q", s)
	}
	o.v, o.set = v, true
	return nil
}

func (u *userFlags) register(fs *flag.FlagSet) {
	fs.Var(&u.contextID, "context", "the user's context `ID` (required)")
	fs.Var(&u.userID, "user", "the user's `ID` in the context (required)")
	fs.StringVar(&u.login, "login", "", "the user's `LOGIN`, e.g. alice@example.com (required)")
}

// check returns what is wrong with the flags, or "".
func (u *userFlags) check() string {
	var missing []string
	if !u.contextID.set {
		missing = append(missing, "--context")
	}
	if !u.userID.set {
		missing = append(missing, "--user")
	}
	if strings.TrimSpace(u.login) == "" {
		missing = append(missing, "--login")
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ") + ": name the user"
	}
	return ""
}

func (u *userFlags) user() apppass.User {
	return apppass.User{ContextID: u.contextID.v, UserID: u.userID.v, Login: u.login}
}

// param is the "user" param of admin calls.
func (u *userFlags) param() apppass.User { return u.user() }

// adminFlags parses the flags every user-managing subcommand shares (and
// those the caller added to fs) and wants wantArgs positional arguments.
// done means the command is over with code.
func adminFlags(sys *system, c *command, fs *flag.FlagSet, args []string, wantArgs int) (u *userFlags, positional []string, asJSON bool, code int, done bool) {
	u = &userFlags{}
	u.register(fs)
	fs.BoolVar(&asJSON, "json", false, rawResultUsage)
	positional, code, done = parseFlags(sys, c, fs, args)
	if done {
		return nil, nil, false, code, true
	}
	if len(positional) != wantArgs {
		if wantArgs == 0 {
			return nil, nil, false, usageError(sys, c, "unexpected argument %q", positional[0]), true
		}
		return nil, nil, false, usageError(sys, c, "want %d argument(s), got %d", wantArgs, len(positional)), true
	}
	if msg := u.check(); msg != "" {
		return nil, nil, false, usageError(sys, c, "%s", msg), true
	}
	return u, positional, asJSON, 0, false
}

// adminSidecar reads APPPASS_URL, APPPASS_TIMEOUT and the admin key, after
// the flags were checked: a usage error is one whatever the environment.
func adminSidecar(sys *system, c *command) (*sidecar, int, bool) {
	s, err := sidecarFromEnv(sys.getenv, adminKey)
	if err != nil {
		return nil, fail(sys, c, err), false
	}
	return s, 0, true
}

const userFlagsSynopsis = "--context ID --user ID --login LOGIN"

var listCommand = &command{
	name:    "list",
	args:    userFlagsSynopsis + " [--json]",
	summary: "list a user's app passwords (admin key)",
	help: `Lists the user's app passwords, newest first (appPasswords.list): uuid,
name, app, when created, the last login (time and address) and the limits.
Never a password: apppassd keeps none.
`,
	run: runList,
}

// listed is one entry of appPasswords.list.
type listed struct {
	UUID       string   `json:"uuid"`
	Name       string   `json:"name"`
	AppScope   string   `json:"appScope"`
	Created    string   `json:"created"`
	Expires    *string  `json:"expires"`
	IdleExpiry *string  `json:"idleExpiry"`
	AllowedIPs []string `json:"allowedIPs"`
	LastLogin  *struct {
		Time string `json:"time"`
		IP   string `json:"ip"`
	} `json:"lastLogin"`
}

func runList(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	u, _, asJSON, code, done := adminFlags(sys, c, fs, args, 0)
	if done {
		return code
	}
	s, code, ok := adminSidecar(sys, c)
	if !ok {
		return code
	}
	return result(sys, c, s, "appPasswords.list", map[string]any{"user": u.param()}, asJSON, func(raw json.RawMessage) error {
		var list []listed
		if err := json.Unmarshal(raw, &list); err != nil {
			return err
		}
		if len(list) == 0 {
			fmt.Fprintf(sys.stdout, "No app passwords for %s.\n", u.login)
			return nil
		}
		rows := make([][]string, 0, len(list))
		for _, p := range list {
			last := "never"
			if p.LastLogin != nil {
				last = strings.TrimSpace(p.LastLogin.Time + " " + p.LastLogin.IP)
			}
			rows = append(rows, []string{p.UUID, p.Name, p.AppScope, p.Created, last, limits(p.Expires, p.IdleExpiry, p.AllowedIPs)})
		}
		table(sys.stdout, []string{"UUID", "NAME", "APP", "CREATED", "LAST LOGIN", "LIMITS"}, rows)
		return nil
	})
}

// limits sums up a password's limits in one cell.
func limits(expires, idle *string, ips []string) string {
	var out []string
	if expires != nil {
		out = append(out, "expires "+*expires)
	}
	if idle != nil {
		out = append(out, "idle "+*idle)
	}
	if len(ips) > 0 {
		out = append(out, "from "+strings.Join(ips, ","))
	}
	return orDash(strings.Join(out, "; "))
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var addCommand = &command{
	name:    "add",
	args:    userFlagsSynopsis + " --app APP --name NAME [--expires T] [--idle-expiry D] [--allowed-ip P]... [--json]",
	summary: "add an app password for a user and show it once (admin key)",
	help: `Adds an app password for the user (appPasswords.add) and prints it with
its uuid: the only time the password is ever shown. --app is an app of the
catalogue (see apppass apps). --expires is an RFC 3339 time or a duration
from now (720h); --idle-expiry revokes it when unused that long (720h);
--allowed-ip, repeatable, restricts logins to addresses or CIDR prefixes.
`,
	run: runAdd,
}

func runAdd(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var app, name, expires, idle string
	var ips stringList
	fs.StringVar(&app, "app", "", "the app (appScope), e.g. mail (required)")
	fs.StringVar(&name, "name", "", "a name the user recognises it by, e.g. \"My phone\" (required)")
	fs.StringVar(&expires, "expires", "", "when it stops working: an RFC 3339 time, or a duration from now such as 720h")
	fs.StringVar(&idle, "idle-expiry", "", "revoke it when unused this long, e.g. 720h")
	fs.Var(&ips, "allowed-ip", "an address or CIDR prefix logins must come from (repeatable)")
	u, _, asJSON, code, done := adminFlags(sys, c, fs, args, 0)
	if done {
		return code
	}
	if strings.TrimSpace(app) == "" || strings.TrimSpace(name) == "" {
		return usageError(sys, c, "--app and --name are required")
	}
	params := map[string]any{"user": u.param(), "appScope": app, "appName": name}
	if expires != "" {
		t, err := expiryTime(expires, time.Now())
		if err != nil {
			return usageError(sys, c, "--expires: %v", err)
		}
		params["expires"] = t
	}
	if idle != "" {
		if d, err := time.ParseDuration(idle); err != nil || d < time.Second {
			return usageError(sys, c, "--idle-expiry must be a duration of at least 1s such as 720h, got %q", idle)
		}
		params["idleExpiry"] = idle
	}
	if len(ips) > 0 {
		for _, ip := range ips {
			if _, err := netip.ParsePrefix(ip); err != nil {
				if _, err := netip.ParseAddr(ip); err != nil {
					return usageError(sys, c, "--allowed-ip %q is neither an address nor a CIDR prefix", ip)
				}
			}
		}
		params["allowedIPs"] = []string(ips)
	}
	s, code, ok := adminSidecar(sys, c)
	if !ok {
		return code
	}
	return result(sys, c, s, "appPasswords.add", params, asJSON, func(raw json.RawMessage) error {
		var p struct {
			listed
			Login    string `json:"login"`
			Password string `json:"password"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		table(sys.stdout, []string{"PASSWORD", "UUID", "LOGIN", "APP", "NAME", "LIMITS"},
			[][]string{{p.Password, p.UUID, p.Login, p.AppScope, p.Name, limits(p.Expires, p.IdleExpiry, p.AllowedIPs)}})
		fmt.Fprintln(sys.stdout, "The password is shown only this once.")
		return nil
	})
}

// expiryTime reads --expires: an RFC 3339 time as is, or a duration from
// now, in UTC.
func expiryTime(v string, now time.Time) (string, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC().Format(time.RFC3339), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(d).UTC().Format(time.RFC3339), nil
	}
	return "", fmt.Errorf("want an RFC 3339 time (2027-01-31T00:00:00Z) or a positive duration (720h), got %q", v)
}

var removeCommand = &command{
	name:    "remove",
	args:    "<uuid> " + userFlagsSynopsis + " [--json]",
	summary: "revoke one of a user's app passwords (admin key)",
	help: `Revokes the app password with this uuid (appPasswords.remove), with reason
"admin". A uuid that is not the user's is "no such app password" (exit 1).
`,
	run: runRemove,
}

func runRemove(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	u, pos, asJSON, code, done := adminFlags(sys, c, fs, args, 1)
	if done {
		return code
	}
	uuid := strings.TrimSpace(pos[0])
	if uuid == "" {
		return usageError(sys, c, "the uuid is empty")
	}
	s, code, ok := adminSidecar(sys, c)
	if !ok {
		return code
	}
	return result(sys, c, s, "appPasswords.remove", map[string]any{"user": u.param(), "uuid": uuid}, asJSON, func(json.RawMessage) error {
		fmt.Fprintf(sys.stdout, "Removed %s.\n", uuid)
		return nil
	})
}

var removeAllCommand = &command{
	name:    "remove-all",
	args:    userFlagsSynopsis + " [--app APP] [--json]",
	summary: "revoke all of a user's app passwords, or one app's (admin key)",
	help: `Revokes all the user's app passwords, or with --app those of one app
(appPasswords.removeAll), and prints how many.
`,
	run: runRemoveAll,
}

func runRemoveAll(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	app := fs.String("app", "", "only this app's passwords (appScope)")
	u, _, asJSON, code, done := adminFlags(sys, c, fs, args, 0)
	if done {
		return code
	}
	params := map[string]any{"user": u.param()}
	if *app != "" {
		params["appScope"] = *app
	}
	s, code, ok := adminSidecar(sys, c)
	if !ok {
		return code
	}
	return result(sys, c, s, "appPasswords.removeAll", params, asJSON, func(raw json.RawMessage) error {
		var r struct {
			Removed *int `json:"removed"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if r.Removed == nil {
			return fmt.Errorf("no count")
		}
		fmt.Fprintf(sys.stdout, "Removed %d app password(s).\n", *r.Removed)
		return nil
	})
}

var appsCommand = &command{
	name:    "apps",
	args:    "[--json]",
	summary: "list the app catalogue (admin key)",
	help: `Lists the apps passwords can be added for (appPasswords.getApps): the name
to pass as add --app, what users see, and the protocols each may log in with.
`,
	run: runApps,
}

// rawResultUsage describes --json on the commands that print a table.
const rawResultUsage = "print the raw JSON-RPC result instead of a table"

// runAdminQuery runs a command that takes only --json: it calls method
// without params with the admin key and prints the result with render,
// or raw with --json.
func runAdminQuery(sys *system, c *command, args []string, method string, render func(raw json.RawMessage) error) int {
	asJSON, code, done := parseJSONFlag(sys, c, args, rawResultUsage)
	if done {
		return code
	}
	s, code, ok := adminSidecar(sys, c)
	if !ok {
		return code
	}
	return result(sys, c, s, method, nil, asJSON, render)
}

func runApps(sys *system, c *command, args []string) int {
	return runAdminQuery(sys, c, args, "appPasswords.getApps", func(raw json.RawMessage) error {
		var apps []struct {
			Name        string   `json:"name"`
			DisplayName string   `json:"displayName"`
			Protocols   []string `json:"protocols"`
			Scopes      []string `json:"scopes"`
		}
		if err := json.Unmarshal(raw, &apps); err != nil {
			return err
		}
		rows := make([][]string, 0, len(apps))
		for _, a := range apps {
			rows = append(rows, []string{a.Name, a.DisplayName, strings.Join(a.Protocols, ","), strings.Join(a.Scopes, ",")})
		}
		table(sys.stdout, []string{"NAME", "DISPLAY NAME", "PROTOCOLS", "SCOPES"}, rows)
		return nil
	})
}

var doveadmCommand = &command{
	name:    "doveadm",
	args:    "[--json]",
	summary: "show the Dovecots kicked on revocations (admin key)",
	help: `Shows every Dovecot of APPPASS_DOVEADM_URLS (doveadm.targets): whether its
last doveadm request succeeded, how many events it has not handled yet
(kicks waiting while it is down), its requests by outcome, and why its
last request failed while it is failing. Metrics: apppass_doveadm_up and
apppass_doveadm_pending_events.
`,
	run: runDoveadm,
}

func runDoveadm(sys *system, c *command, args []string) int {
	return runAdminQuery(sys, c, args, "doveadm.targets", func(raw json.RawMessage) error {
		var targets []struct {
			URL       string            `json:"url"`
			State     string            `json:"state"`
			LastError string            `json:"lastError"`
			Pending   int64             `json:"pending"`
			Requests  map[string]uint64 `json:"requests"`
		}
		if err := json.Unmarshal(raw, &targets); err != nil {
			return err
		}
		if len(targets) == 0 {
			fmt.Fprintln(sys.stdout, "No Dovecot configured (APPPASS_DOVEADM_URLS).")
			return nil
		}
		rows := make([][]string, 0, len(targets))
		for _, t := range targets {
			pending := "?"
			if t.Pending >= 0 {
				pending = strconv.FormatInt(t.Pending, 10)
			}
			rows = append(rows, []string{t.URL, t.State, pending, strconv.FormatUint(t.Requests["ok"], 10),
				strconv.FormatUint(t.Requests["unreachable"]+t.Requests["unauthorized"]+t.Requests["failed"], 10), t.LastError})
		}
		table(sys.stdout, []string{"DOVECOT", "STATE", "PENDING", "OK", "FAILED", "LAST ERROR"}, rows)
		return nil
	})
}
