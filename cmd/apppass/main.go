// Command apppass is the command-line companion of apppassd. Each job is a
// subcommand: checkpassword lets Dovecot (or anything else speaking the
// checkpassword protocol) check app passwords against the sidecar; the
// others (admin.go, token.go, authenticate.go, health.go, store.go) are the
// admin CLI, with the exit codes of exitcodes.go.
//
// Adding a subcommand means adding one entry to commands: its name, a
// one-line summary, its help text and a run function. Settings shared by
// subcommands (APPPASS_URL, the timeout, a bearer credential named by a
// bearerSource) are read by sidecarFromEnv, and JSON-RPC calls go through
// sidecar.call.
package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// system is what a subcommand may touch of the outside world, so tests can
// run subcommands in-process.
type system struct {
	getenv  func(string) string
	environ func() []string
	stdout  io.Writer
	stderr  io.Writer
	// input opens the checkpassword credentials (file descriptor 3); an
	// error means there is no such descriptor.
	input func() (io.ReadCloser, error)
	// exec replaces the process with path; it returns only on failure.
	exec func(path string, argv, env []string) error
	// stdin is where authenticate reads a piped password.
	stdin io.Reader
	// stdinTerminal tells whether stdin is a terminal, from which
	// readPassword reads a line without echo.
	stdinTerminal func() bool
	readPassword  func() ([]byte, error)
	// stderrTerminal tells whether stderr is a terminal (store copy then
	// draws a progress bar); nil means no.
	stderrTerminal func() bool
}

func (s *system) stderrIsTerminal() bool { return s.stderrTerminal != nil && s.stderrTerminal() }

// command is one subcommand.
type command struct {
	name    string
	args    string // the argument synopsis for usage lines
	summary string // one line for the command list
	help    string // what `apppass <name> --help` explains, after the usage line
	run     func(sys *system, c *command, args []string) int
}

// commands lists the subcommands in the order --help shows them.
var commands = []*command{
	listCommand,
	addCommand,
	removeCommand,
	removeAllCommand,
	appsCommand,
	doveadmCommand,
	authenticateCommand,
	tokenCommand,
	healthCommand,
	storeCommand,
	checkpasswordCommand,
}

func main() {
	os.Exit(run(os.Args[1:], osSystem()))
}

func osSystem() *system {
	return &system{
		getenv:        os.Getenv,
		environ:       os.Environ,
		stdout:        os.Stdout,
		stderr:        os.Stderr,
		input:         openFD3,
		exec:          syscall.Exec,
		stdin:         os.Stdin,
		stdinTerminal: func() bool { return isTerminal(os.Stdin) },
		// A terminal's echo is turned off while the password is typed.
		readPassword:   func() ([]byte, error) { return readPasswordNoEcho(os.Stdin) },
		stderrTerminal: func() bool { return isTerminal(os.Stderr) },
	}
}

// run dispatches to a subcommand and returns the exit code.
func run(args []string, sys *system) int {
	if len(args) == 0 {
		usage(sys.stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			if c := lookup(args[1]); c != nil {
				// The command prints its own help, flags included.
				return c.run(sys, c, []string{"--help"})
			}
			fmt.Fprintf(sys.stderr, "apppass: unknown command %q\n", args[1])
			return 2
		}
		usage(sys.stdout)
		return 0
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(sys.stderr, "apppass: unknown command %q (see apppass --help)\n", args[0])
		return 2
	}
	return c.run(sys, c, args[1:])
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `apppass: the command-line client of the apppass sidecar (apppassd).

Usage:
  apppass <command> [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-15s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "apppass <command> --help" for a command's details. Tables are for
people; --json prints the raw JSON-RPC result for scripts.

`+exitCodesHelp+`  (checkpassword has Dovecot's exit codes: see apppass checkpassword --help)

Environment:
`+envHelp)
}

func commandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: apppass %s %s\n\n%s\nEnvironment:\n%s", c.name, c.args, c.help, envHelp)
}

const envHelp = `  APPPASS_URL               the sidecar's base URL (default ` + defaultURL + `)
  APPPASS_TIMEOUT           how long one call may take, as a Go duration (default 5s)
  APPPASS_ADMIN_KEY         an admin service key (one of apppassd's APPPASS_SERVICE_KEYS)
  APPPASS_ADMIN_KEY_FILE    a file holding that key, read when APPPASS_ADMIN_KEY is unset
  APPPASS_GATEWAY_KEY       a gateway service key (one of apppassd's APPPASS_SERVICE_KEYS)
  APPPASS_GATEWAY_KEY_FILE  a file holding that key, read when APPPASS_GATEWAY_KEY is unset
  APPPASS_USER_TOKEN_KEY    apppassd's user-token key (for token)
  APPPASS_DATA_DIR          apppassd's data dir (default ./data): without the
                            variables above, the admin CLI uses the admin.key,
                            gateway.key and user-token.key apppassd generated
                            there on the embedded default (checkpassword never does)
`
