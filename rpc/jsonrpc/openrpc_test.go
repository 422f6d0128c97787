package jsonrpc_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/schematest"
	"github.com/apppass/apppass/rpc/errcode"
	. "github.com/apppass/apppass/rpc/internal/rpctest"
	"github.com/apppass/apppass/rpc/jsonrpc"
	"github.com/apppass/apppass/stdwebhook"
)

const (
	// docURL is where the tests file the OpenRPC document, so that its
	// "#/components/..." references resolve.
	docURL = "https://apppass.test/openrpc.json"
	// openrpcMetaURL is the $id of the OpenRPC meta-schema (and what the
	// document's rpc.discover result refers to).
	openrpcMetaURL = "https://meta.open-rpc.org/"
	// jsonSchemaMetaURL is the $id of the JSON Schema meta-schema the
	// OpenRPC meta-schema refers to for every schema in a document.
	jsonSchemaMetaURL = "https://meta.json-schema.tools/"
)

// openrpcDoc is the OpenRPC document, parsed for looking things up.
type openrpcDoc struct {
	Methods []struct {
		Name           string            `json:"name"`
		ParamStructure string            `json:"paramStructure"`
		Params         []json.RawMessage `json:"params"`
		Errors         []json.RawMessage `json:"errors"`
		Callers        []string          `json:"x-callers"`
	} `json:"methods"`
	Components struct {
		Errors map[string]struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"components"`
}

func parseDoc(t testing.TB, raw []byte) openrpcDoc {
	t.Helper()
	var d openrpcDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("the OpenRPC document is not JSON: %v", err)
	}
	return d
}

// metaSchemas loads the vendored meta-schemas (see testdata/openrpc-meta-schemas.md).
// Both name https://meta.json-schema.tools/ as their "$schema", a dialect
// that is its own meta-schema and that the validator cannot resolve; its
// keywords are those of JSON Schema draft-07, which OpenRPC prescribes, so
// they are compiled as draft-07.
func metaSchemas(t testing.TB) map[string]any {
	t.Helper()
	out := map[string]any{}
	for u, file := range map[string]string{
		openrpcMetaURL:    "testdata/openrpc-meta-schema.json",
		jsonSchemaMetaURL: "testdata/json-schema-tools-meta-schema.json",
	} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		doc := schematest.Unmarshal(t, raw).(map[string]any)
		if doc["$schema"] != jsonSchemaMetaURL {
			t.Fatalf("%s: $schema %v, want %s", file, doc["$schema"], jsonSchemaMetaURL)
		}
		doc["$schema"] = "http://json-schema.org/draft-07/schema#"
		out[u] = doc
	}
	return out
}

// newCompiler returns a draft-07 compiler that knows the meta-schemas and
// the document (at docURL). Formats are asserted (as always for draft-07).
//
// With lenientURI, format "uri" accepts relative references too. The
// OpenRPC meta-schema gives servers[].url format "uri", but the
// specification says that URL "MAY be relative, to indicate that the host
// location is relative to the location where the OpenRPC document is being
// served", which is what "/rpc" means. Only checks against the meta-schema
// use this; the document's own schemas keep the strict "uri".
func newCompiler(t testing.TB, doc []byte, lenientURI bool) *jsonschema.Compiler {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if lenientURI {
		c.RegisterFormat(&jsonschema.Format{Name: "uri", Validate: func(v any) error {
			s, ok := v.(string)
			if !ok {
				return nil
			}
			if strings.Contains(s, `\`) {
				return fmt.Errorf(`contains \`)
			}
			_, err := url.Parse(s)
			return err
		}})
	}
	metas := metaSchemas(t)
	// The OpenRPC meta-schema refers to the JSON Schema one both with and
	// without the trailing slash.
	metas[strings.TrimSuffix(jsonSchemaMetaURL, "/")] = metas[jsonSchemaMetaURL]
	for u, d := range metas {
		if err := c.AddResource(u, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddResource(docURL, schematest.Unmarshal(t, doc)); err != nil {
		t.Fatal(err)
	}
	return c
}

// resolve returns the pointer of what a Reference Object at ptr refers to,
// or ptr itself when it is none.
func resolve(t testing.TB, doc any, ptr string) string {
	t.Helper()
	if m, ok := schematest.Lookup(t, doc, ptr).(map[string]any); ok {
		if ref, ok := m["$ref"].(string); ok {
			return ref
		}
	}
	return ptr
}

// methodSchemas are one method's compiled param and result schemas.
type methodSchemas struct {
	name     string
	params   map[string]*jsonschema.Schema
	required []string
	result   *jsonschema.Schema
	codes    []int64 // documented error codes
}

// compileMethods compiles every method's param and result schemas.
func compileMethods(t testing.TB, raw []byte) map[string]*methodSchemas {
	t.Helper()
	c := newCompiler(t, raw, false)
	// rpc.discover's result is an OpenRPC document: the meta-schema's rules.
	meta := newCompiler(t, raw, true)
	doc := schematest.Unmarshal(t, raw)
	d := parseDoc(t, raw)
	out := map[string]*methodSchemas{}
	for i, m := range d.Methods {
		ms := &methodSchemas{name: m.Name, params: map[string]*jsonschema.Schema{}}
		for j := range m.Params {
			ptr := resolve(t, doc, fmt.Sprintf("#/methods/%d/params/%d", i, j))
			cd := schematest.Lookup(t, doc, ptr).(map[string]any)
			name := cd["name"].(string)
			ms.params[name] = schematest.Compile(t, c, docURL+ptr+"/schema")
			if cd["required"] == true {
				ms.required = append(ms.required, name)
			}
		}
		rc := c
		if m.Name == "rpc.discover" {
			rc = meta
		}
		ms.result = schematest.Compile(t, rc, docURL+resolve(t, doc, fmt.Sprintf("#/methods/%d/result", i))+"/schema")
		for j := range m.Errors {
			e := schematest.Lookup(t, doc, resolve(t, doc, fmt.Sprintf("#/methods/%d/errors/%d", i, j))).(map[string]any)
			code, err := e["code"].(json.Number).Int64()
			if err != nil {
				t.Fatalf("%s: error code %v", m.Name, e["code"])
			}
			ms.codes = append(ms.codes, code)
		}
		out[m.Name] = ms
	}
	return out
}

// checkParams validates params (as sent, "" for none) against the method's
// by-name params: an object (or nothing) of documented names only, each
// valid against its schema, the required ones present.
func (ms *methodSchemas) checkParams(t testing.TB, params string) error {
	t.Helper()
	p := strings.TrimSpace(params)
	if p == "" || p == "null" || p == "[]" {
		p = "{}"
	}
	obj, ok := schematest.Unmarshal(t, []byte(p)).(map[string]any)
	if !ok {
		return fmt.Errorf("params are not an object of named params")
	}
	for name, v := range obj {
		s := ms.params[name]
		if s == nil {
			return fmt.Errorf("%s is not a documented param", name)
		}
		if err := s.Validate(v); err != nil {
			return fmt.Errorf("param %s: %#v", name, err)
		}
	}
	for _, name := range ms.required {
		if _, ok := obj[name]; !ok {
			return fmt.Errorf("required param %s is missing", name)
		}
	}
	return nil
}

// TestOpenRPCDocumentIsValid checks the document against the OpenRPC
// meta-schema and the rules of the specification that the meta-schema does
// not express.
func TestOpenRPCDocumentIsValid(t *testing.T) {
	raw := jsonrpc.OpenRPCDocument
	meta := schematest.Compile(t, newCompiler(t, raw, true), openrpcMetaURL)
	if err := meta.Validate(schematest.Unmarshal(t, raw)); err != nil {
		t.Fatalf("the document is not valid OpenRPC: %#v", err)
	}
	// The validator can fail: a broken copy is refused.
	for what, change := range map[string]func(map[string]any){
		"unknown spec version": func(d map[string]any) { d["openrpc"] = "9.9.9" },
		"method without name":  func(d map[string]any) { delete(d["methods"].([]any)[0].(map[string]any), "name") },
		"param with no schema": func(d map[string]any) {
			delete(d["methods"].([]any)[1].(map[string]any)["params"].([]any)[0].(map[string]any), "schema")
		},
		"schema of a wrong type": func(d map[string]any) {
			d["components"].(map[string]any)["schemas"].(map[string]any)["UUID"].(map[string]any)["type"] = "uuid"
		},
	} {
		broken := schematest.Unmarshal(t, raw).(map[string]any)
		change(broken)
		if meta.Validate(broken) == nil {
			t.Errorf("the meta-schema accepts a document with %s", what)
		}
	}

	doc := schematest.Unmarshal(t, raw)
	d := parseDoc(t, raw)
	if d.Methods[0].Name == "" {
		t.Fatal("no methods")
	}
	seen := map[string]bool{}
	for i, m := range d.Methods {
		if seen[m.Name] {
			t.Errorf("method %s is listed twice", m.Name)
		}
		seen[m.Name] = true
		if m.ParamStructure != "by-name" {
			t.Errorf("%s: paramStructure %q, want by-name (the server takes named params only)", m.Name, m.ParamStructure)
		}
		names, optional := map[string]bool{}, false
		for j := range m.Params {
			cd := schematest.Lookup(t, doc, resolve(t, doc, fmt.Sprintf("#/methods/%d/params/%d", i, j))).(map[string]any)
			name := cd["name"].(string)
			if names[name] {
				t.Errorf("%s: param %s is listed twice", m.Name, name)
			}
			names[name] = true
			if cd["required"] == true && optional {
				t.Errorf("%s: required param %s follows an optional one", m.Name, name)
			}
			optional = optional || cd["required"] != true
		}
		codes := map[int64]bool{}
		for j := range m.Errors {
			e := schematest.Lookup(t, doc, resolve(t, doc, fmt.Sprintf("#/methods/%d/errors/%d", i, j))).(map[string]any)
			code, _ := e["code"].(json.Number).Int64()
			if codes[code] {
				t.Errorf("%s: error %d is listed twice", m.Name, code)
			}
			codes[code] = true
		}
	}
	// Every local reference resolves, and component names have the
	// specification's shape.
	for _, ref := range regexp.MustCompile(`"\$ref":\s*"(#[^"]*)"`).FindAllSubmatch(raw, -1) {
		schematest.Lookup(t, doc, string(ref[1]))
	}
	keyRE := regexp.MustCompile(`^[a-zA-Z0-9.\-_]+$`)
	for kind, entries := range doc.(map[string]any)["components"].(map[string]any) {
		for key := range entries.(map[string]any) {
			if !keyRE.MatchString(key) {
				t.Errorf("components.%s key %q", kind, key)
			}
		}
	}
	// Every schema compiles (draft-07, formats known).
	compileMethods(t, raw)
}

