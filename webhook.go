package apppass

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/apppass/apppass/stdwebhook"
)

// WebhookEndpoint is one configured receiver of outbound webhooks.
type WebhookEndpoint struct {
	// Name identifies the endpoint in delivery state; [A-Za-z0-9_-], 1–64.
	Name string `yaml:"name" json:"name"`
	// URL is where events are POSTed: http or https.
	URL string `yaml:"url" json:"url"`
	// Secret signs the requests: "whsec_" + base64 of 24 to 64 bytes.
	Secret string `yaml:"secret" json:"-"`
	// Events lists the event types wanted; empty or "*" means all.
	Events []string `yaml:"events" json:"events"`
	// AllowPrivate lets the endpoint resolve to loopback, private,
	// link-local and other internal addresses, refused otherwise.
	AllowPrivate bool `yaml:"allowPrivate" json:"allowPrivate"`
}

// WebhookEventTypes are the event types an endpoint may ask for.
var WebhookEventTypes = []string{EventCreated, EventRevoked, EventFirstUse, EventNewIP}

var endpointName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate checks the endpoint's fields.
func (e *WebhookEndpoint) Validate() error {
	if !endpointName.MatchString(e.Name) {
		return fmt.Errorf("endpoint %q: name must be 1 to 64 of A-Z a-z 0-9 _ -", e.Name)
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("endpoint %q: url must be an absolute http or https URL without a fragment", e.Name)
	}
	if _, err := stdwebhook.ParseSecret(e.Secret); err != nil {
		return fmt.Errorf("endpoint %q: secret %v", e.Name, err)
	}
	for _, t := range e.Events {
		if t != "*" && !slices.Contains(WebhookEventTypes, t) {
			return fmt.Errorf("endpoint %q: unknown event type %q (known: *, %v)", e.Name, t, WebhookEventTypes)
		}
	}
	return nil
}

// Wants reports whether the endpoint receives events of type typ.
func (e *WebhookEndpoint) Wants(typ string) bool {
	return len(e.Events) == 0 || slices.Contains(e.Events, "*") || slices.Contains(e.Events, typ)
}

// Webhook delivery states.
const (
	DeliveryPending   = "pending"   // waiting for its next attempt
	DeliveryDelivered = "delivered" // the endpoint answered 2xx
	DeliveryFailed    = "failed"    // given up: retried for the whole retry period
)

// WebhookDelivery is one event on its way to one endpoint.
type WebhookDelivery struct {
	// ID is EventID + ":" + Endpoint: enqueueing one twice is a no-op.
	ID        string `json:"id"`
	EventID   string `json:"eventId"`
	EventType string `json:"eventType"`
	Endpoint  string `json:"endpoint"`
	// Body is the event exactly as it is in the NATS stream.
	Body        []byte     `json:"-"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	Created     time.Time  `json:"created"`
	NextAttempt *time.Time `json:"nextAttempt"` // while pending
	LastAttempt *time.Time `json:"lastAttempt"`
	// LastStatus is the HTTP status of the last attempt, 0 if none came.
	LastStatus int        `json:"lastStatus,omitempty"`
	LastError  string     `json:"lastError,omitempty"`
	Finished   *time.Time `json:"finished"` // when delivered or failed
	// LeaseToken identifies the claim the delivery was handed out under.
	LeaseToken string `json:"-"`
}

// WebhookOutcome is the result of one delivery attempt.
type WebhookOutcome struct {
	State       string    // DeliveryPending (retry), DeliveryDelivered or DeliveryFailed
	At          time.Time // when the attempt was made
	NextAttempt time.Time // for DeliveryPending
	Status      int
	Error       string
	// Counted is false for an attempt that was cut short by shutdown.
	Counted bool
}

// WebhookQuery selects deliveries to show; empty fields match all.
type WebhookQuery struct {
	State    string
	Endpoint string
	Limit    int
}

// WebhookEndpointState is the stored state of an endpoint.
type WebhookEndpointState struct {
	Name string
	// URL is the endpoint's URL when it was disabled: the state applies
	// only while the configured URL is the same.
	URL      string
	Disabled time.Time
	Reason   string
}

// WebhookEndpointStatus is what admins see of an endpoint.
type WebhookEndpointStatus struct {
	Name         string   `json:"name"`
	URL          string   `json:"url"`
	Events       []string `json:"events"`
	AllowPrivate bool     `json:"allowPrivate"`
	// State is "enabled" or "disabled".
	State    string           `json:"state"`
	Disabled *WebhookDisabled `json:"disabled"`
	// Deliveries counts the endpoint's deliveries by state.
	Deliveries map[string]int64 `json:"deliveries"`
}

// WebhookDisabled says when and why an endpoint was disabled.
type WebhookDisabled struct {
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
}
