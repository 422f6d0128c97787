package apppass

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// App is one entry of the catalogue the UI offers in its drop-down: what an
// app password is for, which gateway protocols accept it, and which OX
// restricted scopes a session opened with it gets.
type App struct {
	Name        string `json:"name" yaml:"name"`
	DisplayName string `json:"displayName" yaml:"displayName"`
	// DisplayNames translate DisplayName, by language tag (de, fr, pt-BR):
	// the settings page shows the one of the user's language.
	DisplayNames map[string]string `json:"displayNames,omitempty" yaml:"displayNames,omitempty"`
	Sort         int               `json:"sort" yaml:"sort"`
	Protocols    []string          `json:"protocols" yaml:"protocols"`
	Scopes       []string          `json:"scopes" yaml:"scopes"`
	Settings     []Setting         `json:"settings" yaml:"settings"`
}

// Setting is one connection detail the one-time dialog shows next to the
// password, e.g. the IMAP server a phone's mail app must be pointed at.
type Setting struct {
	Protocol string `json:"protocol" yaml:"protocol"`
	Host     string `json:"host,omitempty" yaml:"host,omitempty"`
	Port     int    `json:"port,omitempty" yaml:"port,omitempty"`
	Security string `json:"security,omitempty" yaml:"security,omitempty"` // ssl, starttls or none
	URL      string `json:"url,omitempty" yaml:"url,omitempty"`
}

// Catalogue is the validated, immutable set of apps, sorted for display.
type Catalogue struct {
	apps      []App
	byName    map[string]*App
	protocols map[string][]string // protocol -> names of the apps allowed on it
}

// Protocols a gateway may name in authenticate. A catalogue may only use these.
var knownProtocols = []string{"imap", "pop3", "smtp", "caldav", "carddav", "webdav", "drive", "eas"}

