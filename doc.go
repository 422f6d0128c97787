// Package apppass is the domain of the app-password sidecar: the model
// (apps, passwords, events, callers), secret generation and digests, user
// tokens, the error table, and the use cases in Service.
//
// It imports no database, broker or transport (not even net/http). The
// adapters depend on it and implement the interfaces in ports.go:
// storage/sqlite and storage/mongo implement Store, events/nats publishes
// the outbox to NATS JetStream and broadcasts evictions, rpc/ exposes
// Service over JSON-RPC 2.0 and the gateways' HTTP endpoints.
// docs/architecture.md draws the whole.
package apppass
