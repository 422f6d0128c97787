package apppass

// SetRemoveContextBatch lets tests page RemoveContext in small batches.
func SetRemoveContextBatch(n int) (restore func()) {
	old := removeContextBatch
	removeContextBatch = n
	return func() { removeContextBatch = old }
}
