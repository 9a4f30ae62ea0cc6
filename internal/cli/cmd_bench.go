package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/bench"
	"github.com/scattergather/scattergather/internal/embedded"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
)

// sweepFlags collects repeated --sweep flags.
type sweepFlags []bench.SweepDim

func (s *sweepFlags) String() string {
	parts := make([]string, len(*s))
	for i, d := range *s {
		parts[i] = d.String()
	}
	return strings.Join(parts, " ")
}

func (s *sweepFlags) Set(v string) error {
	d, err := bench.ParseSweep(v)
	if err != nil {
		return err
	}
	*s = append(*s, d)
	return nil
}

func benchCmd() *Command {
	var (
		c          common
		cfg        bench.Config
		mode       string
		jsonFile   string
		plotFile   string
		cpuProfile string
		quiet      bool
		sweeps     sweepFlags
		hedging    bool
		hcfg       bench.Hedging
	)
	return &Command{
		Name:    "bench",
		Summary: "Measure the pipeline's throughput and latency, against a raw-Kafka baseline in the same run.",
		Usage:   "bench [flags]",
		Long: `Starts an embedded broker in this process (or uses --brokers), runs every role in
this process (or, with --external, drives roles that already run elsewhere),
offers load to the route "bench" and prints throughput (requests/s, tasks/s,
MB/s), end-to-end latency (p50/p90/p99/p99.9/max from an HDR histogram),
the replies' outcomes and the CPU time used.

Load: open loop with --rate (requests are sent on schedule whether or not
earlier ones were answered; latency runs from each request's intended send
time, so queueing is not hidden), or closed loop with --concurrency (the
default, 16 in flight: finds the maximum throughput).

--baseline also measures, in the same run and on the same broker, a raw
franz-go chain with the same hops and records per request (request → fan-out
tasks → fan-out results → reply), record sizes, keys, partitions, acks, linger
and guarantee, and prints the pipeline/baseline ratios. --sweep runs one bench
per value (repeat it for a grid). See docs/benchmarks.md.

Examples:
  scattergather bench --baseline
  scattergather bench --rate 500 --duration 30s --baseline --plot bench.html --json bench.json
  scattergather bench --sweep fanout=1,4,16,64 --baseline --guarantee at-least-once
  scattergather bench --brokers 127.0.0.1:19092 --sweep processors=1,2,4 --handler sleep --sleep-delay 5ms`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.brokers, "brokers", "", "Kafka seed brokers, comma separated; empty starts an embedded broker (kfake) in this process")
			registerSecurity(fs, &c.security)
			c.registry.register(fs)
			fs.StringVar(&c.prefix, "topic-prefix", kafkaconfig.DefaultPrefix, "prefix of every topic name; without --external each phase creates and deletes its own topics under <prefix>bench.<run id>.")
			fs.IntVar(&c.partitions, "partitions", 6, "partitions of requests, tasks.<route> and replies (pipeline and baseline)")
			fs.IntVar(&c.resultPartitions, "result-partitions", 6, "partitions of results and aggregator-state (pipeline and baseline)")
			fs.IntVar(&c.replication, "replication-factor", -1, "replication factor of the bench's topics; -1 takes the broker's default")
			fs.StringVar(&c.guarantee, "guarantee", string(kafkaconfig.ExactlyOnce), "exactly-once (Kafka transactions on every hop, pipeline and baseline) or at-least-once")
			fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
			fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
			fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "none", "level of the Kafka client's own logs: debug, info, warn, error or none")
			fs.BoolVar(&cfg.External, "external", false, "drive roles that already run elsewhere (needs --brokers and --route; --topic-prefix, --mode and --fanout must match them): only the client side runs here")
			fs.StringVar(&cfg.Route, "route", bench.DefaultRoute, "route to send requests to")
			fs.StringVar(&mode, "mode", string(scatterer.Split), "route mode: split (a different task per shard) or broadcast (one task to --fanout recipient groups)")
			fs.IntVar(&cfg.Fanout, "fanout", bench.DefaultFanout, "parts per request: shards of a split request, recipients of a broadcast route")
			fs.IntVar(&cfg.PayloadBytes, "payload-bytes", bench.DefaultPayloadBytes, "size of each request's payload (a JSON string)")
			fs.StringVar(&cfg.Handler.Name, "handler", "echo", "processor handler: echo (answers with the payload) or sleep")
			fs.DurationVar(&cfg.Handler.Delay, "sleep-delay", 10*time.Millisecond, "sleep handler: delay per task")
			fs.DurationVar(&cfg.Handler.MaxDelay, "sleep-max-delay", 0, "sleep handler: if above --sleep-delay, the delay is uniform in [sleep-delay, sleep-max-delay]")
			fs.IntVar(&cfg.Processors, "processors", 1, "processor instances (per recipient on a broadcast route), in the pipeline and in the baseline's middle hop")
			fs.DurationVar(&cfg.TransactionGap, "transaction-gap", kafkaconfig.DefaultTransactionGap, "exactly-once: every hop's least time from the end of a transaction to the poll for its next batch, in the pipeline and in the baseline (the roles' --transaction-gap); 0 or negative: no wait")
			fs.DurationVar(&cfg.Timeout, "timeout", bench.DefaultTimeout, "timeout of each request")
			fs.Float64Var(&cfg.Load.Rate, "rate", 0, "open loop: requests per second, sent on schedule; 0 runs a closed loop")
			fs.IntVar(&cfg.Load.Concurrency, "concurrency", 0, "closed loop: requests in flight (default 16 when --rate is not set)")
			fs.DurationVar(&cfg.Load.Duration, "duration", 10*time.Second, "how long to measure, after the warmup")
			fs.IntVar(&cfg.Load.Requests, "requests", 0, "measure this many requests instead of --duration")
			fs.DurationVar(&cfg.Load.Warmup, "warmup", 2*time.Second, "how long to send load before measuring")
			fs.DurationVar(&cfg.Settle, "settle", 20*time.Second, "before the first phase, send the load unmeasured until three 2s rounds in a row agree within 10% (replies/s; p50 in an open loop), for at most this long: a fresh broker ramps up over 10-15s; 0 turns it off")
			fs.IntVar(&cfg.Load.MaxInFlight, "max-inflight", bench.DefaultMaxInFlight, "open loop: cap on requests in flight; at the cap the schedule waits (and the wait counts in the latency)")
			fs.BoolVar(&cfg.Baseline, "baseline", false, "also measure the raw-Kafka baseline chain in the same run and print the ratios")
			fs.Var(&sweeps, "sweep", "run one bench per value: KEY=V1,V2,... with KEY one of "+strings.Join(bench.SweepKeys, ", ")+"; repeat for a grid")
			fs.StringVar(&jsonFile, "json", "", "write every figure to this JSON file")
			fs.StringVar(&plotFile, "plot", "", "write charts (throughput and latency over time, latency distribution) to this self-contained HTML file")
			fs.StringVar(&cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the whole run to this file")
			fs.BoolVar(&cfg.KeepTopics, "keep-topics", false, "keep the bench's topics and consumer groups instead of deleting them after each phase")
			fs.BoolVar(&quiet, "quiet", false, "no progress line on stderr")
			fs.BoolVar(&hedging, "compare-hedging", false, "run three phases with the sleep handler (--sleep-delay): no stragglers, stragglers, stragglers on a hedged route; print their p99 and the hedges' extra tasks (the --json file gets a \"hedging\" object)")
			fs.Float64Var(&hcfg.StragglerRate, "straggler-rate", bench.DefaultStragglerRate, "--compare-hedging: fraction of tasks that straggle")
			fs.DurationVar(&hcfg.StragglerDelay, "straggler-delay", bench.DefaultStragglerDelay, "--compare-hedging: extra sleep of a straggling task")
			fs.DurationVar(&hcfg.Hedge.Delay, "hedge-delay", 0, "--compare-hedging: fixed hedge delay (with --hedge-percentile: the delay until enough latencies are known)")
			fs.Float64Var(&hcfg.Hedge.Percentile, "hedge-percentile", 0, "--compare-hedging: adaptive hedge delay at this percentile of the observed task latency (default 95 when --hedge-delay is not set)")
			fs.DurationVar(&hcfg.Hedge.MinDelay, "hedge-min-delay", scatterer.DefaultHedgeMinDelay, "--compare-hedging: floor of the adaptive hedge delay")
			fs.IntVar(&hcfg.Hedge.MinSamples, "hedge-min-samples", scatterer.DefaultHedgeMinSamples, "--compare-hedging: latencies the adaptive delay needs")
			fs.Float64Var(&hcfg.Hedge.Budget, "hedge-budget", scatterer.DefaultHedgeBudget, "--compare-hedging: hedges at most this fraction of the tasks")
			fs.IntVar(&hcfg.ProcessorConcurrency, "processor-concurrency", bench.DefaultProcessorConcurrency, "--compare-hedging: the processors' --concurrency (tasks of a partition at once; hedging needs it above 1)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q", args)
			}
			log, err := c.logger()
			if err != nil {
				return err
			}
			g, err := c.parseGuarantee()
			if err != nil {
				return err
			}
			cfg.Guarantee, cfg.Mode, cfg.Logger = g, scatterer.Mode(mode), log
			cfg.Topics, cfg.Layout = c.topics(), c.layout()
			if plotFile != "" && !strings.HasSuffix(plotFile, ".html") {
				return fmt.Errorf("--plot %s: only HTML is written; name the file *.html", plotFile)
			}
			if !quiet {
				cfg.Progress = os.Stderr
				if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					cfg.ProgressTTY = true
				}
			}
			cfg.TransactionGap = orNone(cfg.TransactionGap)
			brokers := c.brokerList()
			if len(brokers) == 0 {
				if sec := c.security.String(); sec != "plaintext" {
					return fmt.Errorf("--tls/--sasl-* (%s) need --brokers: the embedded broker speaks plaintext", sec)
				}
				if cfg.External {
					return errors.New("--external needs --brokers: the roles to drive run on a real cluster or a dev broker")
				}
				b, err := embedded.Start(embedded.Config{Addr: "127.0.0.1:0"})
				if err != nil {
					return err
				}
				defer b.Close()
				brokers = b.Addrs()
				cfg.Broker = "embedded kfake in this process (" + brokers[0] + ")"
			}
			if cfg.Client, err = c.clientConfig(brokers, "scattergather-bench"); err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			// In registry mode the pipeline's records travel in the Confluent
			// wire format; the baseline's are not Avro and pass untouched.
			if cfg.Client, err = c.registry.apply(ctx, cfg.Client, log); err != nil {
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			if hedging {
				if len(sweeps) > 0 || plotFile != "" || cfg.Baseline {
					return errors.New("--compare-hedging runs its own three phases: no --sweep, --plot or --baseline with it")
				}
				rep, err := bench.CompareHedging(ctx, cfg, hcfg)
				if err != nil {
					return err
				}
				return writeBenchOutputs(rep, rep.WriteTable, jsonFile, "", func(io.Writer, *bench.HedgingReport) error { return nil })
			}
			if len(sweeps) > 0 {
				sr, err := bench.Sweep(ctx, cfg, sweeps, func(r *bench.Report) {
					if !quiet {
						_ = r.WriteTable(os.Stderr)
					}
				})
				if sr != nil && len(sr.Points) > 0 {
					if werr := writeBenchOutputs(sr, sr.WriteTable, jsonFile, plotFile, bench.PlotSweep); werr != nil {
						return errors.Join(err, werr)
					}
				}
				return err
			}
			rep, err := bench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			return writeBenchOutputs(rep, rep.WriteTable, jsonFile, plotFile, bench.PlotReport)
		},
	}
}

// writeBenchOutputs prints the table on stdout and writes the JSON and
// plot files that were asked for.
func writeBenchOutputs[T any](v T, table func(w io.Writer) error, jsonFile, plotFile string, plot func(io.Writer, T) error) error {
	if err := table(os.Stdout); err != nil {
		return err
	}
	if jsonFile != "" {
		if err := bench.WriteJSON(jsonFile, v); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", jsonFile)
	}
	if plotFile != "" {
		f, err := os.Create(plotFile)
		if err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
		if err := errors.Join(plot(f, v), f.Close()); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", plotFile)
	}
	return nil
}
