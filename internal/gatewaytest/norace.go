//go:build !race

package gatewaytest

// RaceEnabled reports whether this test binary was built with -race.
const RaceEnabled = false
