package jsonrpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/apppass/apppass"
)

// A param is one named parameter a method accepts. Parameters are decoded
// one by one into Go values of a fixed type, so a JSON object where a
// string belongs (say {"$ne": ""}) is refused here and never reaches a
// MongoDB query.
type param struct {
	name     string
	required bool
	// str receives a string param; other kinds have decode instead. A
	// string (authenticate's params are all strings) needs no closure,
	// which would cost an allocation per param per call.
	str     *string
	decode  func(raw json.RawMessage) error
	present *bool // set when the param was given (optional)
}

// decodeValue decodes raw, given for p, into p's Go value.
func (p param) decodeValue(raw json.RawMessage) error {
	if p.str == nil {
		return p.decode(raw)
	}
	if len(raw) == 0 || raw[0] != '"' {
		return apppass.Invalid(p.name, "must be a string")
	}
	return unquote(raw, p.str)
}

// decodeParams checks params against the method's list: an object (or
// nothing, when no param is required), no unknown or duplicate names, each
// value of its declared type.
func decodeParams(raw json.RawMessage, params ...param) error {
	raw = bytes.TrimSpace(raw)
	var buf [8]member
	if members, ok := objectMembers(raw, buf[:0]); ok && distinctNames(members) {
		return decodeMembers(members, params)
	}
	var fields map[string]json.RawMessage
	switch {
	case len(raw) == 0 || string(raw) == "null" || string(raw) == "[]":
	case raw[0] == '{':
		// One Unmarshal is the fast way in; a name given twice shows as
		// fewer fields than names. Then, for an empty name and for JSON
		// that is not valid, the token walk says what is wrong.
		if err := json.Unmarshal(raw, &fields); err != nil || objectNames(raw) != len(fields) || hasKey(fields, "") {
			fields = map[string]json.RawMessage{}
			if err := splitObject(raw, fields); err != nil {
				return err
			}
		}
	default:
		return apppass.Invalid("params", "must be a JSON object of named parameters")
	}
	for _, p := range params {
		v, ok := fields[p.name]
		if !ok {
			if p.required {
				return apppass.Invalid(p.name, "is required")
			}
			continue
		}
		if p.present != nil {
			*p.present = true
		}
		if err := p.decodeValue(v); err != nil {
			return err
		}
	}
	for name := range fields {
		if !slices.ContainsFunc(params, func(p param) bool { return p.name == name }) {
			return apppass.Invalid(name, "is not a parameter of this method")
		}
	}
	return nil
}

// distinctNames reports whether no name is empty or given twice: then the
// members are the params as they are, and decodeMembers reads them; else
// decodeParams' other ways say what is wrong.
func distinctNames(members []member) bool {
	for i, m := range members {
		if len(m.name) == 0 {
			return false
		}
		for _, o := range members[:i] {
			if bytes.Equal(o.name, m.name) {
				return false
			}
		}
	}
	return true
}

// decodeMembers is decodeParams on an object read in one pass, whose
// names are distinct and not empty.
func decodeMembers(members []member, params []param) error {
	for _, p := range params {
		i := slices.IndexFunc(members, func(m member) bool { return string(m.name) == p.name })
		if i < 0 {
			if p.required {
				return apppass.Invalid(p.name, "is required")
			}
			continue
		}
		if p.present != nil {
			*p.present = true
		}
		if err := p.decodeValue(members[i].value); err != nil {
			return err
		}
	}
	for _, m := range members {
		if !slices.ContainsFunc(params, func(p param) bool { return p.name == string(m.name) }) {
			return apppass.Invalid(string(m.name), "is not a parameter of this method")
		}
	}
	return nil
}

func hasKey(m map[string]json.RawMessage, k string) bool {
	_, ok := m[k]
	return ok
}

