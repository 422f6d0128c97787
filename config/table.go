package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/apppass/apppass"
)

// setting describes one value of a binary's configuration T: its variable,
// flag, default and help, and how it is checked and stored in T. A table
// of them is the single list --help and docs/settings.md follow.
type setting[T any] struct {
	env, flag, def, help string
	// apply checks v and stores it in c; nil marks the setting that names
	// the config file.
	apply func(c *T, v string) error
}

// secret reports whether the setting's value is never shown in an error.
func (s setting[T]) secret() bool {
	return strings.Contains(s.env, "KEY") || strings.Contains(s.env, "SECRET") || strings.Contains(s.env, "PASSWORD") || s.env == "APPPASS_PEPPER"
}

// table is the settings of one binary, with what its --help says first.
type table[T any] struct {
	program, usage string
	settings       []setting[T]
}

// load builds a T from args (without the program name), the environment
// and, if the table has a config-file setting and it is set, that file: a
// flag wins over the environment, which wins over the file, which wins
// over the default. It returns flag.ErrHelp after printing --help to out.
func (t table[T]) load(args []string, getenv func(string) string, out io.Writer) (*T, error) {
	fs := flag.NewFlagSet(t.program, flag.ContinueOnError)
	fs.SetOutput(out)
	fromFlags := map[string]*string{}
	for _, s := range t.settings {
		fromFlags[s.flag] = fs.String(s.flag, s.def, s.help+" ($"+s.env+")")
	}
	fs.Usage = func() {
		fmt.Fprint(out, t.usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	values := map[string]string{}
	for _, s := range t.settings {
		if v := getenv(s.env); v != "" {
			values[s.env] = v
		}
		if set[s.flag] {
			values[s.env] = *fromFlags[s.flag]
		}
	}
	if i := slices.IndexFunc(t.settings, func(s setting[T]) bool { return s.apply == nil }); i >= 0 && values[t.settings[i].env] != "" {
		s := t.settings[i]
		fileValues, err := readFile(values[s.env], t.settings)
		if err != nil {
			return nil, fmt.Errorf("config: %s (--%s): %v", s.env, s.flag, err)
		}
		for k, v := range fileValues {
			if _, ok := values[k]; !ok {
				values[k] = v
			}
		}
	}
	c := new(T)
	for _, s := range t.settings {
		v, ok := values[s.env]
		if !ok {
			v = s.def
		}
		if s.apply == nil {
			continue
		}
		if err := s.apply(c, v); err != nil {
			shown := apppass.RedactURL(v)
			if s.secret() {
				shown = "(hidden)"
			}
			return nil, fmt.Errorf("config: %s (--%s): %v, got %q", s.env, s.flag, err, shown)
		}
	}
	return c, nil
}

// readFile reads a config file: a YAML (or JSON) mapping whose keys are
// variable names (APPPASS_LISTEN) or flag names (listen) of settings.
func readFile[T any](path string, settings []setting[T]) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	out := map[string]string{}
	for k, v := range m {
		i := slices.IndexFunc(settings, func(s setting[T]) bool { return s.env == k || s.flag == k })
		if i < 0 || settings[i].apply == nil {
			return nil, fmt.Errorf("%s: unknown setting %q", path, k)
		}
		switch v.(type) {
		case string, int, float64, bool:
			out[settings[i].env] = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("%s: setting %q must be a string or a number", path, k)
		}
	}
	return out, nil
}
