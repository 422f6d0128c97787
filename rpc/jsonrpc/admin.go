package jsonrpc

import (
	"context"
	"encoding/json"
	"math"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/dovecot"
)

// DoveadmAdmin is what admins see of the Dovecots kicked on revocations
// (implemented by dovecot.Kicker).
type DoveadmAdmin interface {
	Targets(ctx context.Context) []dovecot.TargetStatus
}

// doveadmTargets answers doveadm.targets: every configured Dovecot with
// its state, the events it has not handled yet and its request counts.
func doveadmTargets(ctx context.Context, r request) (any, error) {
	if err := decodeParams(r.Params); err != nil {
		return nil, err
	}
	if r.Doveadm == nil {
		return []dovecot.TargetStatus{}, nil
	}
	return r.Doveadm.Targets(ctx), nil
}

// WebhookAdmin is what admins see and do of the outbound webhooks
// (implemented by eventr.Webhooks).
type WebhookAdmin interface {
	Endpoints(ctx context.Context) ([]apppass.WebhookEndpointStatus, error)
	Deliveries(ctx context.Context, q apppass.WebhookQuery) ([]apppass.WebhookDelivery, error)
	Enable(ctx context.Context, name string) (bool, error)
}

// Limits of webhooks.deliveries.
const (
	defaultDeliveries = 50
	maxDeliveries     = 500
)

var errNoSuchEndpoint = apppass.Invalid("endpoint", "is not a configured webhook endpoint")

// webhookEndpoints answers webhooks.endpoints: every configured endpoint
// with its state and delivery counts.
func webhookEndpoints(ctx context.Context, r request) (any, error) {
	if err := decodeParams(r.Params); err != nil {
		return nil, err
	}
	if r.Webhooks == nil {
		return []apppass.WebhookEndpointStatus{}, nil
	}
	return r.Webhooks.Endpoints(ctx)
}

// webhookDeliveries answers webhooks.deliveries({state?, endpoint?, limit?}):
// deliveries newest first.
func webhookDeliveries(ctx context.Context, r request) (any, error) {
	var q apppass.WebhookQuery
	limit := int64(defaultDeliveries)
	err := decodeParams(r.Params, str("state", &q.State, false), str("endpoint", &q.Endpoint, false),
		optionalInt("limit", &limit))
	if err != nil {
		return nil, err
	}
	switch q.State {
	case "", apppass.DeliveryPending, apppass.DeliveryDelivered, apppass.DeliveryFailed:
	default:
		return nil, apppass.Invalid("state", "must be pending, delivered or failed")
	}
	if limit < 1 || limit > maxDeliveries {
		return nil, apppass.Invalid("limit", "must be from 1 to 500")
	}
	q.Limit = int(limit)
	if r.Webhooks == nil {
		if q.Endpoint != "" {
			return nil, errNoSuchEndpoint
		}
		return []apppass.WebhookDelivery{}, nil
	}
	ds, err := r.Webhooks.Deliveries(ctx, q)
	if ds == nil && err == nil {
		ds = []apppass.WebhookDelivery{}
	}
	return ds, err
}

// webhookEnable answers webhooks.enable({endpoint}): an endpoint disabled
// by a 410 receives deliveries again.
func webhookEnable(ctx context.Context, r request) (any, error) {
	var name string
	if err := decodeParams(r.Params, str("endpoint", &name, true)); err != nil {
		return nil, err
	}
	if r.Webhooks == nil {
		return nil, errNoSuchEndpoint
	}
	was, err := r.Webhooks.Enable(ctx, name)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": true, "wasDisabled": was}, nil
}

// optionalInt reads an optional whole number (null means not given).
func optionalInt(name string, into *int64) param {
	return param{name: name, decode: func(raw json.RawMessage) error {
		if string(raw) == "null" {
			return nil
		}
		var f float64
		if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) || json.Unmarshal(raw, &f) != nil {
			return apppass.Invalid(name, "must be a number")
		}
		if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return apppass.Invalid(name, "must be a whole number")
		}
		*into = int64(f)
		return nil
	}}
}
