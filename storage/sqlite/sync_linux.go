package sqlite

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data to disk (its metadata only as far as reading
// the data back needs).
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
