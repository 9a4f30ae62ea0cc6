package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/internal/demo"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Commands returns every subcommand of the binary.
func Commands() []*Command {
	return []*Command{
		scattererCmd(), processorCmd(), aggregatorCmd(), topicsCmd(), devCmd(), demoCmd(), requestCmd(),
		gatewayCmd(),
		benchCmd(),
		brokerCmd(),
		chaosCmd(),
		replayCmd(), groupsCmd(), dlqCmd(),
		versionCmd(), healthcheckCmd(),
	}
}

// setup is the start shared by the role commands: logger, client config,
// routes and, unless disabled, the topics.
func (c *common) setup(ctx context.Context, role string) (*setupResult, error) {
	log, err := c.logger()
	if err != nil {
		return nil, err
	}
	g, err := c.parseGuarantee()
	if err != nil {
		return nil, err
	}
	cc, err := c.clientConfig(c.brokerList(), "scattergather-"+role)
	if err != nil {
		return nil, fmt.Errorf("--brokers: %w", err)
	}
	if cc, err = c.registry.apply(ctx, cc, log.With("role", role)); err != nil {
		return nil, err
	}
	table, err := c.routes()
	if err != nil {
		return nil, fmt.Errorf("--routes-file: %w", err)
	}
	if c.createTopics {
		if err := stack.EnsureTopics(ctx, cc, c.topics(), c.layout(), table.Names()); err != nil {
			return nil, err
		}
	}
	return &setupResult{log: log.With("role", role), base: log, guarantee: g, client: cc, table: table}, nil
}

func scattererCmd() *Command {
	var (
		c          common
		o          observeFlags
		maxPayload int
	)
	return &Command{
		Name:    "scatterer",
		Summary: "Consume requests and scatter each into the tasks of its route plus a manifest.",
		Usage:   "scatterer [flags]",
		Long: `Reads the requests topic in the consumer group <prefix>scatterer. Split routes
get a different task per part (keyed by shard) on tasks.<route>; broadcast routes
get one task that every recipient's processor group reads. Rejected requests go
to the dlq topic with their reason and are answered FAILED.`,
		Flags: func(fs *flag.FlagSet) {
			c.register(fs, true)
			o.register(fs, DefaultScattererMetricsAddr)
			fs.IntVar(&maxPayload, "max-payload-bytes", scatterer.DefaultMaxPayloadBytes, "largest request payload accepted")
		},
		Run: func(ctx context.Context, _ []string) error {
			s, err := c.setup(ctx, "scatterer")
			if err != nil {
				return err
			}
			ob, err := o.build(s.log)
			if err != nil {
				return err
			}
			tp, err := ob.tracerProvider(ctx, "scatterer")
			if err != nil {
				return err
			}
			srs, err := s.table.ScattererRoutes()
			if err != nil {
				return err
			}
			sc, err := scatterer.New(scatterer.Config{
				Role: kafkaconfig.Role{
					Client:               ob.client(s.client, "scatterer"),
					Topics:               c.topics(),
					Guarantee:            s.guarantee,
					InstanceID:           c.instanceID,
					OffsetCommitInterval: orNone(c.commitInterval),
					TransactionGap:       orNone(c.transactionGap),
					SessionTimeout:       c.sessionTimeout,
					Logger:               s.base,
					Metrics:              ob.registerer(),
					TracerProvider:       tp,
				},
				Routes:          srs,
				MaxPayloadBytes: maxPayload,
			})
			if err != nil {
				return err
			}
			t := c.topics()
			watched := []string{t.Requests()}
			for _, r := range s.table.Names() {
				watched = append(watched, t.Tasks(r))
			}
			if err := ob.watchTopics(s.client, append(watched, t.Results(), t.Replies(), t.DLQ()), c.topicsHint()); err != nil {
				return err
			}
			return ob.run(ctx, s.client, []string{sc.Group()},
				[]metrics.Check{{Name: "scatterer", Ready: sc.Ready}}, sc.Run)
		},
	}
}

