package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/docs"
	"github.com/apppass/apppass/events"
)

const (
	// docURL is where the tests file the AsyncAPI document, so that its
	// "#/components/..." references resolve.
	docURL = "https://apppass.test/asyncapi.yaml"
	// asyncapiSchemaURL is the $id of the AsyncAPI 3.0.0 JSON Schema.
	asyncapiSchemaURL = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
)

// document is the AsyncAPI document as the validator wants it: YAML read
// into plain values, then through JSON, so numbers are json.Number.
func document(t testing.TB) map[string]any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(docs.AsyncAPI, &v); err != nil {
		t.Fatalf("docs/asyncapi.yaml is not YAML: %v", err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("docs/asyncapi.yaml is not JSON-compatible (keys must be strings): %v", err)
	}
	doc, ok := unmarshal(t, raw).(map[string]any)
	if !ok {
		t.Fatal("docs/asyncapi.yaml is not a mapping")
	}
	return doc
}

// unmarshal decodes JSON the way the validator wants it (numbers as json.Number).
func unmarshal(t testing.TB, raw []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, raw)
	}
	return v
}

// newCompiler returns a draft-07 compiler (AsyncAPI's Schema Object is a
// superset of draft-07, whose extra keywords only annotate) that knows the
// document at docURL and the AsyncAPI schema. Formats are asserted.
func newCompiler(t testing.TB, doc map[string]any) *jsonschema.Compiler {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	raw, err := os.ReadFile("testdata/asyncapi-3.0.0-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource(asyncapiSchemaURL, unmarshal(t, raw)); err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	return c
}

func compile(t testing.TB, c *jsonschema.Compiler, loc string) *jsonschema.Schema {
	t.Helper()
	s, err := c.Compile(loc)
	if err != nil {
		t.Fatalf("compiling %s: %v", loc, err)
	}
	return s
}

// lookup follows a local JSON pointer ("#/a/b") in doc.
func lookup(t testing.TB, doc any, ref string) any {
	t.Helper()
	if !strings.HasPrefix(ref, "#/") {
		t.Fatalf("reference %q is not local", ref)
	}
	v := doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[tok]; !ok {
				t.Fatalf("reference %q does not resolve (no %q)", ref, tok)
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				t.Fatalf("reference %q does not resolve (index %q)", ref, tok)
			}
			v = x[i]
		default:
			t.Fatalf("reference %q does not resolve", ref)
		}
	}
	return v
}

// resolve returns the pointer of what the object at ptr refers to
// (following Reference Objects), or ptr itself when it is none.
func resolve(t testing.TB, doc any, ptr string) string {
	t.Helper()
	for range 10 {
		m, ok := lookup(t, doc, ptr).(map[string]any)
		if !ok {
			return ptr
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return ptr
		}
		ptr = ref
	}
	t.Fatalf("reference loop at %s", ptr)
	return ""
}

func object(t testing.TB, doc any, ptr string) map[string]any {
	t.Helper()
	m, ok := lookup(t, doc, resolve(t, doc, ptr)).(map[string]any)
	if !ok {
		t.Fatalf("%s is not an object", ptr)
	}
	return m
}

func str(v any) string { s, _ := v.(string); return s }

// channel is one channel of the document with its compiled messages.
type channel struct {
	name    string
	address *regexp.Regexp // nil for an unknown (dynamic) address
	params  map[string]string
	// messages are the channel's messages, by the pointer of the message
	// object they resolve to.
	messages map[string]message
}

type message struct {
	ptr         string
	contentType string
	headers     *jsonschema.Schema // nil when the message documents none
	payload     *jsonschema.Schema
}

// channels compiles every channel's messages.
func channels(t testing.TB, doc map[string]any) map[string]*channel {
	t.Helper()
	c := newCompiler(t, doc)
	out := map[string]*channel{}
	for name := range object(t, doc, "#/channels") {
		ptr := "#/channels/" + name
		ch := &channel{name: name, params: map[string]string{}, messages: map[string]message{}}
		obj := object(t, doc, ptr)
		if addr, ok := obj["address"].(string); ok {
			ch.address = addressPattern(addr)
		}
		if params, ok := obj["parameters"].(map[string]any); ok {
			for p := range params {
				ch.params[p] = str(object(t, doc, ptr+"/parameters/"+p)["location"])
			}
		}
		for key := range object(t, doc, ptr+"/messages") {
			mptr := resolve(t, doc, ptr+"/messages/"+key)
			mobj := object(t, doc, mptr)
			m := message{ptr: mptr, contentType: str(mobj["contentType"]),
				payload: compile(t, c, docURL+resolve(t, doc, mptr+"/payload"))}
			if m.contentType == "" {
				m.contentType = str(doc["defaultContentType"])
			}
			if _, ok := mobj["headers"]; ok {
				m.headers = compile(t, c, docURL+resolve(t, doc, mptr+"/headers"))
			}
			ch.messages[mptr] = m
		}
		out[name] = ch
	}
	return out
}

