package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

var healthCommand = &command{
	name:    "health",
	args:    "[--json]",
	summary: "check that apppassd is alive and ready (no key needed)",
	help: `Asks apppassd's GET /healthz (the process answers) and GET /readyz
(MongoDB and NATS answer) and prints the status and the number of events
waiting in the outbox (pendingEvents). Exit 0 when ready, 1 when apppassd
answers but is not ready, 3 when it cannot be reached. --json prints the
body of /readyz. The container image's HEALTHCHECK runs this.
`,
	run: runHealth,
}

func runHealth(sys *system, c *command, args []string) int {
	asJSON, code, done := parseJSONFlag(sys, c, args, "print the body of /readyz as it came")
	if done {
		return code
	}
	s, err := endpointFromEnv(sys.getenv)
	if err != nil {
		return fail(sys, c, err)
	}
	ctx := context.Background()
	status, _, err := s.get(ctx, "/healthz")
	if err != nil {
		return fail(sys, c, err)
	}
	if status != http.StatusOK {
		return fail(sys, c, fmt.Errorf("GET %s/healthz answered HTTP %d: is this apppassd?", s.base, status))
	}
	status, body, err := s.get(ctx, "/readyz")
	if err != nil {
		return fail(sys, c, err)
	}
	var ready struct {
		Status        string `json:"status"`
		Reason        string `json:"reason"`
		PendingEvents *int64 `json:"pendingEvents"`
	}
	if err := json.Unmarshal(body, &ready); err != nil || ready.Status == "" {
		return fail(sys, c, fmt.Errorf("GET %s/readyz answered HTTP %d without a status: is this apppassd?", s.base, status))
	}
	if asJSON {
		fmt.Fprintf(sys.stdout, "%s\n", bytesTrimNewline(body))
	} else {
		pending := "unknown"
		if ready.PendingEvents != nil {
			pending = fmt.Sprint(*ready.PendingEvents)
		}
		rows := [][]string{{"healthz:", "ok"}, {"status:", ready.Status}}
		if ready.Reason != "" {
			rows = append(rows, []string{"reason:", ready.Reason})
		}
		rows = append(rows, []string{"pendingEvents:", pending})
		table(sys.stdout, nil, rows)
	}
	if status != http.StatusOK {
		if !asJSON {
			fmt.Fprintf(sys.stderr, "apppass %s: not ready: %s\n", c.name, oneLine(orDash(ready.Reason)))
		} else {
			fmt.Fprintf(sys.stderr, "apppass %s: not ready (HTTP %d)\n", c.name, status)
		}
		return exitFailed
	}
	return exitSuccess
}

func bytesTrimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
