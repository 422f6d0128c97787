package jsonrpc

import (
	"context"
	"encoding/json"

	"github.com/apppass/apppass"
)

// who says which callers may call a method: a set of the kinds below.
type who uint8

const (
	// users are user tokens, except those of a session opened with an app
	// password.
	users who = 1 << iota
	// appPasswordSessions are user tokens of a session opened with an app
	// password: they may not change or reveal app passwords.
	appPasswordSessions
	gateways // gateway service keys
	admins   // admin service keys

	// anyUser is every user token.
	anyUser  = users | appPasswordSessions
	everyone = anyUser | gateways | admins
)

// A method is one JSON-RPC method: who may call it and what it does.
type method struct {
	who    who
	handle handler
}

// A handler runs one call: it decodes r.Params, checks what the service
// does not, and calls it.
type handler func(ctx context.Context, r request) (any, error)

// request is what a handler works with: the caller, the call's params and
// the dependencies of the Handler.
type request struct {
	Handler
	Caller apppass.Caller
	Params json.RawMessage
}

// Methods are named after the OX appPasswords HTTP module's actions.
var methods = map[string]method{
	"appPasswords.getApps": {anyUser | admins, func(_ context.Context, r request) (any, error) {
		if err := decodeParams(r.Params); err != nil {
			return nil, err
		}
		return r.Service.GetApps(), nil
	}},
	"appPasswords.add": {users | admins, func(ctx context.Context, r request) (any, error) {
		var req apppass.AddRequest
		owner, err := decodeForUser(r.Caller, r.Params, str("appScope", &req.AppScope, true), str("appName", &req.AppName, true),
			optionalStr("expires", &req.Expires), optionalStr("idleExpiry", &req.IdleExpiry), strList("allowedIPs", &req.AllowedIPs))
		if err != nil {
			return nil, err
		}
		if err := r.Service.CheckReauth(r.Caller); err != nil {
			return nil, err
		}
		return r.Service.Add(ctx, owner, req)
	}},
	"appPasswords.list": {users | admins, func(ctx context.Context, r request) (any, error) {
		owner, err := decodeForUser(r.Caller, r.Params)
		if err != nil {
			return nil, err
		}
		return r.Service.List(ctx, owner)
	}},
	"appPasswords.remove": {users | admins, func(ctx context.Context, r request) (any, error) {
		var uuid string
		owner, err := decodeForUser(r.Caller, r.Params, str("uuid", &uuid, true))
		if err != nil {
			return nil, err
		}
		if err := r.Service.Remove(ctx, owner, uuid, reasonOf(r.Caller)); err != nil {
			return nil, err
		}
		return map[string]string{"result": "OK"}, nil
	}},
	"appPasswords.removeAll": {users | admins, func(ctx context.Context, r request) (any, error) {
		var appScope *string
		owner, err := decodeForUser(r.Caller, r.Params, optionalStr("appScope", &appScope))
		if err != nil {
			return nil, err
		}
		n, err := r.Service.RemoveAll(ctx, owner, appScope, reasonOf(r.Caller))
		if err != nil {
			return nil, err
		}
		return map[string]int{"removed": n}, nil
	}},
	"appPasswords.authenticate": {gateways | admins, func(ctx context.Context, r request) (_ any, err error) {
		var a apppass.LoginAttempt
		defer func() {
			if r.Metrics != nil {
				r.Metrics.ObserveLogin(a.Protocol, err)
			}
		}()
		err = decodeParams(r.Params,
			str("login", &a.Login, true), str("password", &a.Password, true), str("protocol", &a.Protocol, true),
			str("ip", &a.IP, false), str("device", &a.Device, false), str("userAgent", &a.UserAgent, false))
		if err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name, v string
			max     int
		}{{"login", a.Login, 256}, {"ip", a.IP, 64}, {"device", a.Device, 256}, {"userAgent", a.UserAgent, 512}} {
			if err := maxLen(f.name, f.v, f.max); err != nil {
				return nil, err
			}
		}
		return r.Service.Authenticate(ctx, a)
	}},
	// Who the token is for: the settings page shows "Signed in as", and
	// asks before a link for another account replaces its session.
	"appPasswords.whoami": {everyone, func(_ context.Context, r request) (any, error) {
		if err := decodeParams(r.Params); err != nil {
			return nil, err
		}
		c := r.Caller
		if c.Role != apppass.RoleUser {
			return whoami{Role: c.Role.String(), Name: c.Name}, nil
		}
		u := c.User
		return whoami{Role: c.Role.String(), Login: u.Login, ContextID: &u.ContextID, UserID: &u.UserID, ViaAppPassword: &c.ViaAppPassword}, nil
	}},
	// Outbound webhooks' state, for admins (admin.go).
	"webhooks.endpoints":  {admins, webhookEndpoints},
	"webhooks.deliveries": {admins, webhookDeliveries},
	"webhooks.enable":     {admins, webhookEnable},
	// The Dovecots kicked on revocations, for admins (admin.go).
	"doveadm.targets": {admins, doveadmTargets},
	// OpenRPC service discovery (openrpc.go): describes the methods
	// above, which is no secret, so every caller may ask.
	"rpc.discover": {everyone, rpcDiscover},
}

