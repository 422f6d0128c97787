package webhook

import (
	"fmt"
	"net/netip"
	"syscall"
)

// internalPrefixes are ranges outbound webhooks may not reach unless an
// endpoint allows private targets, on top of what netip classifies as
// loopback, private, link-local, multicast or unspecified.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, shared address space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: reaches IPv4 addresses, internal ones too
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated
}

// InternalAddress reports whether a is an address outbound webhooks must
// not reach by default: loopback, private (RFC 1918, fc00::/7), link-local
// (169.254/16 with the cloud metadata services, fe80::/10), unspecified,
// multicast, or one of the other internal-use ranges above.
func InternalAddress(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refuseInternal is a net.Dialer Control function: it runs for every
// connection after DNS resolution, with the address actually dialled, so a
// name that resolves (or re-resolves: DNS rebinding) to an internal
// address is refused as well as a literal one.
func refuseInternal(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("refusing to dial %q: not an IP address and port", address)
	}
	if InternalAddress(ap.Addr()) {
		return fmt.Errorf("refusing to connect to %s: a loopback, private, link-local or other internal address (the endpoint does not allow private targets)", ap.Addr())
	}
	return nil
}
