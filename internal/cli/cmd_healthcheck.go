package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func healthcheckCmd() *Command {
	var (
		url     string
		timeout time.Duration
	)
	return &Command{
		Name:    "healthcheck",
		Summary: "Probe a role's /readyz (or any URL): exit 0 when it answers 2xx, 1 otherwise.",
		Usage:   "healthcheck [--url URL] [--timeout D]",
		Long: `For container health checks where the image has no curl (the distroless
image): GETs --url and exits 0 on a 2xx answer; otherwise prints the status
and the first line of the body (what /readyz says is not ready) to stderr and
exits 1. In compose.yaml and the Dockerfile:

  HEALTHCHECK CMD ["/usr/local/bin/scattergather", "healthcheck"]

The default URL is the role's own /readyz at the image's SG_METRICS_ADDR
(0.0.0.0:9090) through the loopback address.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&url, "url", "http://127.0.0.1:9090/readyz", "URL to GET")
			fs.DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the answer")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q", args)
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return fmt.Errorf("--url: %w", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				fmt.Fprintf(os.Stderr, "scattergather healthcheck: %s: %v\n", url, err)
				return ExitError{Code: 1}
			}
			defer resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
			fmt.Fprintf(os.Stderr, "scattergather healthcheck: %s: %s: %s\n", url, resp.Status, first)
			return ExitError{Code: 1}
		},
	}
}
