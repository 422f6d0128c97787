package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one row of the summary table.
type Result struct {
	Scenario    string  `json:"scenario"`
	Store       string  `json:"store,omitempty"`
	Transport   string  `json:"transport,omitempty"`
	Concurrency int     `json:"concurrency"`
	Calls       int64   `json:"calls"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"perSecond"`
	P50ms       float64 `json:"p50ms"`
	P90ms       float64 `json:"p90ms"`
	P99ms       float64 `json:"p99ms"`
	P999ms      float64 `json:"p999ms"`
	MaxMs       float64 `json:"maxMs"`
	Note        string  `json:"note,omitempty"`
	PeakRSSMB   float64 `json:"peakRssMB,omitempty"`
}

// op is one call of a workload; worker is the goroutine's index.
type op func(ctx context.Context, worker int) error

// rate, when above zero, makes run an open loop: calls are scheduled at
// rate per second in all (spread over the goroutines) and each latency is
// measured from the call's scheduled time, so a stall is charged to every
// call it delayed (no coordinated omission). Zero is a closed loop: each
// goroutine starts its next call when the last returns.
var rate float64

// run drives op from concurrency goroutines for d, printing a progress
// line every second to progress, and summarises the latencies.
func run(ctx context.Context, name string, concurrency int, d time.Duration, progress io.Writer, call op) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var calls, errs atomic.Int64
	lat := make([][]time.Duration, concurrency)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Go(func() {
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(concurrency) / rate)
			}
			// Workers start staggered so open-loop arrivals spread evenly.
			next := start.Add(interval * time.Duration(w) / time.Duration(concurrency))
			for ctx.Err() == nil {
				t0 := time.Now()
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					}
					t0 = next
					next = next.Add(interval)
				}
				err := call(ctx, w)
				if ctx.Err() != nil {
					return // cut off by the deadline: not a sample
				}
				lat[w] = append(lat[w], time.Since(t0))
				calls.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-tick.C:
			el := time.Since(start).Seconds()
			fmt.Fprintf(progress, "\r  %-28s c=%-3d %5.1fs  %9d calls  %9.0f/s  %d errors   ", name, concurrency, el, calls.Load(), float64(calls.Load())/el, errs.Load())
		}
	}
	fmt.Fprintf(progress, "\r%100s\r", "")
	elapsed := time.Since(start).Seconds()
	all := slices.Concat(lat...)
	r := summarize(name, concurrency, all, elapsed)
	r.Errors = errs.Load()
	if e, ok := firstErr.Load().(string); ok {
		r.Note = "first error: " + e
	}
	return r
}

func summarize(name string, concurrency int, all []time.Duration, seconds float64) Result {
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := min(int(p*float64(len(all))), len(all)-1)
		return float64(all[i].Microseconds()) / 1000
	}
	r := Result{Scenario: name, Concurrency: concurrency, Calls: int64(len(all)), Seconds: seconds,
		P50ms: pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99), P999ms: pct(0.999)}
	if len(all) > 0 {
		r.MaxMs = float64(all[len(all)-1].Microseconds()) / 1000
	}
	if seconds > 0 {
		r.PerSecond = float64(len(all)) / seconds
	}
	return r
}

func printTable(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "%-34s %-6s %-5s %4s %10s %7s %10s %8s %8s %8s %8s %8s %8s\n",
		"scenario", "store", "via", "conc", "calls", "errors", "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "RSS MB")
	for _, r := range rs {
		rss := "-"
		if r.PeakRSSMB > 0 {
			rss = fmt.Sprintf("%.0f", r.PeakRSSMB)
		}
		store := r.Store
		if store == "" {
			store = "-"
		}
		fmt.Fprintf(w, "%-34s %-6s %-5s %4d %10d %7d %10.0f %8.2f %8.2f %8.2f %8.2f %8.2f %8s\n",
			r.Scenario, store, r.Transport, r.Concurrency, r.Calls, r.Errors, r.PerSecond, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs, rss)
		if r.Note != "" {
			fmt.Fprintf(w, "    %s\n", r.Note)
		}
	}
}
