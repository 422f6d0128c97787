package docs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/docs"
	"github.com/apppass/apppass/events"
	"github.com/apppass/apppass/events/nats"
	"github.com/apppass/apppass/events/webhook"
	"github.com/apppass/apppass/internal/schematest"
	"github.com/apppass/apppass/internal/testenv"
	"github.com/apppass/apppass/stdwebhook"
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
	doc, ok := schematest.Unmarshal(t, raw).(map[string]any)
	if !ok {
		t.Fatal("docs/asyncapi.yaml is not a mapping")
	}
	return doc
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
	if err := c.AddResource(asyncapiSchemaURL, schematest.Unmarshal(t, raw)); err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	return c
}

// resolve returns the pointer of what the object at ptr refers to
// (following Reference Objects), or ptr itself when it is none.
func resolve(t testing.TB, doc any, ptr string) string {
	t.Helper()
	for range 10 {
		m, ok := schematest.Lookup(t, doc, ptr).(map[string]any)
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
	m, ok := schematest.Lookup(t, doc, resolve(t, doc, ptr)).(map[string]any)
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
				payload: schematest.Compile(t, c, docURL+resolve(t, doc, mptr+"/payload"))}
			if m.contentType == "" {
				m.contentType = str(doc["defaultContentType"])
			}
			if _, ok := mobj["headers"]; ok {
				m.headers = schematest.Compile(t, c, docURL+resolve(t, doc, mptr+"/headers"))
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
	if err := schematest.Compile(t, c, asyncapiSchemaURL).Validate(doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml is not a valid AsyncAPI 3.0.0 document: %v", err)
	}

	// The schema checks a reference's form, not its target.
	var refs func(ptr string, v any)
	refs = func(ptr string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				schematest.Lookup(t, doc, ref)
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
	server := object(t, doc, "#/servers/nats")
	vars := server["variables"].(map[string]any)
	host := strings.NewReplacer("{host}", str(vars["host"].(map[string]any)["default"]),
		"{port}", str(vars["port"].(map[string]any)["default"])).Replace(str(server["host"]))
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

// TestAsyncAPIEvents runs the real thing: a service on the SQLite store,
// its outbox relay publishing to an embedded nats-server, the revocation
// watcher and the webhook dispatcher, wired as apppassd wires them. It
// causes every kind of event and every revocation reason, takes
// everything apppassd sends under its subject prefixes and to a webhook
// endpoint, and checks each message against its channel's messages: its
// subject must match a channel's address (parameters included), its
// headers and payload exactly one message of that channel. Every message
// of the document must have been seen, so it cannot describe one that
// does not exist. The stream must be the one described.
func TestAsyncAPIEvents(t *testing.T) {
	doc := document(t)
	chans := channels(t, doc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	natsURL := testenv.NATS(t).URL()
	store := testenv.Store(t)
	pub, err := nats.Connect(natsURL, "asyncapi-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	pub.StreamMaxAge = cfg.StreamMaxAge
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}

	// Everything sent under the prefixes apppassd uses, not only the
	// documented subjects, so an undocumented subject shows up.
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	msgs := make(chan *natsgo.Msg, 1024)
	for _, subject := range []string{"apppasswords.>", "apppass.>"} {
		if _, err := nc.ChanSubscribe(subject, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	type delivery struct {
		header http.Header
		body   []byte
	}
	hooks := make(chan delivery, 1024)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooks <- delivery{r.Header.Clone(), body}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	secret := stdwebhook.GenerateSecret()
	wh, err := webhook.New(store, pub, webhook.Config{
		Endpoints:    []apppass.WebhookEndpoint{{Name: "receiver", URL: receiver.URL + "/hooks/apppass", Secret: secret, AllowPrivate: true}},
		PollInterval: 20 * time.Millisecond, Logger: testenv.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	relay := nats.NewRelay(store, pub, testenv.Quiet())
	runCtx, stop := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Go(func() { relay.Run(runCtx) })
	running.Go(func() { wh.Run(runCtx) })
	t.Cleanup(func() { stop(); running.Wait() })

	apps, err := apppass.NewCatalogue(apppass.BuiltinApps("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	digester, err := apppass.NewDigester([]byte(strings.Repeat("p", 32)))
	if err != nil {
		t.Fatal(err)
	}
	var clockOffset atomic.Int64
	svc := &apppass.Service{Store: store, Apps: apps, Digester: digester, Events: relay, MaxPerUser: 50,
		Cache: apppass.NewAuthCache(time.Minute),
		Now:   func() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }}
	watcher, err := nats.WatchRevocations(natsURL, svc.Cache)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watcher.Close)
	svc.Evictions = watcher

	// Every event there is, and every reason a revocation has.
	alice := apppass.User{ContextID: 1, UserID: 3, Login: "alice@example.com"}
	bob := apppass.User{ContextID: 2, UserID: 5, Login: "bob@example.org"}
	wantEvents, wantEvictions := 0, 0
	add := func(owner apppass.User, req apppass.AddRequest) *apppass.Created {
		t.Helper()
		req.AppScope, req.AppName = "mail", "My phone"
		c, err := svc.Add(ctx, owner, req)
		if err != nil {
			t.Fatalf("add: %v", err)
		}
		wantEvents++
		return c
	}
	revoked := func(n int, err error) {
		t.Helper()
		if err != nil || n != 1 {
			t.Fatalf("revoked %d, %v; want 1", n, err)
		}
		wantEvents++
		wantEvictions++
	}
	login := func(c *apppass.Created, ip string) {
		t.Helper()
		if _, err := svc.Authenticate(ctx, apppass.LoginAttempt{Login: c.Login, Password: c.Password, Protocol: "imap",
			IP: ip, Device: "iPhone", UserAgent: "Mail/17.0"}); err != nil {
			t.Fatalf("authenticate: %v", err)
		}
		wantEvents++
	}

	phone := add(alice, apppass.AddRequest{})
	login(phone, "192.0.2.1") // first use
	login(phone, "192.0.2.2") // from a new IP
	revoked(1, svc.Remove(ctx, alice, phone.UUID, apppass.ReasonUser))
	revoked(1, svc.Remove(ctx, alice, add(alice, apppass.AddRequest{}).UUID, apppass.ReasonAdmin))
	expires, idle := time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "1h"
	add(alice, apppass.AddRequest{Expires: &expires})
	add(alice, apppass.AddRequest{IdleExpiry: &idle})
	clockOffset.Store(int64(2 * time.Hour))
	n, err := svc.SweepExpired(ctx)
	if err != nil || n != 2 {
		t.Fatalf("swept %d, %v; want the expired and the idle one", n, err)
	}
	wantEvents, wantEvictions = wantEvents+2, wantEvictions+2
	add(alice, apppass.AddRequest{})
	revoked(svc.RemoveAll(ctx, alice, nil, apppass.ReasonUserDeleted))
	add(alice, apppass.AddRequest{})
	revoked(svc.RemoveAll(ctx, alice, nil, apppass.ReasonPasswordChanged))
	add(bob, apppass.AddRequest{})
	revoked(svc.RemoveContext(ctx, bob.ContextID, apppass.ReasonContextDeleted))

	seen := map[string]int{} // by message pointer
	published := map[string][]byte{}
	reasons, revokedUUIDs, evicted := map[string]bool{}, map[string]bool{}, []string{}
	var webhooks []delivery
	deadline := time.After(20 * time.Second)
	for len(published) < wantEvents || len(evicted) < wantEvictions || len(webhooks) < wantEvents {
		select {
		case m := <-msgs:
			ch := channelOf(t, chans, m.Subject)
			if ch == nil {
				continue
			}
			headers := map[string]any{}
			for k, v := range m.Header {
				if len(v) != 1 {
					t.Errorf("%s: header %s has %d values", m.Subject, k, len(v))
				}
				headers[k] = v[0]
			}
			ptr, payload := matchMessage(t, ch, m.Subject, headers, m.Data)
			if ptr == "" {
				continue
			}
			seen[ptr]++
			ev, isEvent := payload.(map[string]any)
			if !isEvent {
				evicted = append(evicted, payload.(string))
				continue
			}
			for p, location := range ch.params {
				token := ch.address.FindStringSubmatch(m.Subject)[ch.address.SubexpIndex(p)]
				if got := fmt.Sprint(schematest.Lookup(t, payload, strings.TrimPrefix(location, "$message.payload"))); got != token {
					t.Errorf("%s: parameter %s is %q in the subject, %q at %s", m.Subject, p, token, got, location)
				}
			}
			id := str(ev["id"])
			if headers["Nats-Msg-Id"] != id {
				t.Errorf("%s: Nats-Msg-Id %v, event id %s", m.Subject, headers["Nats-Msg-Id"], id)
			}
			if _, dup := published[id]; dup {
				t.Errorf("event %s published twice", id)
			}
			published[id] = m.Data
			if data := ev["data"].(map[string]any); ev["type"] == apppass.EventRevoked {
				reasons[str(data["reason"])] = true
				revokedUUIDs[str(data["uuid"])] = true
			}
		case d := <-hooks:
			webhooks = append(webhooks, d)
		case <-deadline:
			t.Fatalf("after 20s: %d of %d events, %d of %d evictions, %d of %d webhook deliveries",
				len(published), wantEvents, len(evicted), wantEvictions, len(webhooks), wantEvents)
		}
	}

	// The webhook deliveries: the events exactly as published, signed.
	var hookChannels []*channel
	for _, ch := range chans {
		if ch.address == nil {
			hookChannels = append(hookChannels, ch)
		}
	}
	if len(hookChannels) != 1 {
		t.Fatalf("%d channels without an address; the webhook channel is the one", len(hookChannels))
	}
	hook := hookChannels[0]
	parsed, err := stdwebhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	verifier := &stdwebhook.Verifier{Secrets: []stdwebhook.Secret{parsed}}
	delivered := map[string]bool{}
	for _, d := range webhooks {
		headers := map[string]any{}
		for _, m := range hook.messages {
			for name := range object(t, doc, resolve(t, doc, m.ptr+"/headers")+"/properties") {
				if v := d.header.Values(name); len(v) == 1 {
					headers[name] = v[0]
				} else if len(v) > 1 {
					t.Errorf("webhook: header %s has %d values", name, len(v))
				}
			}
		}
		ptr, payload := matchMessage(t, hook, "webhook", headers, d.body)
		if ptr == "" {
			continue
		}
		seen[ptr]++
		id := str(payload.(map[string]any)["id"])
		if !bytes.Equal(d.body, published[id]) {
			t.Errorf("webhook %s: the body is not the published event:\n%s\n%s", id, d.body, published[id])
		}
		if got, err := verifier.Verify(d.header.Get, d.body); err != nil || got != id {
			t.Errorf("webhook %s: signature: %q, %v", id, got, err)
		}
		if delivered[id] {
			t.Errorf("webhook %s delivered twice", id)
		}
		delivered[id] = true
	}

	for _, uuid := range evicted {
		if !revokedUUIDs[uuid] {
			t.Errorf("evicted %s, which no revoked event names", uuid)
		}
	}
	if len(evicted) != len(revokedUUIDs) {
		t.Errorf("%d evictions for %d revoked passwords", len(evicted), len(revokedUUIDs))
	}
	for name, ch := range chans {
		for ptr := range ch.messages {
			if seen[ptr] == 0 {
				t.Errorf("channel %s: message %s was never sent", name, ptr)
			}
		}
	}
	for _, r := range object(t, doc, "#/components/schemas/reason")["enum"].([]any) {
		if !reasons[r.(string)] {
			t.Errorf("no revocation had reason %s", r)
		}
	}

	// The stream is the one described.
	stream, err := pub.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	storage, _ := json.Marshal(c.Storage)
	retention, _ := json.Marshal(c.Retention)
	actual := map[string]any{
		"name": c.Name, "description": c.Description, "subjects": c.Subjects,
		"storage": strings.Trim(string(storage), `"`), "retention": strings.Trim(string(retention), `"`),
		"maxAgeSeconds": int64(c.MaxAge.Seconds()), "duplicateWindowSeconds": int64(c.Duplicates.Seconds()),
	}
	described, _ := json.Marshal(object(t, doc, "#/servers/nats")["x-jetstream-stream"])
	actualJSON, _ := json.Marshal(actual)
	if !bytes.Equal(described, actualJSON) { // json.Marshal sorts map keys
		t.Errorf("the stream is\n%s\nthe document says\n%s", actualJSON, described)
	}
}

// channelOf returns the one channel whose address subject matches, failing
// the test (and returning nil) when none or several do.
func channelOf(t *testing.T, chans map[string]*channel, subject string) *channel {
	t.Helper()
	var found []*channel
	for _, ch := range chans {
		if ch.address != nil && ch.address.MatchString(subject) {
			found = append(found, ch)
		}
	}
	if len(found) != 1 {
		t.Errorf("subject %s matches %d channel addresses", subject, len(found))
		return nil
	}
	return found[0]
}

// matchMessage decodes body by the channel's content type and returns the
// one message of ch that the headers and payload are valid against, with
// the payload; it fails the test, returning "", when none or several are.
func matchMessage(t *testing.T, ch *channel, what string, headers map[string]any, body []byte) (string, any) {
	t.Helper()
	var matched []string
	var payload any
	var errs []string
	for _, ptr := range slices.Sorted(maps.Keys(ch.messages)) {
		m := ch.messages[ptr]
		switch m.contentType {
		case "application/json":
			payload = schematest.Unmarshal(t, body)
		case "text/plain":
			payload = string(body)
		default:
			t.Fatalf("%s: content type %q", ptr, m.contentType)
		}
		err := m.payload.Validate(payload)
		if err == nil && m.headers != nil {
			err = m.headers.Validate(headers)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", ptr, err))
			continue
		}
		matched = append(matched, ptr)
	}
	if len(matched) != 1 {
		t.Errorf("%s: headers %v and payload %s are valid against %d messages of channel %s %v\n%s",
			what, headers, body, len(matched), ch.name, matched, strings.Join(errs, "\n"))
		return "", nil
	}
	return matched[0], payload
}
