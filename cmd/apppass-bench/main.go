// Command apppass-bench is the load generator for apppassd. It starts the
// daemon it measures (built from this repository, on the embedded default)
// and drives it over its real interfaces: JSON-RPC over HTTP keep-alive and
// WebSocket, and NATS. Run it from the repository root:
//
//	go run ./cmd/apppass-bench [flags] scenario... | all
//
// It prints a progress line while it runs and a summary table (or JSON with
// --json) at the end. BENCHMARKS.md lists the commands and the numbers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

// scenarios are the bench's scenarios, by name.
var scenarios = map[string]func(context.Context, options) ([]Result, error){
	"auth-hot":    func(ctx context.Context, o options) ([]Result, error) { return authScenario(ctx, o, true) },
	"auth-cold":   func(ctx context.Context, o options) ([]Result, error) { return authScenario(ctx, o, false) },
	"ui-mix":      uiMix,
	"admin-add":   adminAdd,
	"propagation": propagation,
	"scale":       scale,
	"baseline":    baseline,
}

// order is the order of all.
var order = []string{"auth-hot", "auth-cold", "admin-add", "ui-mix", "propagation", "scale", "baseline"}

func main() {
	serveBareIfAsked()
	o, stores, names, asJSON := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var all []Result
	for _, name := range names {
		for _, store := range stores {
			rs, err := runScenario(ctx, name, store, o)
			if err != nil {
				fmt.Fprintf(os.Stderr, "apppass-bench: %s on %s: %v\n", name, store, err)
				os.Exit(1)
			}
			all = append(all, rs...)
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(all)
		return
	}
	printTable(os.Stdout, all)
}

// parseFlags reads the command line: the options, the stores and the
// scenarios to run, and whether to print JSON. Bad input stops the bench
// (exit 2) before anything runs.
func parseFlags() (o options, stores, names []string, asJSON bool) {
	duration := flag.Duration("duration", 10*time.Second, "how long each load step runs")
	conc := flag.String("concurrency", "1,16,64", "concurrent connections (comma-separated list)")
	transports := flag.String("transport", "http,ws", "for authenticate: http, ws or both")
	sizes := flag.String("scale-sizes", "1000,1000000", "stored passwords for the scale scenario")
	storeList := flag.String("store", "sqlite", "the store apppassd runs on: sqlite (the embedded default), mongo (the MongoDB adapter on a FerretDB the bench starts), or both, comma-separated, to run each scenario on each side by side")
	propagations := flag.Int("propagations", 1000, "add/remove rounds for the propagation scenario")
	scaleLogins := flag.Int("scale-logins", 1000, "how many of the stored passwords the scale scenario logs in with, drawn at random")
	jsonFlag := flag.Bool("json", false, "print the results as JSON")
	flag.Float64Var(&rate, "rate", 0, "open loop: total calls per second to offer (0: closed loop, as fast as answers come)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: apppass-bench [flags] scenario... (auth-hot auth-cold admin-add ui-mix propagation scale baseline) | all\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	o = options{duration: *duration, transports: strings.Split(*transports, ","), progress: os.Stderr, propagations: *propagations,
		scaleLogins: max(*scaleLogins, 1)}
	var err error
	if o.concurrency, err = ints(*conc); err != nil {
		fmt.Fprintln(os.Stderr, "apppass-bench: --concurrency:", err)
		os.Exit(2)
	}
	if o.scaleSizes, err = ints(*sizes); err != nil {
		fmt.Fprintln(os.Stderr, "apppass-bench: --scale-sizes:", err)
		os.Exit(2)
	}
	stores = strings.Split(*storeList, ",")
	for _, store := range stores {
		if store != "sqlite" && store != "mongo" {
			fmt.Fprintf(os.Stderr, "apppass-bench: --store: %q is neither sqlite nor mongo\n", store)
			os.Exit(2)
		}
	}
	names = flag.Args()
	if len(names) == 1 && names[0] == "all" {
		names = order
	}
	for _, name := range names {
		if scenarios[name] == nil {
			flag.Usage()
			os.Exit(2)
		}
	}
	return o, stores, names, *jsonFlag
}

// runScenario runs one scenario on one store; baseline, in process, runs
// on no store and only once.
func runScenario(ctx context.Context, name, store string, o options) ([]Result, error) {
	if name == "baseline" && store != "sqlite" {
		return nil, nil
	}
	fmt.Fprintf(os.Stderr, "== %s on %s\n", name, store)
	o.store = store
	rs, err := scenarios[name](ctx, o)
	for i := range rs {
		if rs[i].Transport != "inproc" {
			rs[i].Store = store
		}
	}
	return rs, err
}

func ints(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", part)
		}
		out = append(out, n)
	}
	return out, nil
}
