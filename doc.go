// Package apppass is the domain of the app-password sidecar: the model
// (apps, passwords, events, callers), secret generation and digests, user
// tokens, the error table, and the use cases in Service.
//
// It imports no database, broker or transport. The adapters depend on it:
// storage/ implements Store and Outbox on MongoDB, events/ publishes the
// outbox to NATS JetStream, rpc/ exposes Service over JSON-RPC 2.0.
package apppass
