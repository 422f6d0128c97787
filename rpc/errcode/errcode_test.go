package errcode_test

import (
	"testing"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/errcode"
)

// TestTable: every kind but KindInternal has a code of its own, and the
// code leads back to the kind.
func TestTable(t *testing.T) {
	seen := map[int64]apppass.Kind{}
	for kind := apppass.KindInvalid; kind <= apppass.KindUnavailable; kind++ {
		code, ok := errcode.Of(kind)
		if !ok {
			t.Errorf("kind %d has no code", kind)
			continue
		}
		if other, dup := seen[code]; dup {
			t.Errorf("kinds %d and %d share code %d", other, kind, code)
		}
		seen[code] = kind
		if back := errcode.KindOf(code); back != kind {
			t.Errorf("code %d leads to kind %d, not %d", code, back, kind)
		}
	}
	if _, ok := errcode.Of(apppass.KindInternal); ok {
		t.Error("KindInternal has a code: it must be answered as Internal after logging")
	}
	for _, code := range []int64{errcode.ParseError, errcode.InvalidRequest, errcode.MethodNotFound, errcode.Internal, 0} {
		if k := errcode.KindOf(code); k != apppass.KindInternal {
			t.Errorf("code %d leads to kind %d", code, k)
		}
	}
}
