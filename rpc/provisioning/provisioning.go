// Package provisioning answers POST /webhooks/provisioning, where a
// provisioning system tells apppassd of deleted users and contexts and of
// changed passwords, signed the Standard Webhooks way.
package provisioning

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/rpc/internal/edge"
	"github.com/apppass/apppass/stdwebhook"
)

// Message types accepted on POST /webhooks/provisioning.
const (
	UserDeleted     = "user.deleted"          // data: {contextId, userId}
	ContextDeleted  = "context.deleted"       // data: {contextId}
	PasswordChanged = "user.password_changed" // data: {contextId, userId}
)

// MaxBodyBytes bounds a message.
const MaxBodyBytes = edge.MaxBodyBytes

// Handler answers POST /webhooks/provisioning.
type Handler struct {
	Service *apppass.Service
	// Config configures the webhook; nil answers 404.
	Config *Config
	Logger *slog.Logger
}

// Config configures POST /webhooks/provisioning.
type Config struct {
	// Secrets verify the signature; any one may match (rotation).
	Secrets []stdwebhook.Secret
	IDs     apppass.ReplayStore
	// RevokeOnPasswordChange makes user.password_changed revoke all of
	// the user's app passwords; otherwise it is acknowledged and ignored.
	RevokeOnPasswordChange bool
	// Tolerance bounds webhook-timestamp's distance from now (default 5 min).
	Tolerance time.Duration
	// RememberFor is how long processed webhook-ids are kept (default 24 h;
	// it must exceed Tolerance, after which a captured request is stale).
	RememberFor time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	lastPurge atomic.Int64
}

// provisioningWork bounds the revocations of one message. They run on
// even if the sender hangs up, so a retry finds less to do.
const provisioningWork = 2 * time.Minute

func (p *Config) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// ServeHTTP answers POST /webhooks/provisioning. The signature, the
// timestamp and the webhook-id are checked before the body is looked at;
// each refusal is a 4xx with {"error": "..."} and changes nothing.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.Config
	if p == nil {
		edge.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "provisioning webhooks are not configured (APPPASS_PROVISIONING_SECRET)"})
		return
	}
	if r.ContentLength > MaxBodyBytes {
		edge.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body exceeds 1 MiB"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			edge.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body exceeds 1 MiB"})
			return
		}
		edge.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read the request body"})
		return
	}
	tolerance := p.Tolerance
	if tolerance <= 0 {
		tolerance = stdwebhook.DefaultTolerance
	}
	verifier := stdwebhook.Verifier{Secrets: p.Secrets, Tolerance: tolerance, Now: p.now}
	id, err := verifier.Verify(r.Header.Get, body)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, stdwebhook.ErrStale) {
			msg = fmt.Sprintf("webhook-timestamp is more than %s away from now", tolerance)
		}
		h.logger(r.Context()).Warn("provisioning webhook refused", "err", err, "remote", r.RemoteAddr)
		edge.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), provisioningWork)
	defer cancel()
	h.purge(ctx)
	seen, err := p.IDs.SeenWebhookID(ctx, id)
	if err != nil {
		h.failed(ctx, w, err, id)
		return
	}
	if seen {
		edge.WriteJSON(w, http.StatusConflict, map[string]string{"error": "webhook-id " + id + " was already processed"})
		return
	}
	msg, err := parse(body)
	if err != nil {
		edge.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	result := map[string]any{"status": "done", "type": msg.Type, "revoked": 0}
	var n int
	switch msg.Type {
	case UserDeleted:
		n, err = h.Service.RemoveAll(ctx, apppass.User{ContextID: msg.ContextID, UserID: msg.UserID}, nil, apppass.ReasonUserDeleted)
	case ContextDeleted:
		n, err = h.Service.RemoveContext(ctx, msg.ContextID, apppass.ReasonContextDeleted)
	case PasswordChanged:
		if !p.RevokeOnPasswordChange {
			result["status"] = "ignored"
			result["reason"] = "APPPASS_REVOKE_ON_PASSWORD_CHANGE is off"
			break
		}
		n, err = h.Service.RemoveAll(ctx, apppass.User{ContextID: msg.ContextID, UserID: msg.UserID}, nil, apppass.ReasonPasswordChanged)
	}
	if err != nil {
		// Some may be revoked already: a retry (same webhook-id, not yet
		// remembered) revokes the rest.
		h.failed(ctx, w, err, id)
		return
	}
	result["revoked"] = n
	// Remembered only once done, so a message that failed halfway can be
	// retried; processing one twice at the same moment is harmless.
	if err := p.IDs.RememberWebhookID(ctx, id, p.now()); err != nil {
		h.logger(ctx).Warn("provisioning webhook: could not remember its webhook-id", "id", id, "err", err)
	}
	h.logger(ctx).Info("provisioning webhook", "id", id, "type", msg.Type, "contextId", msg.ContextID,
		"userId", msg.UserID, "status", result["status"], "revoked", n)
	edge.WriteJSON(w, http.StatusOK, result)
}

