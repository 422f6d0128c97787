package jsonrpc

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
)

// FuzzParamsFastPath holds decodeParams' fast paths to its token walk: for
// any valid JSON object, one Unmarshal and objectNames give the same
// fields as splitObject, and tell a repeated name apart, and the one pass
// (objectMembers) gives the same members; and unquote reads any JSON
// string as encoding/json does.
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
			// The one pass (decodeMembers' way in) takes what the token
			// walk takes, with the same values.
			if members, ok := objectMembers(trimmed, nil); ok && distinctNames(members) {
				if slowErr != nil || len(members) != len(slow) {
					t.Fatalf("%q: the one pass takes %d members, the token walk %d (%v)", trimmed, len(members), len(slow), slowErr)
				}
				for _, m := range members {
					if !bytes.Equal(slow[string(m.name)], m.value) {
						t.Fatalf("%q: %s is %s in one pass, %s in the token walk", trimmed, m.name, m.value, slow[string(m.name)])
					}
				}
			}
		}
	})
}

// FuzzObjectMembers holds the one-pass reading (scan.go) to encoding/json:
// whatever it takes is a valid JSON object, its members are the object's
// names and raw values in order, and an object whose names have no escape
// and only ASCII and which nests no deeper than it reads is taken.
func FuzzObjectMembers(f *testing.F) {
	for _, seed := range []string{
		`{}`, ` { } `, `{"jsonrpc":"2.0","id":1,"method":"appPasswords.authenticate","params":{"login":"a@example.com","password":"abcd-efgh-ijkl-mnop","protocol":"imap"}}`,
		`{"a":1,"a":2}`, `{"a":-0.5e+3,"b":[true,false,null,{"c":"\u00e9"}]}`, `{"a\u0062":1}`, `{"a":01}`, `{"a":1.}`,
		`{"a":"\x"}`, "{\"a\":\"\x01\"}", `{"a":"\ud800"}`, `{"a":[1,]}`, `{"a":1}x`, `[1]`, `"s"`, `{"a":tru}`, `{"a":{"b":{"c":{}}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		members, ok := objectMembers(raw, nil)
		valid := json.Valid(raw)
		if ok && !valid {
			t.Fatalf("%q: taken, but not valid JSON", raw)
		}
		if !ok {
			trimmed := bytes.TrimSpace(raw)
			if valid && len(trimmed) > 0 && trimmed[0] == '{' && !bytes.Contains(trimmed, []byte(`\`)) && !hasNonASCII(trimmed) && bytes.Count(trimmed, []byte("{"))+bytes.Count(trimmed, []byte("[")) < maxScanDepth {
				t.Fatalf("%q: a valid object without escapes was not taken", raw)
			}
			return
		}
		// The members, in order, are what a token walk of the object reads.
		dec := json.NewDecoder(bytes.NewReader(raw))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("%q: taken, but encoding/json reads %v, %v first", raw, tok, err)
		}
		for i := 0; dec.More(); i++ {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if i >= len(members) || string(members[i].name) != tok.(string) || !bytes.Equal(members[i].value, v) {
				t.Fatalf("%q: member %d is %q, encoding/json reads %q: %s", raw, i, members[min(i, len(members)-1)].name, tok, v)
			}
			if i == len(members)-1 && dec.More() {
				t.Fatalf("%q: %d members taken, encoding/json reads more", raw, len(members))
			}
		}
	})
}

func hasNonASCII(b []byte) bool {
	return bytes.ContainsFunc(b, func(r rune) bool { return r >= 0x80 })
}
