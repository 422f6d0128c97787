package apppass

import (
	"slices"
	"testing"
	"time"
)

func TestBuiltinCatalogue(t *testing.T) {
	c, err := NewCatalogue(BuiltinApps("mail.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range c.Apps() {
		names = append(names, a.Name)
		if len(a.Scopes) == 0 || len(a.Settings) == 0 {
			t.Errorf("app %s has no scopes or settings", a.Name)
		}
	}
	if want := []string{"mail", "drive", "caldav", "carddav", "calcarddav", "webdav", "eas"}; !slices.Equal(names, want) {
		t.Fatalf("apps in order %v, want %v", names, want)
	}
	imap, _ := c.AppsAllowedOn("imap")
	caldav, _ := c.AppsAllowedOn("caldav")
	if !slices.Equal(imap, []string{"mail"}) || !slices.Equal(caldav, []string{"caldav", "calcarddav"}) {
		t.Fatalf("imap apps %v, caldav apps %v", imap, caldav)
	}
	cc, _ := c.App("calcarddav")
	for _, s := range []string{"read_caldav", "write_caldav", "read_carddav", "write_carddav", "read_contacts"} {
		if !slices.Contains(cc.Scopes, s) {
			t.Errorf("calcarddav lacks scope %s", s)
		}
	}
}

func TestTranslatedDisplayNames(t *testing.T) {
	c, err := NewCatalogue([]App{{Name: "a", DisplayName: "A", Protocols: []string{"imap"}, DisplayNames: map[string]string{"de": "Ä", "pt-BR": "Á"}}})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := c.App("a"); a.DisplayNames["de"] != "Ä" || a.DisplayNames["pt-BR"] != "Á" {
		t.Fatalf("%+v", a)
	}
	for _, a := range BuiltinApps("h") {
		if a.Name != "eas" && a.DisplayNames["de"] == "" {
			t.Errorf("built-in app %s has no German name", a.Name)
		}
	}
}

func TestCatalogueRefusesBadApps(t *testing.T) {
	ok := App{Name: "a", DisplayName: "A", Protocols: []string{"imap"}}
	for name, apps := range map[string][]App{
		"empty":                        nil,
		"no name":                      {{DisplayName: "A", Protocols: []string{"imap"}}},
		"no display name":              {{Name: "a", Protocols: []string{"imap"}}},
		"duplicate":                    {ok, ok},
		"no protocols":                 {{Name: "a", DisplayName: "A"}},
		"unknown protocol":             {{Name: "a", DisplayName: "A", Protocols: []string{"gopher"}}},
		"translation into no language": {{Name: "a", DisplayName: "A", Protocols: []string{"imap"}, DisplayNames: map[string]string{"German": "A"}}},
		"empty translation":            {{Name: "a", DisplayName: "A", Protocols: []string{"imap"}, DisplayNames: map[string]string{"de": " "}}},
	} {
		if _, err := NewCatalogue(apps); err == nil {
			t.Errorf("%s: catalogue accepted", name)
		}
	}
}

func TestPublishOrder(t *testing.T) {
	t0 := time.Unix(100, 0)
	evs := []Event{
		{ID: "r", Type: EventRevoked, Timestamp: t0},
		{ID: "u2", Type: "apppassword.used", Timestamp: t0.Add(2)},
		{ID: "c", Type: EventCreated, Timestamp: t0.Add(5)}, // a skewed clock must not put created last
		{ID: "u1", Type: "apppassword.used", Timestamp: t0.Add(1)},
	}
	slices.SortFunc(evs, PublishOrder)
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"c", "u1", "u2", "r"}) {
		t.Fatalf("order %v", ids)
	}
	e := Event{Type: EventRevoked, Data: EventData{ContextID: 3, UserID: 9}}
	if e.Subject() != "apppasswords.revoked.3.9" {
		t.Fatal(e.Subject())
	}
}
