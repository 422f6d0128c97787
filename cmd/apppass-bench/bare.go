package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// The bare net/http reference: a process of its own, as apppassd is,
// that answers every POST with one fixed reply (a real authenticate
// answer). Loaded right beside hot authenticate, it is what one HTTP
// keep-alive round trip costs on this machine at that moment, so the
// ratio of the two is what apppassd's hot path costs on top.

// Environment of the reference process: its listen address and reply.
const (
	bareListenEnv = "APPPASS_BENCH_BARE_LISTEN"
	bareReplyEnv  = "APPPASS_BENCH_BARE_REPLY"
)

// serveBareIfAsked runs the reference server, and never returns, when
// this process was started as one.
func serveBareIfAsked() {
	listen := os.Getenv(bareListenEnv)
	if listen == "" {
		return
	}
	reply := []byte(os.Getenv(bareReplyEnv))
	err := http.ListenAndServe(listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}))
	fmt.Fprintf(os.Stderr, "apppass-bench bare server: %v\n", err)
	os.Exit(1)
}

// bareServer is a running reference process.
type bareServer struct {
	url string
	cmd *exec.Cmd
}

// startBare starts this binary again as the reference server answering
// reply, and waits until it accepts connections.
func startBare(reply []byte) (*bareServer, error) {
	listen := freePort()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), bareListenEnv+"="+listen, bareReplyEnv+"="+string(reply))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &bareServer{url: "http://" + listen, cmd: cmd}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return b, nil
		}
	}
	b.close()
	return nil, errors.New("the bare net/http reference did not start listening")
}

func (b *bareServer) close() {
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

// bareLoad runs the load of authLoad's shape against the reference at
// concurrency c, with the same client work per call: the same request
// bodies round-robin over the logins, the same client settings, and the
// reply decoded as authLoad decodes it. Only the server differs.
func bareLoad(ctx context.Context, b *bareServer, c int, o options, logins []login) Result {
	client := newHTTPClient(c)
	caller := httpCaller(b.url, "x", client)
	next := make([]int, c)
	for w := range next {
		next[w] = w * len(logins) / c
	}
	r := run(ctx, "bare net/http, fixed reply", c, o.duration, o.progress, func(ctx context.Context, w int) error {
		i := next[w] % len(logins)
		next[w]++
		var res struct{ UUID string }
		return caller.Call(ctx, "appPasswords.authenticate", authParams(logins[i]), &res)
	})
	r.Transport = "http"
	return r
}