// handlerFlags are the processor's built-in handler settings.
type handlerFlags struct {
	name           string
	delay          time.Duration
	maxDelay       time.Duration
	failureRate    float64
	stragglerRate  float64
	stragglerDelay time.Duration
	catalogSize    int
	quoteMargin    float64
	httpURL        string
	httpTimeout    time.Duration
}

func (h *handlerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.name, "handler", "echo", "built-in handler: echo, sleep, search, quote (the demo's loan provider, named by --recipient, answering after --sleep-delay) or http (POST each task to --http-url)")
	fs.StringVar(&h.httpURL, "http-url", "", "http handler: where each task's payload is POSTed; {part} and {route} are replaced by the task's part id and route, e.g. http://search-{part}:8080/search")
	fs.DurationVar(&h.httpTimeout, "http-timeout", processor.DefaultHTTPTimeout, "http handler: cap on one try (the task's deadline caps it too); 5xx, 408, 429, connection errors and timeouts are retried per --retries/--backoff, other 4xx are not")
	fs.Float64Var(&h.quoteMargin, "quote-margin", 1.0, "quote handler: the provider's margin over the base rate, in percentage points")
	fs.DurationVar(&h.delay, "sleep-delay", 10*time.Millisecond, "sleep handler: delay per task")
	fs.DurationVar(&h.maxDelay, "sleep-max-delay", 0, "sleep handler: if above --sleep-delay, the delay is uniform in [sleep-delay, sleep-max-delay]")
	fs.Float64Var(&h.failureRate, "failure-rate", 0, "sleep handler: fraction of tries that fail (0..1)")
	fs.Float64Var(&h.stragglerRate, "straggler-rate", 0, "sleep handler: fraction of tasks that straggle (0..1)")
	fs.DurationVar(&h.stragglerDelay, "straggler-delay", 0, "sleep handler: extra delay of a straggling task")
	fs.IntVar(&h.catalogSize, "catalog-size", demo.CatalogSize, "search handler: products in the demo catalogue")
}

func (h *handlerFlags) build(recipient string) (processor.Handler, error) {
	switch h.name {
	case "quote":
		if recipient == "" {
			return nil, errors.New("--handler quote needs --recipient (the provider's name)")
		}
		return demo.Provider{Name: recipient, Latency: h.delay, Margin: h.quoteMargin}.Handler(), nil
	case "echo":
		return processor.Echo(), nil
	case "http":
		if h.httpURL == "" {
			return nil, errors.New("--handler http needs --http-url")
		}
		return processor.HTTP(processor.HTTPConfig{URL: h.httpURL, Timeout: h.httpTimeout})
	case "sleep":
		return processor.Sleep(processor.SleepConfig{Delay: h.delay, MaxDelay: h.maxDelay, FailureRate: h.failureRate,
			StragglerRate: h.stragglerRate, StragglerDelay: h.stragglerDelay, Seed: time.Now().UnixNano()})
	case "search":
		if h.catalogSize < 1 {
			return nil, fmt.Errorf("--catalog-size: %d, want at least 1", h.catalogSize)
		}
		return demo.Search(catalog.New(h.catalogSize, demo.CatalogSeed)), nil
	}
	return nil, fmt.Errorf("--handler %q: want echo, sleep, search, quote or http", h.name)
}

