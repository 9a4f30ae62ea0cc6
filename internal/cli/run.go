package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/internal/demo"
	"github.com/scattergather/scattergather/internal/embedded"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func topicsCmd() *Command {
	var c common
	return &Command{
		Name:    "topics",
		Summary: "Create the pipeline's missing topics and check the existing ones.",
		Usage:   "topics [flags]",
		Long: `Creates requests, tasks.<route> for every route, results, aggregator-state
(compacted, co-partitioned with results), replies and dlq under the topic prefix,
then lists them. An existing topic with the wrong partition count is an error.`,
		Flags: func(fs *flag.FlagSet) { c.register(fs, true) },
		Run: func(ctx context.Context, _ []string) error {
			if _, err := c.logger(); err != nil {
				return err
			}
			cc, err := c.clientConfig(c.brokerList(), "scattergather-topics")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			if cc, err = c.registry.apply(ctx, cc, nil); err != nil {
				return err
			}
			table, err := c.routes()
			if err != nil {
				return fmt.Errorf("--routes-file: %w", err)
			}
			if err := c.layout().Validate(); err != nil {
				return err
			}
			cl, err := kafka.NewClient(cc, kgo.MetadataMinAge(100*time.Millisecond))
			if err != nil {
				return err
			}
			defer cl.Close()
			adm := kadm.NewClient(cl)
			specs := c.topics().Specs(c.layout(), table.Names())
			created, err := kafkaconfig.EnsureTopics(ctx, adm, specs)
			if err != nil {
				return err
			}
			names := make([]string, len(specs))
			for i, s := range specs {
				names[i] = s.Name
			}
			details, err := adm.ListTopics(ctx, names...)
			if err != nil {
				return err
			}
			isNew := map[string]bool{}
			for _, n := range created {
				isNew[n] = true
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tREPLICAS\tSTATE")
			sort.Strings(names)
			for _, n := range names {
				d := details[n]
				state := "exists"
				if isNew[n] {
					state = "created"
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", n, len(d.Partitions), d.Partitions.NumReplicas(), state)
			}
			return tw.Flush()
		},
	}
}

// devProcessors serves every route of table: the demo handlers for the demo
// routes, echo for any other route (per recipient on broadcast routes).
func devProcessors(table *routes.Table) []stack.ProcessorSpec {
	cat := catalog.New(demo.CatalogSize, demo.CatalogSeed)
	demoSpecs := map[string][]stack.ProcessorSpec{}
	for _, s := range demo.Processors(cat) {
		demoSpecs[string(s.Route)] = append(demoSpecs[string(s.Route)], s)
	}
	demoRoutes := routes.Demo()
	var out []stack.ProcessorSpec
	for _, r := range table.Routes {
		if dr, ok := demoRoutes.Find(r.Name); ok && sameShape(dr, r) {
			out = append(out, demoSpecs[r.Name]...)
			continue
		}
		if r.Mode == "broadcast" {
			for _, rc := range r.Recipients {
				out = append(out, stack.ProcessorSpec{Route: schemas.Route(r.Name), Recipient: schemas.PartID(rc), Handler: processor.Echo()})
			}
			continue
		}
		out = append(out, stack.ProcessorSpec{Route: schemas.Route(r.Name), Handler: processor.Echo()})
	}
	return out
}

func sameShape(a, b routes.Route) bool {
	return a.Mode == b.Mode && strings.Join(a.Recipients, ",") == strings.Join(b.Recipients, ",")
}

func devCmd() *Command {
	var (
		c           common
		o           observeFlags
		brokerAddr  string
		dataDir     string
		fresh       bool
		gatewayAddr string
	)
	return &Command{
		Name:    "dev",
		Summary: "Run an embedded broker and every role in one process until Ctrl-C.",
		Usage:   "dev [flags]",
		Long: `Starts the embedded Kafka-protocol broker (franz-go's kfake) on --broker-addr, so
any Kafka client can join it, creates the topics and runs a scatterer, the
processors of every route, an aggregator and the HTTP gateway on --gateway-addr.
The demo routes (search, quotes, echo) get the demo handlers; other routes of
--routes-file get echo.

Try it from another shell:
  curl -s -X POST 'http://127.0.0.1:8080/v1/routes/search/requests?wait=5s' \
       -H 'Content-Type: application/json' -d '{"query":"red running shoes"}'
  scattergather request --route search --payload '{"query":"red running shoes"}'
  scattergather processor --route echo --handler sleep   # join the echo group`,
		Flags: func(fs *flag.FlagSet) {
			c.register(fs, false)
			o.register(fs, DefaultDevMetricsAddr)
			fs.StringVar(&brokerAddr, "broker-addr", "127.0.0.1:9092", "address of the embedded broker (127.0.0.1 only)")
			fs.StringVar(&dataDir, "data-dir", defaultDataDir(), "where the embedded broker keeps its log; empty keeps it in memory")
			fs.BoolVar(&fresh, "fresh", false, "delete --data-dir before starting")
			fs.StringVar(&gatewayAddr, "gateway-addr", gateway.DefaultAddr, "address of the HTTP gateway (see 'scattergather gateway --help'); empty runs none")
		},
		Run: func(ctx context.Context, _ []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			g, err := c.parseGuarantee()
			if err != nil {
				return err
			}
			table, err := c.routes()
			if err != nil {
				return fmt.Errorf("--routes-file: %w", err)
			}
			if fresh && dataDir != "" {
				if err := os.RemoveAll(dataDir); err != nil {
					return fmt.Errorf("--fresh: %w", err)
				}
			}
			var ln net.Listener // the gateway's, bound first so a taken port fails at once
			if gatewayAddr != "" {
				if ln, err = listenGateway("--gateway-addr", gatewayAddr); err != nil {
					return err
				}
				defer func() {
					if ln != nil {
						ln.Close()
					}
				}()
			}
			b, err := embedded.Start(embedded.Config{Addr: brokerAddr, DataDir: dataDir})
			if err != nil {
				if errors.Is(err, embedded.ErrAddrInUse) {
					return fmt.Errorf("--broker-addr %s is taken (is another dev or a Kafka broker running?); pick another with --broker-addr 127.0.0.1:PORT: %w", brokerAddr, err)
				}
				return fmt.Errorf("--broker-addr: %w", err)
			}
			defer b.Close()
			cc, err := c.clientConfig(b.Addrs(), "scattergather-dev")
			if err != nil {
				return err
			}
			ob, err := o.build(log)
			if err != nil {
				return err
			}
			tps, err := ob.tracerProviders(ctx, "scatterer", "processor", "aggregator", "gateway")
			if err != nil {
				return err
			}
			st, err := stack.New(ctx, stack.Config{Client: cc, Topics: c.topics(), Layout: c.layout(), Routes: table,
				Guarantee: g, Processors: devProcessors(table), Logger: log,
				Metrics: ob.registerer(), KafkaMetrics: ob.kafka, TracerProviders: tps})
			if err != nil {
				return err
			}
			run, checks := st.Run, st.Checks()
			var gatewayURL string
			if ln != nil {
				gcfg, err := (&gatewayFlags{}).config(table)
				if err != nil {
					return err
				}
				gcfg.Client, gcfg.Topics, gcfg.Listener, gcfg.Logger, gcfg.Metrics = ob.client(cc, "gateway"), c.topics(), ln, log, ob.registerer()
				gcfg.TracerProvider = tps["gateway"]
				gw, err := gateway.New(gcfg)
				if err != nil {
					return err
				}
				ln, gatewayURL = nil, "http://"+gcfg.Listener.Addr().String() // gw.Run owns it now
				run = func(ctx context.Context) error { return runTogether(ctx, st.Run, gw.Run) }
				checks = append(checks, metrics.Check{Name: "gateway", Ready: gw.Ready})
			}
			fmt.Fprintf(os.Stderr, "scattergather dev: broker on %s (data dir %q), routes %v, guarantee %s\n", strings.Join(b.Addrs(), ","), dataDir, table.Names(), g)
			if o.metricsAddr != "" {
				fmt.Fprintf(os.Stderr, "  metrics: http://%s/metrics (also /healthz, /readyz)\n", o.metricsAddr)
			}
			fmt.Fprintf(os.Stderr, "  waiting until every consumer group is settled (what /readyz waits for); Ctrl-C stops.\n")
			// The try lines come once a request would be answered at once.
			// The goroutine exits when everything is ready or ctx ends;
			// the command waits for it.
			started := time.Now()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				if !waitChecks(ctx, checks) {
					return
				}
				fmt.Fprintf(os.Stderr, "scattergather dev: ready in %.1fs.\n", time.Since(started).Seconds())
				if gatewayURL != "" {
					fmt.Fprintf(os.Stderr, "  gateway: %s; try:\n%s", gatewayURL, curlExamples(gatewayURL, "search", `{"query":"red running shoes"}`))
				}
				fmt.Fprintf(os.Stderr, "  try: scattergather request --brokers %s --route search --payload '{\"query\":\"red running shoes\"}'\n", b.Addrs()[0])
			})
			return ob.run(ctx, cc, st.Groups(), checks, run)
		},
	}
}

func defaultDataDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "scattergather", "dev")
}

func demoCmd() *Command {
	var (
		c           common
		searches    int
		quotes      int
		gatewayAddr string
	)
	return &Command{
		Name:    "demo",
		Summary: "Play the scatter-gather examples end to end on an embedded broker and exit.",
		Usage:   "demo [flags]",
		Long: `Starts an embedded broker with a temporary data dir, runs every role in this
process and plays two examples:
  split:     a product search sent to every shard of a partitioned index, the
             shards' hits merged top-10 and checked against a direct search;
  broadcast: a loan quote request sent to three providers, one too slow for the
             timeout, answered PARTIAL with that provider marked EXPIRED (its
             handler cut off at the deadline; MISSING if the deadline fires
             before that result arrives).
Then it sends one search through the HTTP gateway (on --gateway-addr, a free
port by default) and prints the curl command that does the same.
Prints the replies and a summary line, and exits non-zero if any reply is wrong.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.guarantee, "guarantee", string(kafkaconfig.ExactlyOnce), "exactly-once or at-least-once")
			fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
			fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
			fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "none", "level of the Kafka client's own logs, or none")
			fs.IntVar(&searches, "searches", 2*len(demo.Queries), "search requests to send")
			fs.IntVar(&quotes, "quotes", 3, "quote requests to send")
			fs.StringVar(&gatewayAddr, "gateway-addr", "127.0.0.1:0", "address of the HTTP gateway during the demo (port 0: a free one); empty runs none")
		},
		Run: func(ctx context.Context, _ []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			g, err := c.parseGuarantee()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "scattergather-demo-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			b, err := embedded.Start(embedded.Config{Addr: "127.0.0.1:0", DataDir: dir})
			if err != nil {
				return err
			}
			defer b.Close()
			cc, err := c.clientConfig(b.Addrs(), "scattergather-demo")
			if err != nil {
				return err
			}
			topics := kafkaconfig.Topics{Prefix: kafkaconfig.DefaultPrefix}
			dcfg := demo.Config{Client: cc, Topics: topics, Guarantee: g, Out: os.Stdout, Logger: log, Searches: searches, Quotes: quotes}
			fmt.Printf("scattergather demo: embedded broker on %s, guarantee %s\n\n", b.Addrs()[0], g)
			if gatewayAddr == "" {
				_, err = demo.Run(ctx, dcfg)
				return err
			}
			ln, err := listenGateway("--gateway-addr", gatewayAddr)
			if err != nil {
				return err
			}
			gcfg, err := (&gatewayFlags{}).config(routes.Demo())
			if err != nil {
				ln.Close()
				return err
			}
			gcfg.Client, gcfg.Topics, gcfg.Listener, gcfg.Logger = cc, topics, ln, log
			gw, err := gateway.New(gcfg)
			if err != nil {
				ln.Close()
				return err
			}
			base := "http://" + ln.Addr().String()
			dcfg.After = func(ctx context.Context) error { return runGatewayDemo(ctx, os.Stdout, base, gw.Ready) }
			// The gateway serves while the demo plays (its tail waits for the
			// topics the demo creates) and stops when it is done.
			return runTogether(ctx, func(ctx context.Context) error {
				_, err := demo.Run(ctx, dcfg)
				return err
			}, gw.Run)
		},
	}
}

func requestCmd() *Command {
	var (
		c       common
		route   string
		payload string
		timeout time.Duration
		maxWait time.Duration
		fanout  int
	)
	return &Command{
		Name:    "request",
		Summary: "Send one request and print its reply as JSON.",
		Usage:   "request --route R --payload JSON [flags]",
		Long: `Produces a request to the requests topic and waits for its reply on replies.
Exits 0 when the reply is COMPLETE, 3 when PARTIAL, 4 when FAILED.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
			registerSecurity(fs, &c.security)
			c.registry.register(fs)
			fs.StringVar(&c.prefix, "topic-prefix", kafkaconfig.DefaultPrefix, "prefix of every topic name")
			fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "warn", "level of the Kafka client's own logs, or none")
			fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
			fs.StringVar(&route, "route", "", "route to send the request to (required)")
			fs.StringVar(&payload, "payload", "{}", "request payload; @FILE reads a file")
			fs.DurationVar(&timeout, "timeout", 0, "request timeout, sent with the request; 0 sends none, so that the route's timeout applies (the route table's, 5s unless set), and waits up to --max-wait for the reply")
			fs.DurationVar(&maxWait, "max-wait", 30*time.Second, "without --timeout: how long to wait for the reply before giving up (a role down)")
			fs.IntVar(&fanout, "fanout", 0, "parts wanted on a split route; 0 takes the route's default")
		},
		Run: func(ctx context.Context, _ []string) error {
			if route == "" {
				return errors.New("--route is required")
			}
			body := []byte(payload)
			if name, ok := strings.CutPrefix(payload, "@"); ok {
				var err error
				if body, err = os.ReadFile(name); err != nil {
					return fmt.Errorf("--payload: %w", err)
				}
			}
			cc, err := c.clientConfig(c.brokerList(), "scattergather-request")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			if cc, err = c.registry.apply(ctx, cc, nil); err != nil {
				return err
			}
			cl, err := client.New(ctx, client.Config{Client: cc, Topics: c.topics()})
			if err != nil {
				return err
			}
			defer cl.Close()
			opts := client.Options{Timeout: timeout, Fanout: fanout}
			if timeout == 0 {
				opts.Timeout, opts.RouteTimeout = maxWait, true
			}
			reply, err := cl.Do(ctx, schemas.Route(route), body, opts)
			if err != nil {
				return err
			}
			out, _ := json.MarshalIndent(client.View(reply), "", "  ")
			fmt.Println(string(out))
			switch reply.Status {
			case schemas.ReplyPartial:
				return ExitError{Code: 3}
			case schemas.ReplyFailed:
				return ExitError{Code: 4}
			}
			return nil
		},
	}
}

// waitChecks polls checks until every one passes (true) or ctx ends
// (false).
func waitChecks(ctx context.Context, checks []metrics.Check) bool {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ready := true
		for _, c := range checks {
			if c.Ready() != nil {
				ready = false
				break
			}
		}
		if ready {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
