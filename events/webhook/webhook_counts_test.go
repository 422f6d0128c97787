package webhook_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/events/webhook"
)

// counts turns DeliveryCounts into endpoint -> outcome -> n, checking that
// every configured endpoint (and the unconfigured bucket) has every outcome.
func deliveryCounts(t *testing.T, wh *webhook.Webhooks, endpoints ...string) map[string]map[string]uint64 {
	t.Helper()
	out := map[string]map[string]uint64{}
	for _, c := range wh.DeliveryCounts() {
		if out[c.Endpoint] == nil {
			out[c.Endpoint] = map[string]uint64{}
		}
		out[c.Endpoint][c.Outcome] = c.N
	}
	for _, name := range append(endpoints, webhook.UnconfiguredEndpoint) {
		if len(out[name]) != 4 {
			t.Fatalf("counts of %q: %v, want the four outcomes", name, out[name])
		}
	}
	if len(out) != len(endpoints)+1 {
		t.Fatalf("counts name endpoints %v, want %v and %s", out, endpoints, webhook.UnconfiguredEndpoint)
	}
	return out
}

// TestWebhookDeliveryCounts: each attempt's outcome is counted under its
// endpoint: delivered, retry (then delivered), gone.
func TestWebhookDeliveryCounts(t *testing.T) {
	flaky := newHookReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	gone := newHookReceiver(t, func(int) int { return http.StatusGone })
	e := newWhEnv(t, webhook.Config{Endpoints: []apppass.WebhookEndpoint{
		flaky.endpoint("flaky", apppass.EventRevoked), gone.endpoint("gone", apppass.EventRevoked),
	}})
	if c := deliveryCounts(t, e.hooks, "flaky", "gone"); c["flaky"]["delivered"]+c["gone"]["gone"] != 0 {
		t.Fatalf("counts before any delivery: %v", c)
	}
	e.addAndRemove(t)
	whWait(t, "delivered to flaky and gone disabled", func() bool {
		c := deliveryCounts(t, e.hooks, "flaky", "gone")
		return c["flaky"][webhook.DeliveryOutcomeDelivered] == 1 && c["gone"][webhook.DeliveryOutcomeGone] == 1
	})
	c := deliveryCounts(t, e.hooks, "flaky", "gone")
	want := map[string]map[string]uint64{
		"flaky":                      {"delivered": 1, "retry": 1, "failed": 0, "gone": 0},
		"gone":                       {"delivered": 0, "retry": 0, "failed": 0, "gone": 1},
		webhook.UnconfiguredEndpoint: {"delivered": 0, "retry": 0, "failed": 0, "gone": 0},
	}
	for ep, outcomes := range want {
		for o, n := range outcomes {
			if c[ep][o] != n {
				t.Errorf("%s %s = %d, want %d (all: %v)", ep, o, c[ep][o], n, c)
			}
		}
	}
}

// TestWebhookDeliveryCountsFailed: the attempt that gives a delivery up
// counts as failed, the ones before it as retries.
func TestWebhookDeliveryCountsFailed(t *testing.T) {
	broken := newHookReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	e := newWhEnv(t, webhook.Config{
		Endpoints: []apppass.WebhookEndpoint{broken.endpoint("broken", apppass.EventRevoked)},
		RetryFor:  300 * time.Millisecond,
	})
	e.addAndRemove(t)
	// The count follows the stored outcome: wait for both.
	whWait(t, "failed", func() bool {
		return len(e.deliveries(t, apppass.WebhookQuery{State: apppass.DeliveryFailed})) == 1 &&
			deliveryCounts(t, e.hooks, "broken")["broken"]["failed"] == 1
	})
	attempts := e.deliveries(t, apppass.WebhookQuery{})[0].Attempts
	c := deliveryCounts(t, e.hooks, "broken")["broken"]
	if c["failed"] != 1 || c["retry"] != uint64(attempts-1) || c["delivered"] != 0 || c["gone"] != 0 {
		t.Fatalf("counts %v after %d attempts", c, attempts)
	}
}
