package storage

import (
	"hash/fnv"
	"sync"
)

// docLocks serialises this process's writes to one document.
//
// FerretDB v1's SQLite handler applies an update by reading the document,
// changing it in Go and writing it back whole, without isolation: two
// concurrent updates of one document lose one of them (measured: 20
// concurrent $inc of one field left it at 7). A revocation overwritten by a
// racing lastLogin write would bring a revoked password back, so every
// read-modify-write here takes the document's lock. On MongoDB updates are
// atomic anyway and the lock costs next to nothing. It cannot help across
// processes: several apppassd replicas need a real MongoDB.
type docLocks struct {
	stripes [256]sync.Mutex
}

func (l *docLocks) lock(id string) func() {
	h := fnv.New32a()
	h.Write([]byte(id))
	m := &l.stripes[h.Sum32()%uint32(len(l.stripes))]
	m.Lock()
	return m.Unlock
}
