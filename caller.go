package apppass

import "time"

import "strings"

// User identifies a groupware user the way OX does: a context and a user id
// within it, plus the login name the user signs in with.
type User struct {
	ContextID int64  `json:"contextId"`
	UserID    int64  `json:"userId"`
	Login     string `json:"login"`
}

// LoginKey is the form logins are compared in: case-insensitively.
func LoginKey(login string) string { return strings.ToLower(strings.TrimSpace(login)) }

// Role says what kind of caller is on the line.
type Role int

const (
	RoleUser    Role = iota // a groupware user, from a user token
	RoleGateway             // a protocol gateway: may only authenticate
	RoleAdmin               // an operator's service: may do anything for any user
)

func (r Role) String() string {
	switch r {
	case RoleGateway:
		return "gateway"
	case RoleAdmin:
		return "admin"
	default:
		return "user"
	}
}

// Caller is who made a call, as established by rpc/ from the bearer token.
type Caller struct {
	Role Role
	// Name is the service key's name for gateways and admins, the login for users.
	Name string
	// User is the token's user; zero for service keys.
	User User
	// ViaAppPassword is set when the user's own session was opened with an
	// app password: such a session may not manage app passwords (as in OX).
	ViaAppPassword bool
	// AuthTime is when the user last authenticated, if the token says
	// (auth_time); AMR how (amr). add may ask for both to be recent or
	// strong enough.
	AuthTime time.Time
	AMR      []string
}

// ServiceKey is a configured credential for a gateway or an admin service.
type ServiceKey struct {
	Name   string
	Role   Role
	Secret string
}
