package jsonrpc

// The hot path's JSON reading: one pass over a request object that checks
// it is valid JSON and cuts it into its members, so the envelope and the
// params need neither encoding/json's validity scan (three of them per
// call before) nor its reflection. Whatever this pass does not take (a
// name with an escape, nesting deeper than maxScanDepth) goes the slow way,
// through encoding/json, which decides as before.

// member is one name and raw value of a JSON object, as slices of it.
type member struct {
	name  []byte // between its quotes: ASCII, never an escape
	value []byte
}

// maxScanDepth is the deepest nesting the one pass reads; deeper values
// go to encoding/json.
const maxScanDepth = 32

// objectMembers appends the members of the JSON object raw (white space
// around it allowed) to into. ok is false unless raw is exactly one valid
// JSON object whose names are ASCII without escapes; the values are
// checked to be valid JSON, not decoded.
func objectMembers(raw []byte, into []member) (_ []member, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return into, false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return into, skipSpace(raw, i+1) == len(raw)
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return into, false
		}
		end, escaped, ok := scanString(raw, i)
		if !ok || escaped {
			return into, false
		}
		name := raw[i+1 : end-1]
		for _, c := range name {
			if c >= 0x80 { // encoding/json turns invalid UTF-8 into U+FFFD
				return into, false
			}
		}
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return into, false
		}
		start := skipSpace(raw, i+1)
		end, ok = scanValue(raw, start, 1)
		if !ok {
			return into, false
		}
		into = append(into, member{name: name, value: raw[start:end]})
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return into, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return into, skipSpace(raw, i+1) == len(raw)
		default:
			return into, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanValue returns the end of the valid JSON value starting at b[i].
func scanValue(b []byte, i, depth int) (end int, ok bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		end, _, ok = scanString(b, i)
		return end, ok
	case c == '{' || c == '[':
		if depth >= maxScanDepth {
			return i, false
		}
		return scanContainer(b, i, depth+1)
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return i, false
}

// scanContainer returns the end of the object or array at b[i].
func scanContainer(b []byte, i, depth int) (int, bool) {
	closing, object := byte(']'), b[i] == '{'
	if object {
		closing = '}'
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == closing {
		return i + 1, true
	}
	for {
		if object {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			end, _, ok := scanString(b, i)
			if !ok {
				return i, false
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
		end, ok := scanValue(b, i, depth)
		if !ok {
			return i, false
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case closing:
			return i + 1, true
		default:
			return i, false
		}
	}
}

// scanString returns the end of the string at b[i] (just past its closing
// quote) and whether it holds an escape. Bytes below 0x20 must be escaped;
// other bytes, valid UTF-8 or not, are taken as encoding/json takes them.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped, true
		case c < 0x20:
			return i, escaped, false
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return i, escaped, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+5 >= len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, escaped, false
				}
				i += 5
			default:
				return i, escaped, false
			}
		}
	}
	return i, escaped, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanNumber returns the end of the number at b[i], by JSON's grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func scanLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}
