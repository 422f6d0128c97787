package rpc

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"
)

// TestLazyRequestLogger: a request's logger writes exactly what
// Logger.With("request_id", id) writes, through every way of logging
// (attributes and groups added after, a level filtered out), though it
// adds the id only once a line is written.
func TestLazyRequestLogger(t *testing.T) {
	var want, got bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	logAll := func(l *slog.Logger) {
		l.Debug("filtered out", "k", 1)
		l.Info("call", "method", "appPasswords.list")
		l.With("rpc_id", "7").Warn("on a socket", "code", -32050)
		l.WithGroup("g").Error("grouped", "k", "v")
	}
	for _, newHandler := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, opts) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, opts) },
	} {
		want.Reset()
		got.Reset()
		logAll(slog.New(newHandler(&want)).With("request_id", "req-1"))
		lazy := &lazyRequestHandler{base: newHandler(&got), id: "req-1"}
		if !lazy.Enabled(t.Context(), slog.LevelInfo) || lazy.Enabled(t.Context(), slog.LevelDebug) {
			t.Fatal("the request logger's levels are not the server's")
		}
		logAll(slog.New(lazy))
		if got.String() != want.String() || want.Len() == 0 {
			t.Fatalf("request logger wrote\n%s\nwant\n%s", got.String(), want.String())
		}
	}
}

// TestNewRequestID: 32 lowercase hex digits, a new one each time.
func TestNewRequestID(t *testing.T) {
	format := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if !format.MatchString(id) || seen[id] {
			t.Fatalf("id %q: not 32 hex digits, or seen before", id)
		}
		seen[id] = true
	}
}