// errorCodes are errors.go's codes by constant name.
var errorCodes = map[string]int64{
	"ParseError":      errcode.ParseError,
	"InvalidRequest":  errcode.InvalidRequest,
	"MethodNotFound":  errcode.MethodNotFound,
	"InvalidParams":   errcode.InvalidParams,
	"Internal":        errcode.Internal,
	"Unauthenticated": errcode.Unauthenticated,
	"Forbidden":       errcode.Forbidden,
	"NotFound":        errcode.NotFound,
	"Rejected":        errcode.Rejected,
	"Limit":           errcode.Limit,
	"Unavailable":     errcode.Unavailable,
}

// TestOpenRPCDocumentsEveryMethod: the document lists exactly the method
// table, and exactly the error codes of rpc/errcode.
func TestOpenRPCDocumentsEveryMethod(t *testing.T) {
	d := parseDoc(t, jsonrpc.OpenRPCDocument)
	var documented []string
	for _, m := range d.Methods {
		documented = append(documented, m.Name)
	}
	slices.Sort(documented)
	if table := jsonrpc.MethodNames(); !slices.Equal(documented, table) {
		t.Fatalf("documented methods %v, method table %v", documented, table)
	}

	// errorCodes must name every constant of rpc/errcode, so a new code
	// there fails this test until it is documented.
	f, err := parser.ParseFile(token.NewFileSet(), "../errcode/errcode.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, decl := range f.Decls {
		if g, ok := decl.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, spec := range g.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					declared = append(declared, n.Name)
				}
			}
		}
	}
	var known []string
	for name := range errorCodes {
		known = append(known, name)
	}
	slices.Sort(declared)
	slices.Sort(known)
	if !slices.Equal(declared, known) {
		t.Fatalf("rpc/errcode declares %v; this test knows %v", declared, known)
	}
	var table, components []int64
	for _, code := range errorCodes {
		table = append(table, code)
	}
	for _, e := range d.Components.Errors {
		components = append(components, e.Code)
	}
	slices.Sort(table)
	slices.Sort(components)
	if !slices.Equal(table, components) {
		t.Fatalf("components.errors has codes %v, errors.go %v", components, table)
	}
	for name, ms := range compileMethods(t, jsonrpc.OpenRPCDocument) {
		if len(ms.codes) == 0 {
			t.Errorf("%s documents no errors", name)
		}
		for _, code := range ms.codes {
			if !slices.Contains(table, code) {
				t.Errorf("%s documents error %d, which errors.go does not have", name, code)
			}
		}
	}
}

