package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
)

// gatewayFlags are the settings of the HTTP gateway, shared by the gateway
// command and dev.
type gatewayFlags struct {
	maxBody        int64
	maxWait        time.Duration
	retention      time.Duration
	maxCached      int
	maxStreams     int
	maxInFlight    int
	produceTimeout time.Duration
	authTokenFile  string
}

func (f *gatewayFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&f.maxBody, "max-body-bytes", 1<<20, "gateway: largest request body accepted (413 above)")
	fs.DurationVar(&f.maxWait, "max-wait", gateway.DefaultMaxWait, "gateway: longest ?wait= a caller may ask for")
	fs.DurationVar(&f.retention, "reply-retention", gateway.DefaultReplyRetention, "gateway: how far back requests and replies are read at start and kept, so a restarted gateway still answers GET /v1/requests/{id}")
	fs.IntVar(&f.maxCached, "max-cached-requests", gateway.DefaultMaxCachedRequests, "gateway: most requests (and their replies) kept in memory; the oldest go first")
	fs.IntVar(&f.maxStreams, "max-streams", gateway.DefaultMaxStreams, "gateway: most concurrent /events streams (each reads one results partition)")
	fs.IntVar(&f.maxInFlight, "max-in-flight", gateway.DefaultMaxInFlight, "gateway: most requests submitted through this gateway and not yet replied to; above it a POST is answered 429 with Retry-After (a request stops counting at its reply, or 10s after its deadline)")
	fs.DurationVar(&f.produceTimeout, "produce-timeout", gateway.DefaultProduceTimeout, "gateway: how long a POST waits for Kafka to take the request before answering 503")
	fs.StringVar(&f.authTokenFile, "auth-token-file", "", fmt.Sprintf("gateway: file of bearer tokens, one a line (# comments; each at least %d of A-Z a-z 0-9 - . _ ~ + /); when set, every /v1/ request needs 'Authorization: Bearer <token>' (else 401). Re-read every second; rotate by writing a new file and renaming it over this one: add the new token, move the callers, remove the old one. Empty: no authentication", gateway.MinTokenLength))
}

// validate checks the flags as given: the config takes 0 for its default,
// but on the command line 0 would read as "no limit", which there is not.
func (f *gatewayFlags) validate() error {
	var errs []error
	for _, l := range []struct {
		flag string
		n    int64
	}{{"--max-body-bytes", f.maxBody}, {"--max-cached-requests", int64(f.maxCached)}, {"--max-streams", int64(f.maxStreams)}, {"--max-in-flight", int64(f.maxInFlight)}} {
		if l.n < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want at least 1 (there is no unlimited)", l.flag, l.n))
		}
	}
	for _, d := range []struct {
		flag string
		d    time.Duration
	}{{"--max-wait", f.maxWait}, {"--reply-retention", f.retention}, {"--produce-timeout", f.produceTimeout}} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", d.flag, d.d))
		}
	}
	return errors.Join(errs...)
}

// config returns the gateway config for the route table.
func (f *gatewayFlags) config(table *routes.Table) (gateway.Config, error) {
	srs, err := table.ScattererRoutes()
	if err != nil {
		return gateway.Config{}, err
	}
	return gateway.Config{Routes: srs, MaxBodyBytes: f.maxBody, MaxWait: f.maxWait, ReplyRetention: f.retention,
		MaxCachedRequests: f.maxCached, MaxStreams: f.maxStreams, MaxInFlight: f.maxInFlight, ProduceTimeout: f.produceTimeout,
		AuthTokenFile: f.authTokenFile}, nil
}

// listenGateway binds addr, with an error that says what to do when the
// port is taken.
func listenGateway(flagName, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (pick another with %s 127.0.0.1:PORT)", flagName, addr, err, flagName)
	}
	return ln, nil
}

// curlExamples returns the lines that show how to call the gateway at
// base, on route with payload.
func curlExamples(base, route, payload string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  curl -s -X POST '%s/v1/routes/%s/requests?wait=5s' -H 'Content-Type: application/json' -d '%s'\n", base, route, payload)
	fmt.Fprintf(&b, "  curl -s -X POST '%s/v1/routes/%s/requests' -d '%s'   # 202 + Location: poll it, or GET it with /events\n", base, route, payload)
	fmt.Fprintf(&b, "  curl -s %s/v1/routes\n", base)
	return b.String()
}

// registerAdminAddr names the gateway's admin port --admin-addr: the
// address of /metrics, /healthz and /readyz, which the API's port does not
// serve. --metrics-addr, its name before, stays an alias (the same value),
// so existing deployments keep working; with both set in the environment,
// SG_METRICS_ADDR wins (flags are read from it in name order).
func registerAdminAddr(fs *flag.FlagSet) {
	m := fs.Lookup("metrics-addr")
	fs.Var(m.Value, "admin-addr", "admin address of the gateway: /metrics, /healthz and /readyz, kept off the API's --addr (host:port; 0.0.0.0:PORT for every interface); empty disables them")
	m.Usage = "the same as --admin-addr (its former name)"
}

