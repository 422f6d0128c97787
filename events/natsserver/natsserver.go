// Package natsserver runs a nats-server with JetStream inside apppassd:
// the NATS of the one-machine default, with apppassd's and the gateways'
// users and what each may do.
package natsserver

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/apppass/apppass/events"
)

// Server is a nats-server with JetStream running inside this process,
// the NATS of the single-machine default. Gateways and `nats sub` reach it
// on its listen address like any NATS server.
type Server struct {
	srv      *server.Server
	auth     *Auth
	storeDir string
}

// Auth are the users of an embedded server that requires
// authentication (apppassd's does: anyone who could publish on
// apppasswords.> could forge revocations, and have them signed and sent
// as genuine webhooks).
type Auth struct {
	// ServicePassword is apppassd's own user's ("apppassd"), which may do
	// anything.
	ServicePassword string
	// GatewayPassword is the "gateway" user's, which may read events and
	// run consumers on the stream (GatewayPermissions), and publish none.
	GatewayPassword string
	// OwnConsumers are apppassd's durable consumers besides the webhook
	// one (events.DoveadmConsumer of each Dovecot), which the gateway user may not
	// touch.
	OwnConsumers []string
}

// Users of the embedded server.
const (
	ServiceUser = "apppassd"
	GatewayUser = "gateway"
)

// GatewayPermissions are what a gateway needs of NATS: subscribe to the
// events and to the cache evictions, and use the JetStream consumer API
// of the stream, but not on apppassd's own consumers (the webhook
// consumer and those named in own, the Dovecot kicks': a gateway that
// could ack their events could keep sessions alive); publish no event and
// no eviction. docs/events.md ("NATS logins and permissions") gives the same for an external
// server.
func GatewayPermissions(own ...string) *server.Permissions {
	api := "$JS.API.CONSUMER."
	deny := []string{events.StreamSubjects, events.EvictSubject}
	for _, c := range append([]string{events.WebhookConsumer}, own...) {
		deny = append(deny,
			api+"*."+events.StreamName+"."+c, api+"*."+events.StreamName+"."+c+".>",
			api+"DURABLE.CREATE."+events.StreamName+"."+c,
			api+"MSG.NEXT."+events.StreamName+"."+c,
			"$JS.ACK."+events.StreamName+"."+c+".>")
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + events.StreamName,
				api + "CREATE." + events.StreamName, api + "CREATE." + events.StreamName + ".>",
				api + "DURABLE.CREATE." + events.StreamName + ".>",
				api + "INFO." + events.StreamName + ".>",
				api + "DELETE." + events.StreamName + ".>",
				api + "MSG.NEXT." + events.StreamName + ".>",
				api + "NAMES." + events.StreamName, api + "LIST." + events.StreamName,
				"$JS.ACK." + events.StreamName + ".>",
			},
			Deny: deny,
		},
		Subscribe: &server.SubjectPermission{
			Allow: []string{events.StreamSubjects, events.EvictSubject, "_INBOX.>"},
		},
	}
}

// Start starts a server on listen ("host:port", port 0 for any
// free one) that stores JetStream data under storeDir and syncs it to disk
// every SyncInterval, not at every ack: a relay keeps an acked
// event in its outbox for KeepPublished, so one a crash took from
// the server goes out again. With auth set, every client must log in as
// one of its users.
func Start(listen, storeDir string, auth *Auth) (*Server, error) {
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
	s, err := server.NewServer(embeddedOptions(host, port, storeDir, auth))
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start listening on %s (is the port taken?)", listen)
	}
	return &Server{srv: s, auth: auth, storeDir: storeDir}, nil
}

// SyncInterval is how often the embedded server syncs its store.
// Syncing at every ack (SyncAlways) costs a disk sync per event, one at a
// time: about 14 times fewer publishes per second (BENCHMARKS.md,
// BenchmarkEmbeddedPublish), and a remove waits for the syncs of every
// event queued before its own.
const SyncInterval = time.Second

// KeepPublished is how long a relay publishing to the embedded
// server keeps an acked event (Relay.KeepPublished): the server writes it
// out within moments and syncs every block at most SyncInterval
// after its last sync; twice that and a second more is the margin for a
// sync the machine's load delays.
const KeepPublished = 2*SyncInterval + time.Second

// embeddedOptions configure the embedded server.
func embeddedOptions(host string, port int, storeDir string, auth *Auth) *server.Options {
	opts := &server.Options{
		ServerName:   "apppass-embedded",
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     storeDir,
		SyncInterval: SyncInterval,
		NoSigs:       true,
		NoLog:        true,
	}
	if auth != nil {
		opts.Users = []*server.User{
			{Username: ServiceUser, Password: auth.ServicePassword},
			{Username: GatewayUser, Password: auth.GatewayPassword, Permissions: GatewayPermissions(auth.OwnConsumers...)},
		}
	}
	return opts
}

// URL is the client URL of the server, without credentials.
func (e *Server) URL() string { return e.srv.ClientURL() }

// ServiceURL is the URL apppassd connects with (URL without auth).
func (e *Server) ServiceURL() string {
	if e.auth == nil {
		return e.URL()
	}
	return withUser(e.URL(), ServiceUser, e.auth.ServicePassword)
}

// GatewayURL is the URL a gateway or `nats sub` connects with (URL
// without auth).
func (e *Server) GatewayURL() string {
	if e.auth == nil {
		return e.URL()
	}
	return withUser(e.URL(), GatewayUser, e.auth.GatewayPassword)
}

func withUser(rawURL, user, password string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// Stop shuts the server down and waits for it.
func (e *Server) Stop() { _ = e.StopSynced() }

// StopSynced stops the server and syncs its store to disk; an error says
// the store may not be all on disk.
func (e *Server) StopSynced() error {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	return e.syncStore()
}

// syncStore syncs every file of the stopped server's store: its shutdown
// writes out what it holds but does not sync it, and the events it has
// are about to leave the outbox for good (Relay.DropPublished).
func (e *Server) syncStore() error {
	return filepath.WalkDir(e.storeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		return errors.Join(err, f.Close())
	})
}