// documentedCalls makes calls over the real server and checks each answer
// against the document.
type documentedCalls struct {
	f       *EventFixture
	methods map[string]*methodSchemas
	results map[string]int // validated results per method
}

// call makes one call. A result must be valid against the method's result
// schema and the params that produced it valid against its param schemas;
// an error's code must be one the method documents.
func (dc *documentedCalls) Call(t *testing.T, bearer, method, params string) Response {
	t.Helper()
	ms := dc.methods[method]
	if ms == nil {
		t.Fatalf("%s is not documented", method)
	}
	r := dc.f.Call(t, bearer, method, params)
	if r.Error != nil {
		if !slices.Contains(ms.codes, r.Error.Code) {
			t.Fatalf("%s(%s) answered error %d (%s), which it does not document (%v)", method, params, r.Error.Code, r.Error.Message, ms.codes)
		}
		return r
	}
	if err := ms.checkParams(t, params); err != nil {
		t.Fatalf("%s(%s) succeeded with params the document refuses: %v", method, params, err)
	}
	if err := ms.result.Validate(schematest.Unmarshal(t, r.Result)); err != nil {
		t.Fatalf("%s(%s): the result does not match the document: %#v\n%s", method, params, err, r.Result)
	}
	dc.results[method]++
	return r
}