func processorCmd() *Command {
	var (
		c         common
		o         observeFlags
		h         handlerFlags
		route     string
		recipient string
		group     string
		retries   int
		backoff   time.Duration
		conc      int
		ordering  string
		interval  time.Duration
	)
	return &Command{
		Name:    "processor",
		Summary: "Handle the tasks of one route in a consumer group and write a result per task.",
		Usage:   "processor --route R [--recipient NAME] [flags]",
		Long: `Consumes tasks.<route> in a consumer group (default <prefix>processor.<route>, plus
.<recipient> on a broadcast route) and writes one result per task to results,
keyed by correlation id. Handler errors are retried with exponential backoff,
then reported as ERROR; tasks past their deadline are answered EXPIRED without
running the handler; undecodable tasks go to the dlq topic. Start more
instances with the same flags to share the route's partitions.

--recipient must be one of the route's recipients in the route table
(--routes-file, else the demo routes); another is refused at start, naming the
route's. A broadcast task whose sg-recipients header (the scatterer's table)
lacks this processor's recipient gets no result: it is counted in
scattergather_processor_unknown_recipient_tasks_total and warned about once.`,
		Flags: func(fs *flag.FlagSet) {
			c.register(fs, true)
			o.register(fs, DefaultProcessorMetricsAddr)
			h.register(fs)
			fs.StringVar(&route, "route", "", "route whose tasks to handle (required)")
			fs.StringVar(&recipient, "recipient", "", "broadcast routes: the recipient this processor answers as, one of the route's recipients in the route table (another is refused at start; none on a split route)")
			fs.StringVar(&group, "group", "", "consumer group; default <prefix>processor.<route>[.<recipient>]")
			fs.IntVar(&retries, "retries", processor.DefaultRetries, "handler retries after the first try")
			fs.DurationVar(&backoff, "backoff", processor.DefaultBackoff, "first retry delay, doubled per retry")
			fs.IntVar(&conc, "concurrency", 1, "tasks of one partition handled at once; 1 handles each polled batch partition by partition and commits it whole, above 1 pipelines: each result is committed as soon as it is ready and a slow task holds back no other (for slow I/O handlers such as http)")
			fs.DurationVar(&interval, "commit-interval", processor.DefaultCommitInterval, "with --concurrency above 1 under exactly-once: the least time between two transactions (results finished meanwhile share one; back to back, Kafka makes the next one wait on the broker)")
			fs.StringVar(&ordering, "ordering", string(processor.OrderKey), "with --concurrency above 1: key (tasks with the same record key one at a time, in order; split tasks are keyed by shard, broadcast tasks by request) or none (any tasks of a partition in parallel)")
		},
		Run: func(ctx context.Context, _ []string) error {
			if route == "" {
				return errors.New("--route is required")
			}
			handler, err := h.build(recipient)
			if err != nil {
				return err
			}
			// Checked before anything connects: a misspelt --recipient
			// would answer every task as a part no manifest expects.
			table, err := c.routes()
			if err != nil {
				return fmt.Errorf("--routes-file: %w", err)
			}
			r, ok := table.Find(route)
			if !ok {
				return fmt.Errorf("--route %q: not in the route table (have %v)", route, table.Names())
			}
			if err := r.CheckRecipient(recipient); err != nil {
				return fmt.Errorf("--recipient: %w", err)
			}
			s, err := c.setup(ctx, "processor")
			if err != nil {
				return err
			}
			ob, err := o.build(s.log)
			if err != nil {
				return err
			}
			tp, err := ob.tracerProvider(ctx, "processor")
			if err != nil {
				return err
			}
			p, err := processor.New(processor.Config{
				Role: kafkaconfig.Role{
					Client:               ob.client(s.client, "processor"),
					Topics:               c.topics(),
					Group:                group,
					InstanceID:           c.instanceID,
					OffsetCommitInterval: orNone(c.commitInterval),
					TransactionGap:       orNone(c.transactionGap),
					SessionTimeout:       c.sessionTimeout,
					Guarantee:            s.guarantee,
					Logger:               s.base,
					Metrics:              ob.registerer(),
					TracerProvider:       tp,
				},
				Route:          schemas.Route(route),
				Recipient:      schemas.PartID(recipient),
				Retries:        &retries,
				Backoff:        backoff,
				Concurrency:    conc,
				Ordering:       processor.Ordering(ordering),
				CommitInterval: interval,
			}, handler)
			if err != nil {
				return err
			}
			t := c.topics()
			if err := ob.watchTopics(s.client, []string{t.Tasks(route), t.Results(), t.DLQ()}, c.topicsHint()); err != nil {
				return err
			}
			return ob.run(ctx, s.client, []string{p.Group()},
				[]metrics.Check{{Name: "processor", Ready: p.Ready}}, p.Run)
		},
	}
}

