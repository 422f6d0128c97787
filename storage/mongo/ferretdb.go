package mongo

import (
	"hash/fnv"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// What FerretDB needs differently, all of it.
//
// FerretDB v1 (the MongoDB-wire server the tests start) applies a
// conditional update as a read, a check in Go and a write, without
// isolation: two racing updates of one document can both pass the check
// (measured: 20 concurrent $inc of one field left it at 7), so two claims
// could both win and a revocation could be overwritten by a racing login.
// On FerretDB, and only there, a Store therefore serialises its own
// conditional writes per document. Nothing can do that between two stores
// or processes: the conformance suite skips its cross-handle cases on
// FerretDB, and two apppassd must never share one FerretDB.
//
// (FerretDB v1 also fails on a createIndexes that repeats an existing
// index and refuses a projection on findAndModify; ensureIndexes creates
// only missing indexes and no findAndModify here projects, which is right
// on MongoDB too.)

// ferretLocks are the per-document locks of one Store on FerretDB.
type ferretLocks struct {
	stripes [256]sync.Mutex
}

// isFerretDB reports whether a buildInfo answer is FerretDB's.
func isFerretDB(info bson.M) bool {
	_, ok := info["ferretdbVersion"]
	return ok
}

// isolate holds the lock of document id of collection coll until the
// returned function is called: on FerretDB; on MongoDB it does nothing.
func (s *Store) isolate(coll, id string) func() {
	if s.ferret == nil {
		return func() {}
	}
	h := fnv.New32a()
	h.Write([]byte(coll))
	h.Write([]byte{0})
	h.Write([]byte(id))
	m := &s.ferret.stripes[h.Sum32()%uint32(len(s.ferret.stripes))]
	m.Lock()
	return m.Unlock
}

// IsFerretDB reports whether the server is FerretDB, for tests that must
// skip what it cannot do.
func (s *Store) IsFerretDB() bool { return s.ferret != nil }
