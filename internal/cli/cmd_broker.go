package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/scattergather/scattergather/internal/embedded"
)

func brokerCmd() *Command {
	var (
		addr    string
		dataDir string
		fresh   bool
	)
	return &Command{
		Name:    "broker",
		Summary: "Run the embedded Kafka-protocol broker (kfake) on its own until SIGTERM.",
		Usage:   "broker [flags]",
		Long: `Serves franz-go's kfake, the broker that dev and demo embed, as a process of its
own, so that roles started separately (scatterer, processor, aggregator) can be
killed and restarted while the broker stays up; 'scattergather chaos' runs it
this way. When ready it prints its address (host:port) as the one line on
stdout. SIGINT/SIGTERM close it cleanly, flushing --data-dir.

kfake is not Apache Kafka: a transaction that is open when the broker process
itself is killed (SIGKILL) is not recovered like Kafka recovers it; see
docs/guarantees.md. Kill roles, not this broker.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "broker-addr", "127.0.0.1:9092", "address to listen on (127.0.0.1 only); port 0 picks a free port")
			fs.StringVar(&dataDir, "data-dir", defaultBrokerDataDir(), "where the broker keeps its log; empty keeps it in memory")
			fs.BoolVar(&fresh, "fresh", false, "delete --data-dir before starting")
		},
		Run: func(ctx context.Context, _ []string) error {
			if fresh && dataDir != "" {
				if err := os.RemoveAll(dataDir); err != nil {
					return fmt.Errorf("--fresh: %w", err)
				}
			}
			b, err := embedded.Start(embedded.Config{Addr: addr, DataDir: dataDir})
			if err != nil {
				if errors.Is(err, embedded.ErrAddrInUse) {
					return fmt.Errorf("--broker-addr %s is taken (is dev or another broker running?); pick another with --broker-addr 127.0.0.1:PORT: %w", addr, err)
				}
				return fmt.Errorf("--broker-addr: %w", err)
			}
			defer b.Close()
			fmt.Println(strings.Join(b.Addrs(), ","))
			fmt.Fprintf(os.Stderr, "scattergather broker: kfake on %s (data dir %q); SIGTERM stops it\n", strings.Join(b.Addrs(), ","), dataDir)
			<-ctx.Done()
			fmt.Fprintln(os.Stderr, "scattergather broker: closing")
			return nil
		},
	}
}

func defaultBrokerDataDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "scattergather", "broker")
}
