// Command scattergather runs the roles of a Kafka scatter-gather pipeline.
// See 'scattergather --help'.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/scattergather/scattergather/internal/cli"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful shutdown; a second one exits at once.
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "scattergather: shutting down (signal again to exit at once)")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "scattergather: second signal, exiting now")
		os.Exit(130)
	}()
	code := cli.Main(ctx, os.Args[1:], cli.Commands(), os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