// TestOpenRPCRealResponses drives a real server through every method and
// validates each answer against the document.
func TestOpenRPCRealResponses(t *testing.T) {
	secret := stdwebhook.GenerateSecret()
	status := func(code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(code)
		}))
		t.Cleanup(s.Close)
		return s
	}
	okRecv, goneRecv, brokenRecv := status(http.StatusOK), status(http.StatusGone), status(http.StatusInternalServerError)
	f := NewEventFixture(t, EventFixtureOptions{Webhooks: &webhook.Config{
		Endpoints: []apppass.WebhookEndpoint{
			{Name: "crm", URL: okRecv.URL + "/in", Secret: secret, AllowPrivate: true},
			{Name: "gone", URL: goneRecv.URL + "/in", Secret: secret, AllowPrivate: true, Events: []string{apppass.EventCreated}},
			{Name: "broken", URL: brokenRecv.URL + "/in", Secret: secret, AllowPrivate: true, Events: []string{apppass.EventCreated, apppass.EventRevoked}},
			// Loopback is refused for this one: attempts fail with no status.
			{Name: "guarded", URL: okRecv.URL + "/in", Secret: secret, Events: []string{"*"}},
		},
		RetryBase: 20 * time.Millisecond, RetryMaxDelay: 50 * time.Millisecond, RetryFor: 300 * time.Millisecond,
	}})
	dc := &documentedCalls{f: f, methods: compileMethods(t, jsonrpc.OpenRPCDocument), results: map[string]int{}}
	user, viaApp := f.Token(Alice), f.Token(Alice, "app_password")
	adminFor := func(u apppass.User) string { return `"user":` + Params(t, u) }

	// rpc.discover, for every kind of caller, is the document GET
	// /openrpc.json serves without a token.
	for _, bearer := range []string{user, viaApp, GatewaySecret, AdminSecret} {
		got := OK(t, dc.Call(t, bearer, "rpc.discover", ""))
		if !jsonEqual(t, got, jsonrpc.OpenRPCDocument) {
			t.Fatalf("rpc.discover answered another document: %s", got)
		}
	}
	OK(t, dc.Call(t, user, "rpc.discover", "{}"))
	ws := f.DialWS(t, GatewaySecret)
	if got := OK(t, ws.Call(t, "rpc.discover", "")); !jsonEqual(t, got, jsonrpc.OpenRPCDocument) {
		t.Fatalf("rpc.discover over WebSocket answered another document: %s", got)
	}
	WantInvalid(t, dc.Call(t, user, "rpc.discover", `{"x":1}`), "x")
	WantInvalid(t, dc.Call(t, user, "rpc.discover", `["x"]`), "params")
	// No token; any page may read it (the OpenRPC playground is one).
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/openrpc.json", nil)
	req.Header.Set("Origin", "https://playground.open-rpc.org")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || !bytes.Equal(served, jsonrpc.OpenRPCDocument) {
		t.Fatalf("GET /openrpc.json: %d %v, %d bytes", resp.StatusCode, resp.Header, len(served))
	}
	if resp, err := http.Post(f.URL+"/openrpc.json", "application/json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /openrpc.json: %d", resp.StatusCode)
	}

	// Who may call what is what x-callers says: a caller that may not gets
	// -32003 before its params are looked at.
	d := parseDoc(t, jsonrpc.OpenRPCDocument)
	callers := map[string]string{"user": user, "appPasswordSession": viaApp, "gateway": GatewaySecret, "admin": AdminSecret}
	for _, m := range d.Methods {
		for role, bearer := range callers {
			r := dc.Call(t, bearer, m.Name, "{}")
			forbidden := r.Error != nil && r.Error.Code == errcode.Forbidden
			if forbidden == slices.Contains(m.Callers, role) {
				t.Errorf("%s as %s: forbidden %v, but x-callers is %v", m.Name, role, forbidden, m.Callers)
			}
		}
	}

	// whoami: the token's user, or the key's role and name.
	for bearer, want := range map[string]string{
		user:          `{"role":"user","login":"` + Alice.Login + `","contextId":` + strconv.FormatInt(Alice.ContextID, 10) + `,"userId":` + strconv.FormatInt(Alice.UserID, 10) + `,"viaAppPassword":false}`,
		viaApp:        `{"role":"user","login":"` + Alice.Login + `","contextId":` + strconv.FormatInt(Alice.ContextID, 10) + `,"userId":` + strconv.FormatInt(Alice.UserID, 10) + `,"viaAppPassword":true}`,
		GatewaySecret: `{"role":"gateway","name":"gw"}`,
		AdminSecret:   `{"role":"admin","name":"adm"}`,
	} {
		if got := string(OK(t, dc.Call(t, bearer, "appPasswords.whoami", ""))); got != want {
			t.Errorf("whoami: %s, want %s", got, want)
		}
	}
	WantInvalid(t, dc.Call(t, user, "appPasswords.whoami", `{"user":{"contextId":1}}`), "user")

	OK(t, dc.Call(t, user, "appPasswords.getApps", ""))
	OK(t, dc.Call(t, viaApp, "appPasswords.getApps", "[]"))
	if got := string(OK(t, dc.Call(t, user, "appPasswords.list", ""))); got != "[]" {
		t.Fatalf("list before any add: %s", got)
	}
	plain := Decode[Created](t, OK(t, dc.Call(t, user, "appPasswords.add", `{"appScope":"mail","appName":"  My phone  "}`)))
	expires := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	limited := Decode[Created](t, OK(t, dc.Call(t, user, "appPasswords.add", Params(t, map[string]any{
		"appScope": "caldav", "appName": "Laptop calendar", "expires": expires, "idleExpiry": "720h",
		"allowedIPs": []string{"192.0.2.0/24", "2001:db8::1", "::ffff:198.51.100.7"},
	}))))
	if limited.IdleExpiry == nil || limited.Expires == nil || len(limited.AllowedIPs) != 3 || plain.Expires != nil {
		t.Fatalf("limits not shown: %+v / %+v", limited, plain)
	}
	OK(t, dc.Call(t, user, "appPasswords.add", `{"appScope":"webdav","appName":"x","expires":null,"idleExpiry":null,"allowedIPs":null}`))
	OK(t, dc.Call(t, AdminSecret, "appPasswords.add", `{"appScope":"eas","appName":"Bob's phone",`+adminFor(Bob)+`}`))

	OK(t, dc.Call(t, GatewaySecret, "appPasswords.authenticate", Params(t, map[string]string{
		"login": Alice.Login, "password": limited.Password, "protocol": "caldav",
		"ip": "192.0.2.7", "device": "laptop", "userAgent": "DAVx5/4.4",
	})))
	OK(t, dc.Call(t, AdminSecret, "appPasswords.authenticate", Params(t, map[string]string{
		"login": strings.ToUpper(Alice.Login), "password": strings.ToUpper(strings.ReplaceAll(plain.Password, "-", "")), "protocol": "imap",
	})))
	WantError(t, dc.Call(t, GatewaySecret, "appPasswords.authenticate", Params(t, map[string]string{
		"login": Alice.Login, "password": limited.Password, "protocol": "caldav", "ip": "203.0.113.1",
	})), errcode.Rejected)

	rows := Decode[[]Listed](t, OK(t, dc.Call(t, user, "appPasswords.list", "")))
	used := 0
	for _, row := range rows {
		if row.LastLogin != nil {
			used++
		}
	}
	if len(rows) != 3 || used != 2 {
		t.Fatalf("list: %d rows, %d used, want 3 and 2", len(rows), used)
	}
	OK(t, dc.Call(t, AdminSecret, "appPasswords.list", `{`+adminFor(Bob)+`}`))

	OK(t, dc.Call(t, user, "appPasswords.remove", `{"uuid":"`+strings.ToUpper(plain.UUID)+`"}`))
	WantError(t, dc.Call(t, user, "appPasswords.remove", `{"uuid":"`+plain.UUID+`"}`), errcode.NotFound)
	OK(t, dc.Call(t, user, "appPasswords.removeAll", `{"appScope":"webdav"}`))
	OK(t, dc.Call(t, user, "appPasswords.removeAll", `{"appScope":null}`))
	OK(t, dc.Call(t, AdminSecret, "appPasswords.removeAll", `{`+adminFor(Bob)+`}`))

	// The webhooks: delivered, pending behind a 410 (which disables its
	// endpoint), and failed, with and without an HTTP status.
	deliveries := func(params string) []deliveryRow {
		return Decode[[]deliveryRow](t, OK(t, dc.Call(t, AdminSecret, "webhooks.deliveries", params)))
	}
	EvWait(t, "crm's deliveries delivered", func() bool { return len(deliveries(`{"endpoint":"crm","state":"delivered"}`)) >= 4 })
	EvWait(t, "broken's deliveries failed", func() bool { return len(deliveries(`{"endpoint":"broken","state":"failed"}`)) >= 1 })
	EvWait(t, "guarded's deliveries failed", func() bool { return len(deliveries(`{"endpoint":"guarded","state":"failed"}`)) >= 1 })
	EvWait(t, "gone disabled", func() bool {
		return strings.Contains(string(OK(t, dc.Call(t, AdminSecret, "webhooks.endpoints", ""))), `"state":"disabled"`)
	})
	EvWait(t, "gone's delivery pending", func() bool { return len(deliveries(`{"endpoint":"gone","state":"pending"}`)) >= 1 })
	all := deliveries(`{"limit":500}`)
	var withStatus, withError bool
	for _, del := range all {
		withStatus = withStatus || del.LastStatus != 0
		withError = withError || del.LastError != ""
	}
	if !withStatus || !withError {
		t.Fatalf("deliveries without a status or an error to check: %+v", all)
	}
	deliveries(`{"state":"","endpoint":"","limit":null}`)
	deliveries(`{"state":"pending","limit":1}`)
	if got := string(OK(t, dc.Call(t, AdminSecret, "webhooks.enable", `{"endpoint":"gone"}`))); got != `{"enabled":true,"wasDisabled":true}` {
		t.Fatalf("enable gone: %s", got)
	}
	OK(t, dc.Call(t, AdminSecret, "webhooks.enable", `{"endpoint":"crm"}`))

	for _, m := range d.Methods {
		if dc.results[m.Name] == 0 {
			t.Errorf("no result of %s was checked", m.Name)
		}
	}

	// The result schemas can fail: altered real results are refused.
	addResult := OK(t, f.Call(t, user, "appPasswords.add", `{"appScope":"mail","appName":"spare"}`))
	listResult := OK(t, f.Call(t, user, "appPasswords.list", ""))
	for what, c := range map[string]struct {
		method string
		raw    json.RawMessage
		change func(any) any
	}{
		"an extra member": {"appPasswords.add", addResult, func(v any) any {
			v.(map[string]any)["digest"] = "x"
			return v
		}},
		"a password of another shape": {"appPasswords.add", addResult, func(v any) any {
			v.(map[string]any)["password"] = "Secret-1"
			return v
		}},
		"a local time": {"appPasswords.add", addResult, func(v any) any {
			v.(map[string]any)["created"] = "2026-11-27T08:00:00+01:00"
			return v
		}},
		"a missing member": {"appPasswords.list", listResult, func(v any) any {
			delete(v.([]any)[0].(map[string]any), "lastLogin")
			return v
		}},
		"lastLogin of the wrong type": {"appPasswords.list", listResult, func(v any) any {
			v.([]any)[0].(map[string]any)["lastLogin"] = "yesterday"
			return v
		}},
		"not an array": {"appPasswords.list", listResult, func(v any) any { return v.([]any)[0] }},
		"a non-document": {"rpc.discover", jsonrpc.OpenRPCDocument, func(v any) any {
			delete(v.(map[string]any), "methods")
			return v
		}},
	} {
		if err := dc.methods[c.method].result.Validate(c.change(schematest.Unmarshal(t, c.raw))); err == nil {
			t.Errorf("%s result with %s passes its schema", c.method, what)
		}
	}
}