func aggregatorCmd() *Command {
	var (
		c          common
		o          observeFlags
		tick       time.Duration
		lateWindow time.Duration
		maxOpen    int
		maxPoll    int
	)
	return &Command{
		Name:    "aggregator",
		Summary: "Gather results by correlation id and emit one reply per request.",
		Usage:   "aggregator [flags]",
		Long: `Consumes results (manifests and results) in the consumer group <prefix>aggregator.
A request completes when every expected part has arrived, or at its deadline
with what is there: the reply marks each part OK, ERROR, EXPIRED or MISSING, so
a partial answer is never taken for a whole one. Deadlines fire on wall-clock
time, also on idle partitions. Duplicates count once; late results are dropped
and counted. A manifest read past its deadline plus --late-window is
dead-lettered (manifest-expired), never answered: no request read again by a
group reset is answered twice.

Backpressure: when an instance holds --max-open-requests open requests it
pauses fetching results (manifests and results share the topic) until its
deadlines bring them down to 90% of the limit; it holds at most
--max-open-requests - 1 + --max-poll-records, plus what a rebalance restores.`,
		Flags: func(fs *flag.FlagSet) {
			c.register(fs, true)
			o.register(fs, DefaultAggregatorMetricsAddr)
			fs.DurationVar(&tick, "tick", 50*time.Millisecond, "how often deadlines are checked when no record arrives")
			fs.DurationVar(&lateWindow, "late-window", 5*time.Minute, "how long completed requests are remembered to drop late results, from their deadline (from the reply if later); manifests read past deadline + late window are dead-lettered")
			fs.IntVar(&maxOpen, "max-open-requests", aggregator.DefaultMaxOpenRequests, "open requests at which an instance pauses fetching results, resuming at 90%; 0: no limit")
			fs.IntVar(&maxPoll, "max-poll-records", aggregator.DefaultMaxPollRecords, "most records in one batch (one transaction), and so the most one batch adds past --max-open-requests; 0: no cap")
		},
		Run: func(ctx context.Context, _ []string) error {
			s, err := c.setup(ctx, "aggregator")
			if err != nil {
				return err
			}
			merges, err := s.table.Merges()
			if err != nil {
				return err
			}
			ob, err := o.build(s.log)
			if err != nil {
				return err
			}
			tp, err := ob.tracerProvider(ctx, "aggregator")
			if err != nil {
				return err
			}
			a, err := aggregator.New(aggregator.Config{
				Role: kafkaconfig.Role{
					Client:               ob.client(s.client, "aggregator"),
					Topics:               c.topics(),
					Guarantee:            s.guarantee,
					InstanceID:           c.instanceID,
					OffsetCommitInterval: orNone(c.commitInterval),
					TransactionGap:       orNone(c.transactionGap),
					SessionTimeout:       c.sessionTimeout,
					Logger:               s.base,
					Metrics:              ob.registerer(),
					TracerProvider:       tp,
				},
				Merges:          merges,
				Tick:            tick,
				LateWindow:      lateWindow,
				MaxOpenRequests: noLimit(maxOpen),
				MaxPollRecords:  noLimit(maxPoll),
			})
			if err != nil {
				return err
			}
			t := c.topics()
			if err := ob.watchTopics(s.client, []string{t.Results(), t.State(), t.Replies(), t.DLQ()}, c.topicsHint()); err != nil {
				return err
			}
			return ob.run(ctx, s.client, []string{a.Group()},
				[]metrics.Check{{Name: "aggregator", Ready: a.Ready}}, a.Run)
		},
	}
}

// noLimit maps a flag's 0 ("no limit") to a Config's -1; a Config's 0 takes
// the default.
func noLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// orNone maps --offset-commit-interval and --transaction-gap, where 0 or
// negative means none (commit every batch, wait for nothing), to the
// roles' settings, where zero takes the default and a negative value
// means none.
func orNone(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
