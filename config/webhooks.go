package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/stdwebhook"
)

// readWebhooksFile reads the outbound webhook endpoints (APPPASS_WEBHOOKS_FILE):
//
//	endpoints:
//	  - name: crm
//	    url: https://crm.example.com/hooks/apppass
//	    secret: whsec_…
//	    events: [apppassword.revoked]   # optional; all when left out
//	    allowPrivate: false             # optional
//
// An empty path means no endpoints.
func readWebhooksFile(path string) ([]apppass.WebhookEndpoint, error) {
	if path == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Endpoints []apppass.WebhookEndpoint `yaml:"endpoints"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Base(path), err)
	}
	if len(file.Endpoints) == 0 {
		return nil, fmt.Errorf("%s: no endpoints", filepath.Base(path))
	}
	seen := map[string]bool{}
	for i := range file.Endpoints {
		e := &file.Endpoints[i]
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %v", filepath.Base(path), err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("%s: endpoint %q is listed twice", filepath.Base(path), e.Name)
		}
		seen[e.Name] = true
	}
	return file.Endpoints, nil
}

// parseSecrets reads comma-separated whsec_ secrets.
func parseSecrets(v string) ([]stdwebhook.Secret, error) {
	var out []stdwebhook.Secret
	for entry := range strings.SplitSeq(v, ",") {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		s, err := stdwebhook.ParseSecret(entry)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %v", len(out)+1, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func boolean(v string, into *bool) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("must be true or false")
	}
	*into = b
	return nil
}