// registerGatewayCommon defines the shared flags a gateway uses: those of
// common.register without --guarantee and --instance-id, which mean
// nothing to it (it runs no transactions).
func registerGatewayCommon(fs *flag.FlagSet, c *common) {
	var all flag.FlagSet
	c.register(&all, true)
	all.VisitAll(func(f *flag.Flag) {
		if f.Name != "guarantee" && f.Name != "instance-id" {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
}

func gatewayCmd() *Command {
	var (
		c    common
		o    observeFlags
		f    gatewayFlags
		addr string
	)
	return &Command{
		Name:    "gateway",
		Summary: "Serve the HTTP API: submit requests, wait for or poll replies, stream parts as they arrive.",
		Usage:   "gateway [flags]",
		Long: `Serves the API on --addr:
  POST /v1/routes/{route}/requests[?timeout=2s][&fanout=N][&wait=5s]
       the body is the payload, with its Content-Type; with wait: 200 and the
       reply if it comes in time, else 202 Accepted with a Location
  GET  /v1/requests/{id}[?wait=5s]   200 reply, 202 pending, 404 unknown
  GET  /v1/requests/{id}/events      Server-Sent Events: manifest, each part, the reply
  GET  /v1/routes                    the route table
  GET  /v1/openapi.json              this API as an OpenAPI 3.1 document: every
                                     operation, parameter, status and error code
and, on --admin-addr (not on --addr): /metrics, /healthz, /readyz (200 once
the replies topic is read back over --reply-retention and while Kafka answers
a metadata ping sent every second; 503 within about 3s of Kafka becoming
unreachable).

A reply is JSON: status COMPLETE, PARTIAL or FAILED, the merged payload and a
marker per part. Errors are JSON {"error": ..., "code": ...}: 400 bad input
(also an unknown or repeated query parameter), 401 without a valid bearer
token (with --auth-token-file), 404 unknown route or request, 409 known
X-Correlation-ID, 413 body too large, 429 with Retry-After at --max-in-flight,
503 with Retry-After when Kafka does not take the request.

The gateway reads the requests and replies topics back over --reply-retention
at start, so any instance, also a restarted one, answers for recent requests.

  curl -s -X POST 'http://127.0.0.1:8080/v1/routes/search/requests?wait=5s' \
       -H 'Content-Type: application/json' -d '{"query":"red running shoes"}'`,
		Flags: func(fs *flag.FlagSet) {
			registerGatewayCommon(fs, &c)
			o.register(fs, DefaultGatewayMetricsAddr)
			registerAdminAddr(fs)
			f.register(fs)
			fs.StringVar(&addr, "addr", gateway.DefaultAddr, "address the HTTP API listens on (host:port; :8080 or 0.0.0.0:8080 for every interface)")
		},
		Run: func(ctx context.Context, _ []string) error {
			s, err := c.setup(ctx, "gateway")
			if err != nil {
				return err
			}
			ob, err := o.build(s.log)
			if err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			cfg, err := f.config(s.table)
			if err != nil {
				return err
			}
			ln, err := listenGateway("--addr", addr)
			if err != nil {
				return err
			}
			cfg.Client, cfg.Topics, cfg.Listener, cfg.Logger, cfg.Metrics = ob.client(s.client, "gateway"), c.topics(), ln, s.log, ob.registerer()
			if cfg.TracerProvider, err = ob.tracerProvider(ctx, "gateway"); err != nil {
				ln.Close()
				return err
			}
			g, err := gateway.New(cfg)
			if err != nil {
				ln.Close()
				return err
			}
			s.log.Info("gateway listening", "url", "http://"+ln.Addr().String())
			t := c.topics()
			if err := ob.watchTopics(s.client, []string{t.Requests(), t.Replies(), t.Results()}, c.topicsHint()); err != nil {
				return err
			}
			return ob.run(ctx, s.client, nil, []metrics.Check{{Name: "gateway", Ready: g.Ready}}, g.Run)
		},
	}
}

// runGatewayDemo sends one search through the gateway at base, prints the
// curl command that does the same and the answer, and fails unless the
// reply is COMPLETE. The demo calls it while its pipeline runs; ready is
// the gateway's readiness check (Gateway.Ready).
func runGatewayDemo(ctx context.Context, out io.Writer, base string, ready func() error) error {
	const payload = `{"query":"red running shoes","k":3}`
	fmt.Fprintf(out, "\n== gateway: the same pipeline over HTTP on %s\n", base)
	fmt.Fprintf(out, "$ curl -s -X POST '%s/v1/routes/search/requests?wait=5s' -H 'Content-Type: application/json' -d '%s'\n", base, payload)
	// The gateway reads the replies topic before it answers lookups;
	// a POST with wait needs only the broker, but wait for readiness so
	// the demo shows a steady state.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the gateway did not become ready within 10s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/routes/search/requests?wait=5s", strings.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	fmt.Fprintf(out, "HTTP %d, %s: %s\n", res.StatusCode, gateway.HeaderReplyStatus, res.Header.Get(gateway.HeaderReplyStatus))
	fmt.Fprintf(out, "%s", abbreviate(body, 600))
	if res.StatusCode != http.StatusOK || res.Header.Get(gateway.HeaderReplyStatus) != "COMPLETE" {
		return fmt.Errorf("demo: the gateway answered %d %s, want 200 COMPLETE", res.StatusCode, res.Header.Get(gateway.HeaderReplyStatus))
	}
	return nil
}

// abbreviate cuts b to about n bytes for printing.
func abbreviate(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + " …"
	}
	return s + "\n"
}
