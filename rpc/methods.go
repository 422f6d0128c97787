package rpc

import (
	"context"
	"encoding/json"

	"github.com/apppass/apppass"
)

// A method is one JSON-RPC method: who may call it and what it does.
type method struct {
	// manages is set for the methods that change or reveal a user's app
	// passwords: users (not through an app password session) and admins.
	manages bool
	// gateway is set for methods gateways may call; admins may call all.
	gateway bool
	call    func(ctx context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error)
	// admin is set for methods only admin keys may call.
	admin bool
	// server, when set, is called instead of call, for methods that use
	// more of the Server than the Service (the webhooks).
	server func(ctx context.Context, s *Server, c apppass.Caller, params json.RawMessage) (any, error)
	// everyone is set for methods any authenticated caller may call.
	everyone bool
}

// Methods are named after the OX appPasswords HTTP module's actions.
var methods = map[string]method{
	"appPasswords.getApps": {call: func(_ context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		if err := decodeParams(params); err != nil {
			return nil, err
		}
		return svc.GetApps(), nil
	}},
	"appPasswords.add": {manages: true, call: func(ctx context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		var req apppass.AddRequest
		owner, err := decodeForUser(c, params, str("appScope", &req.AppScope, true), str("appName", &req.AppName, true),
			optionalStr("expires", &req.Expires), optionalStr("idleExpiry", &req.IdleExpiry), strList("allowedIPs", &req.AllowedIPs))
		if err != nil {
			return nil, err
		}
		if err := svc.CheckReauth(c); err != nil {
			return nil, err
		}
		return svc.Add(ctx, owner, req)
	}},
	"appPasswords.list": {manages: true, call: func(ctx context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		owner, err := decodeForUser(c, params)
		if err != nil {
			return nil, err
		}
		return svc.List(ctx, owner)
	}},
	"appPasswords.remove": {manages: true, call: func(ctx context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		var uuid string
		owner, err := decodeForUser(c, params, str("uuid", &uuid, true))
		if err != nil {
			return nil, err
		}
		if err := svc.Remove(ctx, owner, uuid, reasonOf(c)); err != nil {
			return nil, err
		}
		return map[string]string{"result": "OK"}, nil
	}},
	"appPasswords.removeAll": {manages: true, call: func(ctx context.Context, svc *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		var appScope *string
		owner, err := decodeForUser(c, params, optionalStr("appScope", &appScope))
		if err != nil {
			return nil, err
		}
		n, err := svc.RemoveAll(ctx, owner, appScope, reasonOf(c))
		if err != nil {
			return nil, err
		}
		return map[string]int{"removed": n}, nil
	}},
	"appPasswords.authenticate": {gateway: true, server: func(ctx context.Context, s *Server, _ apppass.Caller, params json.RawMessage) (_ any, err error) {
		var a apppass.LoginAttempt
		defer func() { s.Metrics.observeLogin(a.Protocol, err) }()
		err = decodeParams(params,
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
		return s.Service.Authenticate(ctx, a)
	}},
	// Who the token is for: the settings page shows "Signed in as", and
	// asks before a link for another account replaces its session.
	"appPasswords.whoami": {everyone: true, call: func(_ context.Context, _ *apppass.Service, c apppass.Caller, params json.RawMessage) (any, error) {
		if err := decodeParams(params); err != nil {
			return nil, err
		}
		if c.Role != apppass.RoleUser {
			return whoami{Role: c.Role.String(), Name: c.Name}, nil
		}
		u := c.User
		return whoami{Role: c.Role.String(), Login: u.Login, ContextID: &u.ContextID, UserID: &u.UserID, ViaAppPassword: &c.ViaAppPassword}, nil
	}},
	// Outbound webhooks' state, for admins (rpc/webhooks.go).
	"webhooks.endpoints":  {admin: true, server: webhookEndpoints},
	"webhooks.deliveries": {admin: true, server: webhookDeliveries},
	"webhooks.enable":     {admin: true, server: webhookEnable},
	// The Dovecots kicked on revocations, for admins (rpc/webhooks.go).
	"doveadm.targets": {admin: true, server: doveadmTargets},
	// OpenRPC service discovery (rpc/openrpc.go): describes the methods
	// above, which is no secret, so every caller may ask.
	"rpc.discover": {everyone: true, call: rpcDiscover},
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

// allowed decides whether c may call m.
func (m method) allowed(c apppass.Caller) error {
	if m.everyone {
		return nil
	}
	if m.admin && c.Role != apppass.RoleAdmin {
		return errAdminOnly
	}
	switch c.Role {
	case apppass.RoleAdmin:
		return nil
	case apppass.RoleGateway:
		if !m.gateway {
			return errGatewayOnly
		}
	case apppass.RoleUser:
		if m.gateway {
			return errNotForUsers
		}
		if m.manages && c.ViaAppPassword {
			return errViaAppPasswd
		}
	}
	return nil
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
