package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/scattergather/scattergather/internal/chaos"
	"github.com/scattergather/scattergather/internal/kafka"
)

func chaosCmd() *Command {
	var (
		cfg        chaos.Config
		brokers    string
		guarantee  string
		seed       uint64
		stragglers float64
		victims    string
	)
	return &Command{
		Name:    "chaos",
		Summary: "Kill roles under load with SIGKILL and check that every request got exactly one right reply.",
		Usage:   "chaos [flags]",
		Long: `Runs a scatterer, --processors processors (sleep handler) and --aggregators
aggregators as separate OS processes (this binary, re-executed with each role's
subcommand and a stable --instance-id), sends --requests requests at --rate per
second through the Go client (route "chaos", split into --fanout parts, a few of
them stragglers that miss the deadline), and meanwhile kills --kills roles with
SIGKILL at random moments (both aggregators, the scatterer and a processor
first), restarting each after a short pause. --fences and --kicks add faults
that leave the role running: its producer fenced, its member removed from the
group; it must recover without exiting. Without --brokers it starts
'scattergather broker' (kfake) as a process of its own and never kills it
(unless --broker-kills asks for that experiment).

Afterwards it reads replies, results and tasks from the start (read_committed)
and checks: every request has exactly one reply, none is missing; a COMPLETE
reply has every part OK with the payload of a committed result of that part;
a part is not OK only when it truly missed the deadline (see docs/guarantees.md
for the rule). Under exactly-once no task, manifest or result is committed
twice either. The last line is the verdict:

  chaos: requests=N replies=N lost=0 duplicated=0 wrong=0 kills=K guarantee=exactly-once broker=kfake

Exit status 1 when lost, wrong or (exactly-once) duplicated is above zero, or
a role did not stop cleanly on SIGTERM; at-least-once reports duplicates.
Role logs go to --log-dir (default a temporary dir, kept and tailed on failure).
Ctrl-C kills every child process.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&brokers, "brokers", "", "Kafka seed brokers to run against; empty starts 'scattergather broker' (kfake) as its own process")
			fs.StringVar(&guarantee, "guarantee", string(kafka.ExactlyOnce), "exactly-once or at-least-once, for every role")
			fs.IntVar(&cfg.Requests, "requests", chaos.DefaultRequests, "requests to send")
			fs.Float64Var(&cfg.Rate, "rate", chaos.DefaultRate, "requests per second")
			fs.IntVar(&cfg.Fanout, "fanout", chaos.DefaultFanout, "parts per request")
			fs.DurationVar(&cfg.Timeout, "timeout", chaos.DefaultTimeout, "request timeout (the deadline of every part)")
			fs.IntVar(&cfg.Kills, "kills", chaos.DefaultKills, "roles to kill with SIGKILL during the load")
			fs.IntVar(&cfg.Terms, "terms", 0, "roles to stop with SIGTERM during the load (each must exit 0 within --stop-bound)")
			fs.IntVar(&cfg.Fences, "fences", 0, "times to fence a live role's producer during the load by initialising its transactional id from the harness (exactly-once); the role must build a new client and go on")
			fs.IntVar(&cfg.Kicks, "kicks", 0, "times to have the group coordinator remove a live role from its consumer group during the load (LeaveGroup); the role must rejoin and go on")
			fs.StringVar(&victims, "victims", "scatterer,processor,aggregator", "kinds of role that may be killed or stopped, comma separated")
			fs.IntVar(&cfg.BrokerKills, "broker-kills", 0, "an experiment: also SIGKILL the kfake broker this many times (not with --brokers); shows what a broker crash does to kfake's transactions, see docs/guarantees.md")
			fs.IntVar(&cfg.Processors, "processors", chaos.DefaultProcessors, "processor processes")
			fs.IntVar(&cfg.ProcessorConcurrency, "processor-concurrency", 1, "the processors' --concurrency (1 commits each polled batch whole; above 1 each result as soon as it is ready)")
			fs.IntVar(&cfg.Aggregators, "aggregators", chaos.DefaultAggregators, "aggregator processes")
			fs.IntVar(&cfg.Partitions, "partitions", chaos.DefaultPartitions, "partitions of every topic")
			fs.DurationVar(&cfg.PauseMin, "pause-min", chaos.DefaultPauseMin, "shortest pause before a killed role is restarted")
			fs.DurationVar(&cfg.PauseMax, "pause-max", chaos.DefaultPauseMax, "longest pause before a killed role is restarted")
			fs.Float64Var(&stragglers, "straggler-rate", chaos.DefaultStragglerRate, "fraction of tasks delayed past their deadline (0 for none)")
			fs.Uint64Var(&seed, "seed", 0, "seed of the kill schedule (victims, moments, pauses); 0 picks one and prints it")
			fs.DurationVar(&cfg.Slack, "slack", chaos.DefaultSlack, "how long before its deadline a part's result must have been committed to count as in time")
			fs.DurationVar(&cfg.OnTime, "on-time", chaos.DefaultOnTime, "how long after its deadline a reply counts as on time (later: no aggregator was serving the request)")
			fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", chaos.DefaultDrainTimeout, "how long to wait after the last request for every reply")
			fs.DurationVar(&cfg.StopBound, "stop-bound", chaos.DefaultStopBound, "how long a role may take to exit after SIGTERM")
			fs.StringVar(&cfg.Prefix, "topic-prefix", "", "prefix of the run's topics and groups; default chaos-<random>.")
			fs.StringVar(&cfg.LogDir, "log-dir", "", "directory for the role logs; default a temporary one, deleted if the run passes")
			fs.BoolVar(&cfg.KeepTopics, "keep-topics", false, "keep the run's topics on --brokers (deleted after a run that passed, unless --topic-prefix was given)")
			fs.DurationVar(&cfg.Progress, "progress", chaos.DefaultProgress, "interval of progress lines")
		},
		Run: func(ctx context.Context, _ []string) error {
			g, err := kafka.ParseGuarantee(guarantee)
			if err != nil {
				return fmt.Errorf("--guarantee: %w", err)
			}
			cfg.Guarantee, cfg.Brokers, cfg.Seed = g, splitList(brokers), seed
			cfg.StragglerRate = stragglers
			cfg.Victims = splitList(victims)
			if stragglers == 0 {
				cfg.StragglerRate = -1 // none; zero would take the default
			}
			cfg.Out = os.Stdout
			h, err := chaos.New(cfg)
			if err != nil {
				return err
			}
			start := time.Now()
			rep, err := h.Run(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted after %s; every child process was killed", time.Since(start).Round(time.Second))
				}
				return err
			}
			if !rep.OK() {
				return ExitError{Code: 1}
			}
			return nil
		},
	}
}
