package jsonrpc

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
)

// FuzzParamsFastPath holds decodeParams' fast path to its token walk: for
// any valid JSON object, one Unmarshal and objectNames give the same
// fields as splitObject, and tell a repeated name apart; and unquote reads
// any JSON string as encoding/json does.
func FuzzParamsFastPath(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"login":"a@example.com","password":"abcd-efgh"}`,
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"":1}`, `{"a":{"b":1,"b":2}}`,
		`{"a":"x,\"y\":{","b":[1,{"c":"}"}]}`, `{"a\\":"\\\"","b":null}`,
		`{"a":[{"a":1},{"a":2}],"b":"\u00e9\ud83d\ude00"}`, `{"a":"\u0000","b":"tab\there"}`,
		"{\"a\":\"\xff\"}", `{ "a" : 1 , "b" : 2 }`, `"plain"`, `"with \"quotes\""`, `"é"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		trimmed := bytes.TrimSpace(raw)
		switch trimmed[0] {
		case '"':
			var want, got string
			wantErr := json.Unmarshal(trimmed, &want)
			gotErr := unquote(trimmed, &got)
			if (wantErr == nil) != (gotErr == nil) || got != want {
				t.Fatalf("unquote(%q) = %q, %v; encoding/json: %q, %v", trimmed, got, gotErr, want, wantErr)
			}
		case '{':
			slow := map[string]json.RawMessage{}
			slowErr := splitObject(trimmed, slow)
			var fast map[string]json.RawMessage
			if err := json.Unmarshal(trimmed, &fast); err != nil {
				t.Fatalf("Unmarshal of a valid object %q: %v", trimmed, err)
			}
			same := objectNames(trimmed) == len(fast)
			if slowErr == nil {
				if !same || !maps.EqualFunc(slow, fast, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
					t.Fatalf("%q: the fast path has %d names for %d fields, the token walk %d fields", trimmed, objectNames(trimmed), len(fast), len(slow))
				}
			} else if same && !hasKey(fast, "") {
				t.Fatalf("%q: the token walk refused it (%v) but the fast path would take it", trimmed, slowErr)
			}
		}
	})
}
