package apppass_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestEachBinaryLinksOnlyWhatItUses holds the layout to what
// docs/architecture.md says each package and binary links: the domain no
// database, broker or transport; the CLI and the gateway neither
// nats-server nor FerretDB; apppassd no FerretDB; the bench no
// nats-server; the gateway SDK no server and no store.
func TestEachBinaryLinksOnlyWhatItUses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const (
		natsServer = "github.com/nats-io/nats-server/"
		ferretDB   = "github.com/FerretDB/"
		mongo      = "go.mongodb.org/"
		sqlite     = "modernc.org/sqlite"
		natsClient = "github.com/nats-io/nats.go"
	)
	cases := []struct {
		pkg    string
		forbid []string
	}{
		{".", []string{"net/http", natsServer, natsClient, ferretDB, mongo, sqlite}},
		{"./events/consume", []string{natsServer, ferretDB, mongo, sqlite}},
		{"./rpc/client", []string{natsServer, natsClient, ferretDB, mongo, sqlite}},
		{"./config", []string{natsServer, ferretDB, mongo, sqlite}},
		{"./cmd/apppass", []string{natsServer, ferretDB}},
		{"./cmd/apppass-gateway", []string{natsServer, ferretDB, mongo, sqlite}},
		{"./cmd/apppassd", []string{ferretDB}},
		{"./cmd/apppass-bench", []string{natsServer}},
	}
	for _, c := range cases {
		out, err := exec.Command("go", "list", "-deps", c.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c.pkg, err)
		}
		for dep := range strings.FieldsSeq(string(out)) {
			for _, f := range c.forbid {
				if dep == f || strings.HasPrefix(dep, f) && (strings.HasSuffix(f, "/") || strings.HasPrefix(dep[len(f):], "/")) {
					t.Errorf("%s links %s", c.pkg, dep)
				}
			}
		}
	}
}
