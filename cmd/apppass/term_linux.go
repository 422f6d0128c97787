package main

// Terminal handling for authenticate's password prompt, with the Linux
// ioctls themselves (what golang.org/x/term does, without the dependency).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func getTermios(f *os.File) (*syscall.Termios, error) {
	var t syscall.Termios
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t))); errno != 0 {
		return nil, errno
	}
	return &t, nil
}

func setTermios(f *os.File, t *syscall.Termios) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCSETS, uintptr(unsafe.Pointer(t))); errno != 0 {
		return errno
	}
	return nil
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := getTermios(f)
	return err == nil
}

// readPasswordNoEcho reads one line from the terminal f with echo off,
// restoring the terminal afterwards.
func readPasswordNoEcho(f *os.File) ([]byte, error) {
	old, err := getTermios(f)
	if err != nil {
		return nil, err
	}
	noEcho := *old
	noEcho.Lflag &^= syscall.ECHO
	noEcho.Lflag |= syscall.ICANON | syscall.ISIG
	if err := setTermios(f, &noEcho); err != nil {
		return nil, err
	}
	defer func() { _ = setTermios(f, old) }()
	r := bufio.NewReaderSize(f, maxPasswordLine+1)
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("longer than %d bytes: not an app password", maxPasswordLine)
	}
	if err != nil && len(line) == 0 {
		return nil, err
	}
	p := bytes.Clone(line)
	clear(line)
	return p, nil
}
