package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/apppass/apppass/deploy"
)

func TestPlaceholdersAndRender(t *testing.T) {
	want := map[string][]string{
		"nginx/dav.conf":           {"APPPASS_ADDR", "DAV_LISTEN", "SERVER_NAME", "TLS_CERT", "TLS_KEY", "DAV_UPSTREAM", "APPPASS_GATEWAY_KEY"},
		"nginx/mail.conf":          {"SERVER_NAME", "APPPASS_ADDR", "APPPASS_GATEWAY_KEY", "TLS_CERT", "TLS_KEY", "IMAP_LISTEN", "IMAPS_LISTEN", "POP3S_LISTEN", "SUBMISSION_LISTEN", "SUBMISSIONS_LISTEN"},
		"dovecot/apppass.conf":     {"APPPASS_CLI", "VMAIL_USER", "VMAIL_GROUP", "VMAIL_HOME", "APPPASS_URL", "APPPASS_GATEWAY_KEY_FILE"},
		"dovecot/apppass-lua.conf": {"APPPASS_LUA_FILE", "VMAIL_USER", "VMAIL_GROUP", "VMAIL_HOME"},
		"dovecot/apppass.lua":      {"APPPASS_URL", "APPPASS_GATEWAY_KEY_FILE"},
		"dovecot/doveadm.conf":     {"DOVEADM_API_KEY_FILE", "DOVEADM_HTTP_ADDRESS", "DOVEADM_HTTP_PORT"},
		"dovecot/performance.conf": {"LOGIN_PROCESS_MIN_AVAIL", "IMAP_PROCESS_MIN_AVAIL"},
	}
	for _, name := range deploy.Files {
		got, err := deploy.Placeholders(name)
		if err != nil || !slices.Equal(got, want[name]) {
			t.Errorf("%s: placeholders %q, %v", name, got, err)
			continue
		}
		// The envsubst example in the file's header names exactly these.
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		for _, m := range regexp.MustCompile(`envsubst '([^']*)'`).FindAllStringSubmatch(string(raw), -1) {
			for _, f := range strings.Fields(m[1]) {
				listed = append(listed, strings.Trim(f, "${}"))
			}
		}
		slices.Sort(listed)
		sorted := slices.Sorted(slices.Values(got))
		if !slices.Equal(listed, sorted) {
			t.Errorf("%s: the envsubst example names %q, the file uses %q", name, listed, sorted)
		}

		vars := map[string]string{}
		for _, p := range got {
			vars[p] = "value-of-" + p
		}
		out, err := deploy.Render(name, vars)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			comment := strings.HasPrefix(strings.TrimSpace(line), "#") || strings.HasPrefix(strings.TrimSpace(line), "--")
			if !comment && strings.Contains(line, "${") {
				t.Errorf("%s: left unfilled: %s", name, line)
			}
		}
		for _, p := range got {
			if !strings.Contains(out, "value-of-"+p) {
				t.Errorf("%s: %s not filled in", name, p)
			}
		}

		delete(vars, got[0])
		if _, err := deploy.Render(name, vars); err == nil || !strings.Contains(err.Error(), got[0]) {
			t.Errorf("%s without %s: %v", name, got[0], err)
		}
		vars[got[0]], vars["NO_SUCH_PLACEHOLDER"] = "x", "y"
		if _, err := deploy.Render(name, vars); err == nil {
			t.Errorf("%s: an unknown variable is accepted", name)
		}
		delete(vars, "NO_SUCH_PLACEHOLDER")
		vars[got[0]] = "two\nlines"
		if _, err := deploy.Render(name, vars); err == nil {
			t.Errorf("%s: a line break in a value is accepted", name)
		}
	}
}