// splitObject reads the JSON object raw into fields name by name,
// refusing invalid JSON, an empty name and a name given twice.
func splitObject(raw json.RawMessage, fields map[string]json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return apppass.Invalid("params", "must be a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return apppass.Invalid("params", "must be a JSON object")
		}
		key := tok.(string)
		if key == "" {
			return apppass.Invalid("params", "has a parameter without a name")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return apppass.Invalid(key, "is not valid JSON")
		}
		if _, dup := fields[key]; dup {
			return apppass.Invalid(key, "is given twice")
		}
		fields[key] = v
	}
	if _, err := dec.Token(); err != nil { // }
		return apppass.Invalid("params", "must be a JSON object")
	}
	return nil
}

// objectNames counts the names of the valid JSON object raw: the strings
// at its top level that follow its { or a comma.
func objectNames(raw []byte) int {
	names, depth, inString, escaped, expectName := 0, 0, false, false, false
	for _, c := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
			if depth == 1 && expectName {
				names++
			}
			expectName = false
		case c == '{' || c == '[':
			depth++
			expectName = depth == 1
		case c == '}' || c == ']':
			depth--
		case c == ',':
			expectName = depth == 1
		}
	}
	return names
}

func str(name string, into *string, required bool) param {
	return param{name: name, required: required, str: into}
}

// unquote decodes the JSON string raw into into. A string without escapes
// in valid UTF-8 (a login, a password) is its bytes between the quotes;
// anything else goes through encoding/json.
func unquote(raw json.RawMessage, into *string) error {
	if n := len(raw); n >= 2 && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && utf8.Valid(inner) && !hasControl(inner) {
			*into = string(inner)
			return nil
		}
	}
	return json.Unmarshal(raw, into)
}

// hasControl reports whether b holds a byte JSON allows in a string only
// escaped.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

func optionalStr(name string, into **string) param {
	return param{name: name, decode: func(raw json.RawMessage) error {
		if string(raw) == "null" {
			return nil
		}
		if len(raw) == 0 || raw[0] != '"' {
			return apppass.Invalid(name, "must be a string")
		}
		*into = new(string)
		return json.Unmarshal(raw, *into)
	}}
}

// strList reads an optional array of strings (null means none).
func strList(name string, into *[]string) param {
	return param{name: name, decode: func(raw json.RawMessage) error {
		if string(raw) == "null" {
			return nil
		}
		var items []json.RawMessage
		if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
			return apppass.Invalid(name, "must be an array of strings")
		}
		for _, item := range items {
			var s string
			if len(item) == 0 || item[0] != '"' || json.Unmarshal(item, &s) != nil {
				return apppass.Invalid(name, "must be an array of strings")
			}
			*into = append(*into, s)
		}
		return nil
	}}
}

func integer(name string, into *int64) param {
	return param{name: name, required: true, decode: func(raw json.RawMessage) error {
		var f float64
		if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) || json.Unmarshal(raw, &f) != nil {
			return apppass.Invalid(name, "must be a number")
		}
		if f != math.Trunc(f) || f < 0 || f > 1<<53 {
			return apppass.Invalid(name, "must be a non-negative whole number")
		}
		*into = int64(f)
		return nil
	}}
}

// userParam reads the "user" object an admin names the user with.
func userParam(into *apppass.User, present *bool) param {
	return param{name: "user", present: present, decode: func(raw json.RawMessage) error {
		err := decodeParams(raw,
			integer("contextId", &into.ContextID),
			integer("userId", &into.UserID),
			str("login", &into.Login, true))
		if e, ok := err.(*apppass.Error); ok {
			if e.Field == "params" {
				e.Field, e.Message = "user", "must be an object {contextId, userId, login}"
			} else {
				e.Field = "user." + e.Field
			}
			return e
		}
		if strings.TrimSpace(into.Login) == "" {
			return apppass.Invalid("user.login", "must not be empty")
		}
		return nil
	}}
}

// maxLen bounds free-text gateway fields so a client cannot make us store
// megabytes per login.
func maxLen(name, v string, n int) error {
	if len(v) > n {
		return apppass.Invalid(name, fmt.Sprintf("must be at most %d bytes", n))
	}
	return nil
}
