package storage

// UseConditionalUpdates makes s use the outbox's MongoDB code path (one
// conditional update per step) even on FerretDB, so the embedded store
// tests it too.
func UseConditionalUpdates(s *Store) { s.ferret.Store(2) }
