package natsserver

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/apppass/apppass"
	natspub "github.com/apppass/apppass/events/nats"
)

// BenchmarkEmbeddedPublish measures what syncing at every ack
// (SyncAlways) would cost the embedded server: publishes acked per second
// by the stream, from as many publishers at once as the relay runs, with
// the embedded server's options ("sync=1s", SyncInterval) and with
// SyncAlways beside it ("sync=always"). The numbers are in BENCHMARKS.md.
func BenchmarkEmbeddedPublish(b *testing.B) {
	for _, always := range []bool{true, false} {
		name := "sync=always"
		if !always {
			name = "sync=1s"
		}
		b.Run(name, func(b *testing.B) {
			opts := embeddedOptions("127.0.0.1", server.RANDOM_PORT, b.TempDir(), nil)
			opts.SyncAlways = always
			s, err := server.NewServer(opts)
			if err != nil {
				b.Fatal(err)
			}
			s.Start()
			defer s.Shutdown()
			if !s.ReadyForConnections(10 * time.Second) {
				b.Fatal("nats-server did not start")
			}
			pub, err := natspub.Connect(s.ClientURL(), "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			ctx := context.Background()
			for !pub.Connected() {
				time.Sleep(5 * time.Millisecond)
			}
			if err := pub.EnsureStream(ctx); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(natspub.RelayWorkers / 2) // × GOMAXPROCS (2 here)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := make([]byte, 12)
				for pb.Next() {
					for i := range id {
						id[i] = byte(rand.N(256))
					}
					ev := apppass.Event{ID: hex.EncodeToString(id), Type: apppass.EventCreated, Timestamp: time.Now().UTC(),
						Data: apppass.EventData{UUID: hex.EncodeToString(id[:8]), ContextID: 1, UserID: 3, Login: "x@example.com", AppScope: "mail", Name: "n"}}
					if err := pub.Publish(ctx, ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
