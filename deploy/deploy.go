// Package deploy holds the example gateway configurations shipped with
// apppass — nginx in front of DAV and EAS (nginx/dav.conf), nginx's mail
// proxy (nginx/mail.conf), Dovecot's checkpassword passdb
// (dovecot/apppass.conf), its Lua passdb (dovecot/apppass-lua.conf with
// dovecot/apppass.lua), its doveadm HTTP API (dovecot/doveadm.conf) and
// its high-performance login mode (dovecot/performance.conf) —
// and fills in their ${NAME} placeholders the way
// envsubst does. The tests of this package run exactly these files in the
// real nginx and Dovecot.
package deploy

import (
	"embed"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

//go:embed nginx/dav.conf nginx/mail.conf dovecot/apppass.conf dovecot/apppass-lua.conf dovecot/apppass.lua dovecot/doveadm.conf dovecot/performance.conf
var files embed.FS

// Files are the shipped configurations, by path below deploy/.
var Files = []string{"nginx/dav.conf", "nginx/mail.conf", "dovecot/apppass.conf", "dovecot/apppass-lua.conf",
	"dovecot/apppass.lua", "dovecot/doveadm.conf", "dovecot/performance.conf"}

var placeholder = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Placeholders lists the names a configuration needs, in order of first use.
func Placeholders(name string) ([]string, error) {
	raw, err := files.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(raw), "\n") {
		if isComment(line) {
			continue
		}
		for _, m := range placeholder.FindAllStringSubmatch(line, -1) {
			if !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
	}
	return names, nil
}

// Render returns the configuration name with each ${NAME} outside comments
// replaced by vars[NAME]. A placeholder without a value, or a value for no
// placeholder, is an error, as is a value with a line break or a double
// quote (both would change the file's structure, not just fill a value).
func Render(name string, vars map[string]string) (string, error) {
	raw, err := files.ReadFile(name)
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	var missing []string
	lines := strings.Split(string(raw), "\n")
	for i, line := range lines {
		if isComment(line) {
			continue
		}
		lines[i] = placeholder.ReplaceAllStringFunc(line, func(m string) string {
			key := placeholder.FindStringSubmatch(m)[1]
			v, ok := vars[key]
			if !ok {
				if !slices.Contains(missing, key) {
					missing = append(missing, key)
				}
				return m
			}
			used[key] = true
			return v
		})
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: no value for %s", name, strings.Join(missing, ", "))
	}
	for k, v := range vars {
		if !used[k] {
			return "", fmt.Errorf("%s: has no placeholder %s", name, k)
		}
		if v == "" || strings.ContainsAny(v, "\"\r\n") {
			return "", fmt.Errorf("%s: the value of %s is empty or holds a quote or a line break", name, k)
		}
	}
	return strings.Join(lines, "\n"), nil
}

// isComment reports a comment line of the configurations: "#" in nginx's
// and Dovecot's files, "--" in the Lua passdb.
func isComment(line string) bool {
	line = strings.TrimSpace(line)
	return strings.HasPrefix(line, "#") || strings.HasPrefix(line, "--")
}
