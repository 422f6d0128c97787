// Package docs holds the reference documents that describe apppassd's
// interfaces to machines: the AsyncAPI document of its events.
package docs

import _ "embed"

// AsyncAPI is the AsyncAPI 3.0.0 document (YAML) of the events: the NATS
// subjects, the JetStream stream, the cache eviction broadcast, the webhook
// deliveries and every payload. It is written by hand; asyncapi_test.go
// validates it against the AsyncAPI schema and real events against it.
// apppassd serves it at GET /asyncapi.yaml.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
