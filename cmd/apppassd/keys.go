package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/config"
	"github.com/apppass/apppass/config/datadir"
)

// keys are the secrets apppassd works with.
type keys struct {
	digester *apppass.Digester
	tokens   *apppass.UserTokens
	service  []apppass.ServiceKey
}

// loadKeys reads the configured keys or, on the embedded default, the
// ones kept in the data dir (generated on first start).
func loadKeys(cfg *config.Config) (*keys, error) {
	embedded := cfg.EmbeddedStore()
	pepper, err := secretFromConfigOrFile(cfg.Pepper, cfg.DataFile(datadir.PepperFile), embedded)
	if err != nil {
		return nil, err
	}
	k := &keys{service: cfg.ServiceKeys}
	if k.digester, err = apppass.NewDigester([]byte(pepper)); err != nil {
		return nil, err
	}
	tokenKey, err := secretFromConfigOrFile(cfg.UserTokenKey, cfg.DataFile(datadir.UserTokenKeyFile), embedded)
	if err != nil {
		return nil, err
	}
	if k.tokens, err = apppass.NewUserTokens([]byte(tokenKey)); err != nil {
		return nil, err
	}
	if len(k.service) == 0 && embedded {
		// A newcomer gets a gateway key too, to try authenticate with curl,
		// and an admin key, which the admin CLI (cmd/apppass) reads from
		// the same data dir.
		gateway, err := secretFromConfigOrFile("", cfg.DataFile(datadir.GatewayKeyFile), true)
		if err != nil {
			return nil, err
		}
		admin, err := secretFromConfigOrFile("", cfg.DataFile(datadir.AdminKeyFile), true)
		if err != nil {
			return nil, err
		}
		k.service = []apppass.ServiceKey{
			{Name: "demo-gateway", Role: apppass.RoleGateway, Secret: gateway},
			{Name: "demo-admin", Role: apppass.RoleAdmin, Secret: admin},
		}
	}
	return k, nil
}

// secretFromConfigOrFile returns the configured secret or, when allowed,
// one kept in the file at path, generated there (mode 0600) on first start
// so it survives restarts.
func secretFromConfigOrFile(configured, path string, allowFile bool) (string, error) {
	if configured != "" || !allowFile {
		return configured, nil
	}
	if raw, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(raw)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("%s cannot be written (%v): make the data dir writable by this user, or set APPPASS_DATA_DIR to one that is", path, err)
	}
	return secret, nil
}
