package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config/datadir"
)

// userTokenKey is where token finds apppassd's user-token key.
var userTokenKey = bearerSource{env: "APPPASS_USER_TOKEN_KEY", dataFile: datadir.UserTokenKeyFile, what: "user-token key"}

var tokenCommand = &command{
	name:    "token",
	args:    userFlagsSynopsis + " [--ttl 1h]",
	summary: "mint a user token, for development (user-token key)",
	help: `Mints a user token (an HS256 JWT, as the groupware would) for the user,
signed with apppassd's user-token key, and prints only the token:
  export TOKEN=$(apppass token --context 1 --user 3 --login demo@example.com)
Anyone holding the key can act as any user: this is for development and
tests, not a way to hand out access. No call is made to apppassd.
`,
	run: runToken,
}

func runToken(sys *system, c *command, args []string) int {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	u := &userFlags{}
	u.register(fs)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	pos, code, done := parseFlags(sys, c, fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return usageError(sys, c, "unexpected argument %q", pos[0])
	}
	if msg := u.check(); msg != "" {
		return usageError(sys, c, "%s", msg)
	}
	if *ttl <= 0 {
		return usageError(sys, c, "--ttl must be positive, got %v", *ttl)
	}
	// The variable is used exactly as apppassd uses it (untrimmed); the
	// file as apppassd reads it (trimmed).
	key := sys.getenv(userTokenKey.env)
	if key == "" {
		var err error
		if key, err = userTokenKey.read(sys.getenv); err != nil {
			return fail(sys, c, err)
		}
	}
	if key == "" {
		return fail(sys, c, missing(sys.getenv, userTokenKey))
	}
	tokens, err := apppass.NewUserTokens([]byte(key))
	if err != nil {
		// The message names the length, never the key.
		return fail(sys, c, &keyError{err.Error()})
	}
	fmt.Fprintln(sys.stdout, tokens.Mint(u.user(), *ttl, time.Now()))
	return exitSuccess
}