// unknownMethod is the method label, in logs and metrics, of a name not in
// the method table: a caller cannot make up label values.
const unknownMethod = "unknown"

func methodLabel(name string) string {
	if _, ok := methods[name]; ok {
		return name
	}
	return unknownMethod
}

// whoami is appPasswords.whoami's result: the user of a user token, or the
// name of a service key.
type whoami struct {
	Role           string `json:"role"`
	Name           string `json:"name,omitempty"`
	Login          string `json:"login,omitempty"`
	ContextID      *int64 `json:"contextId,omitempty"`
	UserID         *int64 `json:"userId,omitempty"`
	ViaAppPassword *bool  `json:"viaAppPassword,omitempty"`
}

var (
	errGatewayOnly   = &apppass.Error{Kind: apppass.KindForbidden, Message: "gateway keys may only call appPasswords.authenticate (and rpc.discover, appPasswords.whoami)"}
	errNotForUsers   = &apppass.Error{Kind: apppass.KindForbidden, Message: "only gateway and admin keys may call this method"}
	errViaAppPasswd  = &apppass.Error{Kind: apppass.KindForbidden, Message: "a session opened with an app password may not manage app passwords"}
	errUserParamDeny = &apppass.Error{Kind: apppass.KindForbidden, Message: "only admin keys may name a user"}
	errAdminOnly     = &apppass.Error{Kind: apppass.KindForbidden, Message: "only admin keys may call this method"}
)

// whoIs is the kind of caller c is.
func whoIs(c apppass.Caller) who {
	switch {
	case c.Role == apppass.RoleAdmin:
		return admins
	case c.Role == apppass.RoleGateway:
		return gateways
	case c.Role == apppass.RoleUser && c.ViaAppPassword:
		return appPasswordSessions
	case c.Role == apppass.RoleUser:
		return users
	}
	return 0
}

// allows decides whether c may call a method for w, and says why not.
func (w who) allows(c apppass.Caller) error {
	switch {
	case w&whoIs(c) != 0:
		return nil
	case w == admins:
		return errAdminOnly
	case c.Role == apppass.RoleGateway:
		return errGatewayOnly
	case w&users != 0: // so c's session was opened with an app password
		return errViaAppPasswd
	}
	return errNotForUsers
}

// decodeForUser decodes a management method's params and returns whose app
// passwords it is about: the token's user, or for admins the "user" param.
func decodeForUser(c apppass.Caller, raw json.RawMessage, params ...param) (apppass.User, error) {
	var named apppass.User
	var given bool
	if err := decodeParams(raw, append(params, userParam(&named, &given))...); err != nil {
		return apppass.User{}, err
	}
	switch {
	case c.Role == apppass.RoleAdmin && !given:
		return apppass.User{}, apppass.Invalid("user", "is required for admin callers")
	case c.Role == apppass.RoleAdmin:
		return named, nil
	case given:
		return apppass.User{}, errUserParamDeny
	}
	return c.User, nil
}

func reasonOf(c apppass.Caller) string {
	if c.Role == apppass.RoleAdmin {
		return apppass.ReasonAdmin
	}
	return apppass.ReasonUser
}