func (h Handler) failed(ctx context.Context, w http.ResponseWriter, err error, id string) {
	if apppass.KindOf(err) == apppass.KindUnavailable {
		h.logger(ctx).Warn("provisioning webhook: backing service unavailable", "id", id, "err", err)
		edge.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "a backing service (MongoDB) is unavailable; retry later"})
		return
	}
	h.logger(ctx).Error("provisioning webhook: internal error", "id", id, "err", err)
	edge.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
}

func (h Handler) logger(ctx context.Context) *slog.Logger { return edge.Logger(ctx, h.Logger) }

// purge forgets old webhook-ids, at most every ten minutes.
func (h Handler) purge(ctx context.Context) {
	p := h.Config
	now := p.now()
	last := p.lastPurge.Load()
	if now.UnixNano()-last < int64(10*time.Minute) || !p.lastPurge.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	keep := p.RememberFor
	if keep <= 0 {
		keep = 24 * time.Hour
	}
	if err := p.IDs.PurgeWebhookIDs(ctx, now.Add(-keep)); err != nil {
		h.logger(ctx).Warn("provisioning webhook: purging old webhook-ids failed", "err", err)
	}
}

// message is a parsed provisioning payload:
//
//	{"type": "user.deleted", "timestamp": "…", "data": {"contextId": 1, "userId": 5}}
//
// timestamp is optional and not used (webhook-timestamp is what counts);
// members not named here are ignored, as Standard Webhooks asks receivers
// to, for forward compatibility.
type message struct {
	Type      string
	ContextID int64
	UserID    int64
}

func parse(body []byte) (message, error) {
	var m message
	body = bytes.TrimSpace(body)
	var top map[string]json.RawMessage
	if len(body) == 0 || body[0] != '{' || json.Unmarshal(body, &top) != nil {
		return m, errors.New("the body must be a JSON object {type, timestamp, data}")
	}
	rawType, ok := top["type"]
	if !ok || len(rawType) == 0 || rawType[0] != '"' || json.Unmarshal(rawType, &m.Type) != nil {
		return m, errors.New(`"type" must be a string`)
	}
	wantUser := false
	switch m.Type {
	case UserDeleted, PasswordChanged:
		wantUser = true
	case ContextDeleted:
	default:
		return m, fmt.Errorf("unknown type %q: must be %s, %s or %s", m.Type,
			UserDeleted, ContextDeleted, PasswordChanged)
	}
	var data map[string]json.RawMessage
	rawData := bytes.TrimSpace(top["data"])
	if len(rawData) == 0 || rawData[0] != '{' || json.Unmarshal(rawData, &data) != nil {
		return m, errors.New(`"data" must be an object`)
	}
	var err error
	if m.ContextID, err = idField(data, "contextId"); err != nil {
		return m, err
	}
	if wantUser {
		if m.UserID, err = idField(data, "userId"); err != nil {
			return m, err
		}
	}
	return m, nil
}

// idField reads a required non-negative whole number: digits only, so no
// string, fraction, exponent or sign gets through.
func idField(data map[string]json.RawMessage, name string) (int64, error) {
	raw, ok := data[name]
	if !ok {
		return 0, fmt.Errorf(`"data.%s" is required`, name)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 || raw[0] == '+' || raw[0] == '-' || (len(raw) > 1 && raw[0] == '0') {
		return 0, fmt.Errorf(`"data.%s" must be a non-negative whole number`, name)
	}
	return n, nil
}
