// Package schematest is what the tests of the interface descriptions
// (the OpenRPC document in rpc/jsonrpc, the AsyncAPI document in docs)
// share: reading a document for github.com/santhosh-tekuri/jsonschema,
// compiling a schema of it, and following a JSON pointer in it.
package schematest

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Unmarshal reads raw as jsonschema reads documents (numbers kept exact).
func Unmarshal(t testing.TB, raw []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, raw)
	}
	return v
}

// Compile compiles the schema at loc.
func Compile(t testing.TB, c *jsonschema.Compiler, loc string) *jsonschema.Schema {
	t.Helper()
	s, err := c.Compile(loc)
	if err != nil {
		t.Fatalf("compiling %s: %v", loc, err)
	}
	return s
}

// Lookup follows a local JSON pointer ("#/a/b") in doc.
func Lookup(t testing.TB, doc any, ref string) any {
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
