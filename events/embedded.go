package events

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedNATS is a nats-server with JetStream running inside this process,
// the NATS of the single-machine default. Gateways and `nats sub` reach it
// on its listen address like any NATS server.
type EmbeddedNATS struct {
	Server *server.Server
}

// StartEmbeddedNATS starts a server on listen ("host:port", port 0 for any
// free one) that stores JetStream data under storeDir.
func StartEmbeddedNATS(listen, storeDir string) (*EmbeddedNATS, error) {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "apppass-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start listening on %s (is the port taken?)", listen)
	}
	return &EmbeddedNATS{Server: s}, nil
}

// URL is the client URL of the server.
func (e *EmbeddedNATS) URL() string { return e.Server.ClientURL() }

// Stop shuts the server down and waits for it.
func (e *EmbeddedNATS) Stop() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}
