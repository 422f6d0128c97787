//go:build !unix

package sqlite

import "os"

// lockFile only creates path where flock is not available: there, keeping
// two apppassd off one data dir is the operator's job.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
