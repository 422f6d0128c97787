//go:build !linux

package main

import (
	"errors"
	"os"
)

// Elsewhere than on Linux the prompt is not implemented: a terminal on
// stdin is refused, so a password is never typed with echo on.

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func readPasswordNoEcho(*os.File) ([]byte, error) {
	return nil, errors.New("prompting without echo is not supported on this system: pipe the password in (apppass authenticate ... < file)")
}