// languageTag is what a display name's language may be: a BCP 47
// language with an optional region or script (de, de-CH, pt-BR, zh-Hant).
var languageTag = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,4})?$`)

// NewCatalogue validates apps and indexes them.
func NewCatalogue(apps []App) (*Catalogue, error) {
	if len(apps) == 0 {
		return nil, fmt.Errorf("the catalogue has no apps")
	}
	c := &Catalogue{apps: slices.Clone(apps), byName: map[string]*App{}, protocols: map[string][]string{}}
	slices.SortStableFunc(c.apps, func(a, b App) int { return a.Sort - b.Sort })
	for i := range c.apps {
		a := &c.apps[i]
		if a.Name == "" || strings.TrimSpace(a.DisplayName) == "" {
			return nil, fmt.Errorf("app %d: name and displayName are required", i+1)
		}
		for lang, name := range a.DisplayNames {
			if !languageTag.MatchString(lang) || strings.TrimSpace(name) == "" || len(name) > 128 {
				return nil, fmt.Errorf("app %q: displayNames: %q must be a language tag (de, pt-BR) with a name of 1 to 128 bytes", a.Name, lang)
			}
		}
		if _, dup := c.byName[a.Name]; dup {
			return nil, fmt.Errorf("app %q: listed twice", a.Name)
		}
		if len(a.Protocols) == 0 {
			return nil, fmt.Errorf("app %q: no protocols", a.Name)
		}
		for _, p := range a.Protocols {
			if !slices.Contains(knownProtocols, p) {
				return nil, fmt.Errorf("app %q: unknown protocol %q (known: %s)", a.Name, p, strings.Join(knownProtocols, ", "))
			}
			c.protocols[p] = append(c.protocols[p], a.Name)
		}
		if a.Scopes == nil {
			a.Scopes = []string{}
		}
		if a.Settings == nil {
			a.Settings = []Setting{}
		}
		c.byName[a.Name] = a
	}
	return c, nil
}

// Apps returns the catalogue in display order.
func (c *Catalogue) Apps() []App { return c.apps }

// App looks an app up by name.
func (c *Catalogue) App(name string) (*App, bool) {
	a, ok := c.byName[name]
	return a, ok
}

// AppsAllowedOn returns the names of the apps whose passwords a gateway may
// accept on protocol, or false if no app in the catalogue uses it.
func (c *Catalogue) AppsAllowedOn(protocol string) ([]string, bool) {
	names, ok := c.protocols[protocol]
	return names, ok
}

// KnownProtocol reports whether protocol is one a gateway may name.
func KnownProtocol(protocol string) bool { return slices.Contains(knownProtocols, protocol) }

// BuiltinApps is OX App Suite's catalogue of application-password apps, with
// connection settings pointing at host.
func BuiltinApps(host string) []App {
	web := func(path string) string { return "https://" + host + path }
	mailScopes := []string{"read_mail", "write_mail", "read_contacts"}
	calScopes := []string{"read_caldav", "write_caldav", "read_calendar", "write_calendar", "read_tasks", "write_tasks"}
	cardScopes := []string{"read_carddav", "write_carddav", "read_contacts", "write_contacts"}
	return []App{
		{Name: "mail", DisplayName: "Mail App", DisplayNames: map[string]string{"de": "Mail-App"}, Sort: 10, Protocols: []string{"imap", "pop3", "smtp"}, Scopes: mailScopes,
			Settings: []Setting{
				{Protocol: "imap", Host: host, Port: 993, Security: "ssl"},
				{Protocol: "pop3", Host: host, Port: 995, Security: "ssl"},
				{Protocol: "smtp", Host: host, Port: 587, Security: "starttls"},
			}},
		{Name: "drive", DisplayName: "Drive Sync App", DisplayNames: map[string]string{"de": "Drive-Sync-App"}, Sort: 20, Protocols: []string{"drive"},
			Scopes:   []string{"read_drive", "write_drive"},
			Settings: []Setting{{Protocol: "drive", URL: web("/")}}},
		{Name: "caldav", DisplayName: "Calendar Client (CalDAV)", DisplayNames: map[string]string{"de": "Kalender-Programm (CalDAV)"}, Sort: 30, Protocols: []string{"caldav"}, Scopes: calScopes,
			Settings: []Setting{{Protocol: "caldav", URL: web("/caldav/")}}},
		{Name: "carddav", DisplayName: "Address Book Client (CardDAV)", DisplayNames: map[string]string{"de": "Adressbuch-Programm (CardDAV)"}, Sort: 40, Protocols: []string{"carddav"}, Scopes: cardScopes,
			Settings: []Setting{{Protocol: "carddav", URL: web("/carddav/")}}},
		{Name: "calcarddav", DisplayName: "Calendar and Address Book Client (CalDAV/CardDAV)",
			DisplayNames: map[string]string{"de": "Kalender- und Adressbuch-Programm (CalDAV/CardDAV)"}, Sort: 50,
			Protocols: []string{"caldav", "carddav"}, Scopes: slices.Concat(calScopes, cardScopes),
			Settings: []Setting{{Protocol: "caldav", URL: web("/caldav/")}, {Protocol: "carddav", URL: web("/carddav/")}}},
		{Name: "webdav", DisplayName: "WebDAV Client", DisplayNames: map[string]string{"de": "WebDAV-Programm"}, Sort: 60, Protocols: []string{"webdav"},
			Scopes:   []string{"read_webdav", "write_webdav"},
			Settings: []Setting{{Protocol: "webdav", URL: web("/servlet/webdav.infostore/")}}},
		{Name: "eas", DisplayName: "Exchange ActiveSync", Sort: 70, Protocols: []string{"eas"},
			Scopes:   []string{"read_mail", "write_mail", "read_calendar", "write_calendar", "read_contacts", "write_contacts", "read_tasks", "write_tasks"},
			Settings: []Setting{{Protocol: "eas", URL: web("/Microsoft-Server-ActiveSync")}}},
	}
}