// TestOpenRPCParamSchemas: where the param schemas are meant to decide,
// they refuse exactly what the server refuses with -32602.
func TestOpenRPCParamSchemas(t *testing.T) {
	f := NewFixture(t, FixtureOptions{})
	ms := compileMethods(t, jsonrpc.OpenRPCDocument)
	user := f.Token(Alice)
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	add := func(extra string) string { return `{"appScope":"mail","appName":"p"` + extra + `}` }
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		bearer, method, params string
	}{
		{user, "appPasswords.getApps", ""},
		{user, "appPasswords.getApps", "{}"},
		{user, "appPasswords.getApps", `{"all":true}`},
		{user, "appPasswords.getApps", `["mail"]`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"  My phone  "}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"` + long(128) + `"}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"  ` + long(128) + `  "}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"` + long(129) + `"}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":""}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"   "}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"a\u0007b"}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":"Ünïcødé 📱"}`},
		{user, "appPasswords.add", `{"appScope":"mail"}`},
		{user, "appPasswords.add", `{"appScope":{"$ne":""},"appName":"p"}`},
		{user, "appPasswords.add", `{"appScope":"mail","appName":42}`},
		{user, "appPasswords.add", add(`,"colour":"blue"`)},
		{user, "appPasswords.add", add(`,"expires":"` + later + `"`)},
		{user, "appPasswords.add", add(`,"expires":"tomorrow"`)},
		{user, "appPasswords.add", add(`,"expires":1767225600`)},
		{user, "appPasswords.add", add(`,"idleExpiry":"90m"`)},
		{user, "appPasswords.add", add(`,"idleExpiry":"1h30m"`)},
		{user, "appPasswords.add", add(`,"idleExpiry":"forever"`)},
		{user, "appPasswords.add", add(`,"idleExpiry":3600`)},
		{user, "appPasswords.add", add(`,"allowedIPs":["10.0.0.0/8","2001:db8::/32","192.0.2.1"]`)},
		{user, "appPasswords.add", add(`,"allowedIPs":"10.0.0.0/8"`)},
		{user, "appPasswords.add", add(`,"allowedIPs":[10]`)},
		{user, "appPasswords.add", add(`,"allowedIPs":["anywhere"]`)},
		{user, "appPasswords.add", add(`,"allowedIPs":` + Params(t, slices.Repeat([]string{"192.0.2.1"}, 65)))},
		{user, "appPasswords.add", add(`,"user":` + Params(t, Alice))},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":1,"userId":5,"login":"alice@example.com"}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":1,"userId":5,"login":"alice@example.com","admin":true}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":1,"userId":5}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":-1,"userId":5,"login":"a"}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":1.5,"userId":5,"login":"a"}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":"1","userId":5,"login":"a"}}`},
		{AdminSecret, "appPasswords.list", `{"user":{"contextId":1,"userId":5,"login":"  "}}`},
		{AdminSecret, "appPasswords.list", `{"user":null}`},
		{user, "appPasswords.remove", `{"uuid":"0F0E0D0C-0B0A-4908-8706-050403020100"}`},
		{user, "appPasswords.remove", `{"uuid":"not-a-uuid"}`},
		{user, "appPasswords.remove", `{"uuid":123}`},
		{user, "appPasswords.remove", `{}`},
		{user, "appPasswords.removeAll", `{"appScope":"mail"}`},
		{user, "appPasswords.removeAll", `{"appScope":7}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"imap","ip":"192.0.2.1"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"imap","ip":""}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"imap","ip":"2001:db8::7"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"imap","ip":"example.com"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"imap","ip":null}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"ftp"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"eas","device":"` + long(256) + `"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"eas","device":"` + long(257) + `"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"` + long(257) + `","password":"x","protocol":"eas"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","password":"x","protocol":"eas","userAgent":"` + long(513) + `"}`},
		{GatewaySecret, "appPasswords.authenticate", `{"login":"a@example.com","protocol":"eas"}`},
		{AdminSecret, "webhooks.deliveries", `{"state":"failed","limit":500}`},
		{AdminSecret, "webhooks.deliveries", `{"state":"lost"}`},
		{AdminSecret, "webhooks.deliveries", `{"state":null}`},
		{AdminSecret, "webhooks.deliveries", `{"limit":0}`},
		{AdminSecret, "webhooks.deliveries", `{"limit":501}`},
		{AdminSecret, "webhooks.deliveries", `{"limit":2.5}`},
		{AdminSecret, "webhooks.deliveries", `{"limit":"10"}`},
		{AdminSecret, "webhooks.endpoints", `{"x":1}`},
		{AdminSecret, "webhooks.enable", `{}`},
		{AdminSecret, "webhooks.enable", `{"endpoint":["crm"]}`},
		{user, "rpc.discover", `{"x":1}`},
	}
	var refused int
	for _, c := range cases {
		r := f.Call(t, c.bearer, c.method, c.params)
		serverRefuses := r.Error != nil && r.Error.Code == errcode.InvalidParams
		schemaErr := ms[c.method].checkParams(t, c.params)
		if serverRefuses != (schemaErr != nil) {
			t.Errorf("%s(%s): server refuses: %v (%s); document: %v", c.method, c.params, serverRefuses, r.Raw, schemaErr)
		}
		if serverRefuses {
			refused++
		}
	}
	if refused == 0 || refused == len(cases) {
		t.Fatalf("%d of %d cases refused: the table checks nothing", refused, len(cases))
	}
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		t.Fatalf("not JSON: %.80s / %.80s", a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
