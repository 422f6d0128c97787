package main

// What the admin CLI's subcommands (all but checkpassword, which speaks
// Dovecot's codes) share: exit codes, flag parsing, error lines and output.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/apppass/apppass/rpc/client"
	"github.com/apppass/apppass/rpc/errcode"
)

// Exit codes of the admin subcommands, for scripts (docs/operations.md, "Admin CLI").
const (
	// exitSuccess: done; for authenticate, the password is accepted; for
	// health, apppassd is ready.
	exitSuccess = 0
	// exitFailed: apppassd answered, and the answer is no: no such app
	// password, a refused password, invalid params, a limit, MongoDB
	// unavailable (-32050), not ready.
	exitFailed = 1
	// exitUsage: apppass was called wrongly (unknown flag, missing or
	// malformed argument, a malformed APPPASS_URL or APPPASS_TIMEOUT);
	// nothing was sent.
	exitUsage = 2
	// exitUnreachable: no call got through: no key found, apppassd
	// unreachable or timed out, an HTTP answer without JSON-RPC, or the
	// key refused (-32001, -32003).
	exitUnreachable = 3
)

const exitCodesHelp = `Exit codes:
  0  success (authenticate: accepted; health: ready)
  1  apppassd said no: not found, password refused, invalid params, limit, not ready
  2  usage error: bad flags or arguments, malformed APPPASS_URL/APPPASS_TIMEOUT
  3  cannot reach or authenticate to apppassd: no key, connection refused,
     timeout, key refused (-32001, -32003)
`

// parseFlags parses args with flags and positional arguments in any order
// ("remove <uuid> --context 1" as well as "remove --context 1 <uuid>"); a
// lone "--" ends the flags. done means the command is over with code: its
// help was printed (0) or the flags were wrong (2, one line on stderr).
// parseJSONFlag parses the arguments of a command whose only flag is
// --json (described by usage) and which takes no positional argument.
func parseJSONFlag(sys *system, c *command, args []string, usage string) (asJSON bool, code int, done bool) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	j := fs.Bool("json", false, usage)
	pos, code, done := parseFlags(sys, c, fs, args)
	if done {
		return false, code, true
	}
	if len(pos) > 0 {
		return false, usageError(sys, c, "unexpected argument %q", pos[0]), true
	}
	return *j, 0, false
}

func parseFlags(sys *system, c *command, fs *flag.FlagSet, args []string) (positional []string, code int, done bool) {
	fs.SetOutput(io.Discard)
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(sys.stdout, "Usage: apppass %s %s\n\n%s\nFlags (-flag and --flag alike):\n", c.name, c.args, c.help)
			fs.SetOutput(sys.stdout)
			fs.PrintDefaults()
			fmt.Fprint(sys.stdout, "\nEnvironment:\n"+envHelp+"\n"+exitCodesHelp)
			return nil, exitSuccess, true
		}
		if err != nil {
			return nil, usageError(sys, c, "%v", err), true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, 0, false
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), 0, false
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usageError prints one line and returns exitUsage.
func usageError(sys *system, c *command, format string, a ...any) int {
	fmt.Fprintf(sys.stderr, "apppass %s: %s (see apppass %s --help)\n", c.name, fmt.Sprintf(format, a...), c.name)
	return exitUsage
}

// fail prints err in one line and returns its exit code.
func fail(sys *system, c *command, err error) int {
	code := exitCode(err)
	fmt.Fprintf(sys.stderr, "apppass %s: %s\n", c.name, oneLine(describe(err)))
	return code
}

// exitCode sorts an error of the admin subcommands into the exit codes.
func exitCode(err error) int {
	var re *client.Error
	var ke *keyError
	switch {
	case err == nil:
		return exitSuccess
	case errors.As(err, &ke):
		return exitUnreachable
	case errors.Is(err, errConfig):
		return exitUsage
	case errors.As(err, &re):
		if re.Code == errcode.Unauthenticated || re.Code == errcode.Forbidden {
			return exitUnreachable
		}
		return exitFailed
	}
	// Transport errors: refused, timed out, no JSON-RPC answer.
	return exitUnreachable
}

// describe turns err into what the user reads.
func describe(err error) string {
	var re *client.Error
	var ke *keyError
	if errors.As(err, &ke) {
		return ke.msg
	}
	if !errors.As(err, &re) {
		return err.Error()
	}
	msg := fmt.Sprintf("%s (%d)", re.Message, re.Code)
	switch re.Code {
	case errcode.Unauthenticated:
		msg += ": apppassd does not accept the key"
	case errcode.Forbidden:
		msg += ": the key's role may not do this"
	case errcode.Limit:
		if s := int(re.RetryAfter().Seconds()); s > 0 {
			msg += fmt.Sprintf(": retry after %d s", s)
		}
	}
	return msg
}

// oneLine keeps an error on one line whatever the server put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// result calls method and either prints the raw result (--json) or hands
// it to human, which prints it for people.
func result(sys *system, c *command, s *sidecar, method string, params any, asJSON bool, human func(raw json.RawMessage) error) int {
	var raw json.RawMessage
	if err := s.call(context.Background(), method, params, &raw); err != nil {
		return fail(sys, c, err)
	}
	if asJSON {
		fmt.Fprintf(sys.stdout, "%s\n", raw)
		return exitSuccess
	}
	if err := human(raw); err != nil {
		return fail(sys, c, fmt.Errorf("%s: unexpected result: %w", method, err))
	}
	return exitSuccess
}

// table writes aligned columns: the header (if any), then rows.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header != nil {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, r := range rows {
		for i, cell := range r {
			r[i] = oneLine(cell)
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// orDash shows an unset value.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