// addressPattern matches the subjects of a channel address such as
// apppasswords.created.{contextId}.{userId}, a parameter being one token.
func addressPattern(addr string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	rest := addr
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(rest[open:], '}') + open
		b.WriteString(regexp.QuoteMeta(rest[:open]))
		fmt.Fprintf(&b, "(?P<%s>[^.]+)", rest[open+1:end])
		rest = rest[end+1:]
	}
	b.WriteString(regexp.QuoteMeta(rest) + "$")
	return regexp.MustCompile(b.String())
}

// TestAsyncAPIDocument checks docs/asyncapi.yaml on its own: a valid
// AsyncAPI 3.0.0 document whose references resolve, whose examples are
// valid messages, and which names what the code names: every event type,
// revocation reason and event field, the subjects, the stream and the
// default NATS address.
func TestAsyncAPIDocument(t *testing.T) {
	doc := document(t)
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi is %v, want 3.0.0", doc["asyncapi"])
	}
	c := newCompiler(t, doc)
	if err := compile(t, c, asyncapiSchemaURL).Validate(doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml is not a valid AsyncAPI 3.0.0 document: %v", err)
	}

	// The schema checks a reference's form, not its target.
	var refs func(ptr string, v any)
	refs = func(ptr string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				lookup(t, doc, ref)
			}
			for k, v := range x {
				refs(ptr+"/"+k, v)
			}
		case []any:
			for i, v := range x {
				refs(ptr+"/"+strconv.Itoa(i), v)
			}
		}
	}
	refs("#", doc)

	chans := channels(t, doc)
	for name, ch := range chans {
		addr := str(object(t, doc, "#/channels/"+name)["address"])
		var inAddress []string
		for _, m := range regexp.MustCompile(`\{([^}]*)\}`).FindAllStringSubmatch(addr, -1) {
			inAddress = append(inAddress, m[1])
		}
		if declared := slices.Sorted(maps.Keys(ch.params)); !slices.Equal(slices.Sorted(slices.Values(inAddress)), declared) {
			t.Errorf("channel %s: address %q has parameters %v, the channel declares %v", name, addr, inAddress, declared)
		}
		if len(ch.messages) == 0 {
			t.Errorf("channel %s has no messages", name)
		}
	}
	// An operation's messages are its channel's.
	for name := range object(t, doc, "#/operations") {
		op := object(t, doc, "#/operations/"+name)
		chRef := str(op["channel"].(map[string]any)["$ref"])
		msgs, _ := op["messages"].([]any)
		if len(msgs) == 0 {
			t.Errorf("operation %s lists no messages", name)
		}
		for _, m := range msgs {
			if ref := str(m.(map[string]any)["$ref"]); !strings.HasPrefix(ref, chRef+"/messages/") {
				t.Errorf("operation %s: message %s is not one of its channel %s", name, ref, chRef)
			}
		}
	}
	// Every channel has an operation: each is something apppassd sends.
	for name := range chans {
		found := false
		for op := range object(t, doc, "#/operations") {
			found = found || str(object(t, doc, "#/operations/"+op)["channel"].(map[string]any)["$ref"]) == "#/channels/"+name
		}
		if !found {
			t.Errorf("channel %s has no operation", name)
		}
	}

	// Examples are valid messages of their own.
	for name, ch := range chans {
		for _, m := range ch.messages {
			examples, _ := object(t, doc, m.ptr)["examples"].([]any)
			for i, ex := range examples {
				ex := ex.(map[string]any)
				if err := m.payload.Validate(ex["payload"]); err != nil {
					t.Errorf("channel %s: %s example %d: payload: %v", name, m.ptr, i, err)
				}
				if h, ok := ex["headers"]; ok && m.headers != nil {
					if err := m.headers.Validate(h); err != nil {
						t.Errorf("channel %s: %s example %d: headers: %v", name, m.ptr, i, err)
					}
				}
			}
		}
	}

	// The event types and reasons the root package declares are the
	// documented ones, so a new one fails here until it is described.
	declared := rootConstants(t)
	var types []string
	for _, m := range []string{"created", "firstUse", "newIP", "revoked"} {
		msg := object(t, doc, "#/components/messages/"+m)
		typ := object(t, doc, resolve(t, doc, "#/components/messages/"+m+"/payload")+"/properties/type")
		if msg["name"] != typ["const"] {
			t.Errorf("message %s is named %v, but its type is %v", m, msg["name"], typ["const"])
		}
		types = append(types, str(typ["const"]))
	}
	if want := declared["Event"]; !slices.Equal(slices.Sorted(slices.Values(types)), want) {
		t.Errorf("the document's event types are %v; the root package declares %v", slices.Sorted(slices.Values(types)), want)
	}
	var reasons []string
	for _, r := range object(t, doc, "#/components/schemas/reason")["enum"].([]any) {
		reasons = append(reasons, r.(string))
	}
	if want := declared["Reason"]; !slices.Equal(slices.Sorted(slices.Values(reasons)), want) {
		t.Errorf("the document's reasons are %v; the root package declares %v", slices.Sorted(slices.Values(reasons)), want)
	}

	// Every JSON field of apppass.Event and EventData is documented, and
	// nothing else is (the real-events test sees only the fields a run
	// happens to fill).
	eventFields := jsonFields(reflect.TypeFor[apppass.Event]())
	dataFields := jsonFields(reflect.TypeFor[apppass.EventData]())
	documented := map[string]bool{}
	for _, s := range []string{"createdEvent", "firstUseEvent", "newIPEvent", "revokedEvent"} {
		ptr := "#/components/schemas/" + s
		if got := slices.Sorted(maps.Keys(object(t, doc, ptr+"/properties"))); !slices.Equal(got, eventFields) {
			t.Errorf("%s has properties %v; apppass.Event has %v", s, got, eventFields)
		}
		data := resolve(t, doc, ptr+"/properties/data")
		if all, ok := object(t, doc, data)["allOf"].([]any); ok {
			data = str(all[0].(map[string]any)["$ref"])
		}
		for p := range object(t, doc, data+"/properties") {
			documented[p] = true
		}
	}
	if got := slices.Sorted(maps.Keys(documented)); !slices.Equal(got, dataFields) {
		t.Errorf("the event data schemas have properties %v; apppass.EventData has %v", got, dataFields)
	}

	// Subjects, stream and server are the code's.
	for name, want := range map[string]string{
		"created":       apppass.Event{Type: apppass.EventCreated, Data: apppass.EventData{ContextID: 7, UserID: 9}}.Subject(),
		"used":          apppass.Event{Type: apppass.EventFirstUse, Data: apppass.EventData{ContextID: 7, UserID: 9}}.Subject(),
		"revoked":       apppass.Event{Type: apppass.EventRevoked, Data: apppass.EventData{ContextID: 7, UserID: 9}}.Subject(),
		"cacheEviction": events.EvictSubject,
	} {
		if ch := chans[name]; ch == nil || ch.address == nil || !ch.address.MatchString(want) {
			t.Errorf("channel %s does not match the subject %s", name, want)
		}
	}
	stream := object(t, doc, "#/servers/nats")["x-jetstream-stream"].(map[string]any)
	if stream["name"] != events.StreamName || !slices.Equal(stream["subjects"].([]any), []any{events.StreamSubjects}) {
		t.Errorf("x-jetstream-stream is %v; the stream is %s on %s", stream, events.StreamName, events.StreamSubjects)
	}
	for name := range chans {
		onStream := object(t, doc, "#/channels/"+name)["x-jetstream-stream"]
		if onStream != nil && onStream != events.StreamName {
			t.Errorf("channel %s: x-jetstream-stream %v, want %s", name, onStream, events.StreamName)
		}
	}
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	nats := object(t, doc, "#/servers/nats")
	vars := nats["variables"].(map[string]any)
	host := strings.NewReplacer("{host}", str(vars["host"].(map[string]any)["default"]),
		"{port}", str(vars["port"].(map[string]any)["default"])).Replace(str(nats["host"]))
	if host != cfg.EmbeddedNATSListen {
		t.Errorf("servers.nats is %s by default; the embedded server listens on %s", host, cfg.EmbeddedNATSListen)
	}
	if got := stream["maxAgeSeconds"].(json.Number).String(); got != strconv.Itoa(int(cfg.StreamMaxAge.Seconds())) {
		t.Errorf("x-jetstream-stream.maxAgeSeconds is %s; APPPASS_STREAM_MAX_AGE defaults to %s", got, cfg.StreamMaxAge)
	}
}

// rootConstants returns the string constants of the root package by
// prefix: event types (Event…, "apppassword.…") and reasons (Reason…), sorted.
func rootConstants(t testing.TB) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					switch {
					case strings.HasPrefix(n.Name, "Event") && strings.HasPrefix(v, "apppassword."):
						out["Event"] = append(out["Event"], v)
					case strings.HasPrefix(n.Name, "Reason"):
						out["Reason"] = append(out["Reason"], v)
					}
				}
			}
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	if len(out["Event"]) < 4 || len(out["Reason"]) < 7 {
		t.Fatalf("found too few constants in the root package: %v", out)
	}
	return out
}

// jsonFields are the JSON names of a struct's fields, sorted.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
