package jsonrpc

import "slices"

// OpenRPCDocument is the embedded document, for openrpc_test.go.
var OpenRPCDocument = openrpcDocument

// MethodNames lists the method table, sorted.
func MethodNames() []string {
	names := make([]string, 0, len(methods))
	for name := range methods {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
