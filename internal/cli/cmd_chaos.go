package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/scattergather/scattergather/internal/chaos"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// chaosFlags are the chaos command's flags; config turns them into the
// harness's config.
type chaosFlags struct {
	cfg        chaos.Config
	brokers    string
	guarantee  string
	seed       uint64
	stragglers float64
	victims    string
}

func (f *chaosFlags) register(fs *flag.FlagSet) {
	cfg := &f.cfg
	fs.StringVar(&f.brokers, "brokers", "", "Kafka seed brokers to run against; empty starts 'scattergather broker' (kfake) as its own process")
	fs.StringVar(&f.guarantee, "guarantee", string(kafkaconfig.ExactlyOnce), "exactly-once or at-least-once, for every role")
	fs.IntVar(&cfg.Requests, "requests", chaos.DefaultRequests, "requests to send")
	fs.Float64Var(&cfg.Rate, "rate", chaos.DefaultRate, "requests per second, each submitted when due whatever became of those before (an open loop)")
	fs.IntVar(&cfg.Fanout, "fanout", chaos.DefaultFanout, "parts per request")
	fs.DurationVar(&cfg.Timeout, "timeout", chaos.DefaultTimeout, "request timeout (the deadline of every part)")
	fs.IntVar(&cfg.Kills, "kills", chaos.DefaultKills, "roles to kill with SIGKILL during the load")
	fs.IntVar(&cfg.Terms, "terms", 0, "roles to stop with SIGTERM during the load (each must exit 0 within --stop-bound)")
	fs.IntVar(&cfg.Fences, "fences", 0, "times to fence a live role's producer during the load by initialising its transactional id from the harness (exactly-once); the role must build a new client and go on")
	fs.IntVar(&cfg.Kicks, "kicks", 0, "times to have the group coordinator remove a live role from its consumer group during the load (LeaveGroup); the role must rejoin and go on")
	fs.StringVar(&f.victims, "victims", "scatterer,processor,aggregator", "kinds of role that may be killed or stopped, comma separated")
	fs.IntVar(&cfg.BrokerKills, "broker-kills", 0, "times to SIGKILL a broker during the load: with --brokers a random node of the cluster of --kafka-local, started again after --broker-pause-min..max; without, the kfake broker (an experiment: kfake does not recover transactions from a crash, see docs/guarantees.md)")
	fs.IntVar(&cfg.BrokerBounces, "broker-bounces", 0, "times to restart a random node of the --brokers cluster cleanly (SIGTERM, pause, start) during the load; needs --brokers and --kafka-local")
	fs.DurationVar(&cfg.BrokerPauseMin, "broker-pause-min", chaos.DefaultBrokerPauseMin, "shortest time a killed or stopped node of --brokers stays down")
	fs.DurationVar(&cfg.BrokerPauseMax, "broker-pause-max", chaos.DefaultBrokerPauseMax, "longest time a killed or stopped node of --brokers stays down")
	fs.DurationVar(&cfg.BrokerSettle, "broker-settle", chaos.DefaultBrokerSettle, "how long the harness waits, once a node is back and every replica in sync, before it moves the node's leaders back to it, and again, once every partition flows after that move, before the next broker fault")
	fs.StringVar(&cfg.KafkaLocal, "kafka-local", "scripts/kafka-local.sh", "the script that runs the --brokers cluster; --broker-kills and --broker-bounces call its env, kill N, stop-node N and start-node N")
	fs.StringVar(&cfg.KafkaHome, "kafka-home", "", "SG_KAFKA_HOME of the --brokers cluster, passed to --kafka-local; empty: the script's default (.kafka at its repo root)")
	fs.BoolVar(&cfg.AllowBrokerOutage, "allow-broker-outage", false, "kill or bounce nodes even where one node down stops writes (a cluster of one node, or topics whose replication factor is not above min.insync.replicas): an outage, not a failover")
	fs.IntVar(&cfg.ReplicationFactor, "replication-factor", -1, "replication factor of the run's topics; -1 takes the broker's default; 3 or more also sets min.insync.replicas 2")
	fs.IntVar(&cfg.Processors, "processors", chaos.DefaultProcessors, "processor processes")
	fs.IntVar(&cfg.ScaleProcessors, "scale-processors", 0, "processor processes that join at a third of the load and leave (SIGTERM, not restarted) at two thirds: --processors 2 --scale-processors 2 scales 2 -> 4 -> 2")
	fs.BoolVar(&cfg.LoseProcessor, "lose-processor", false, "SIGKILL processor-0 at a third of the load (half, with --scale-processors) and never restart it: an instance lost for good")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", 0, "the roles' --session-timeout (how long a crashed instance's partitions wait before the others take them); 0: their default, 10s")
	fs.Float64Var(&cfg.MinCompletePct, "min-complete-pct", 0, "fail the run (exit 1) when fewer replies than this percentage are COMPLETE; 0: no bound")
	fs.IntVar(&cfg.ProcessorConcurrency, "processor-concurrency", 1, "the processors' --concurrency (1 commits each polled batch whole; above 1 each result as soon as it is ready)")
	fs.IntVar(&cfg.Aggregators, "aggregators", chaos.DefaultAggregators, "aggregator processes")
	fs.IntVar(&cfg.Partitions, "partitions", chaos.DefaultPartitions, "partitions of every topic")
	fs.DurationVar(&cfg.PauseMin, "pause-min", chaos.DefaultPauseMin, "shortest pause before a killed role is restarted")
	fs.DurationVar(&cfg.PauseMax, "pause-max", chaos.DefaultPauseMax, "longest pause before a killed role is restarted")
	fs.DurationVar(&cfg.HedgeDelay, "hedge-delay", 0, "make the route hedged: a part without a result this long after submission is sent again to another partition (budget 1); 0: not hedged")
	fs.Float64Var(&f.stragglers, "straggler-rate", chaos.DefaultStragglerRate, "fraction of tasks delayed past their deadline (0 for none)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the kill schedule (victims, moments, pauses); 0 picks one and prints it")
	fs.DurationVar(&cfg.Slack, "slack", chaos.DefaultSlack, "how long before its deadline a part's result must have been committed to count as in time")
	fs.DurationVar(&cfg.OnTime, "on-time", chaos.DefaultOnTime, "how long after its deadline a reply counts as on time (later: no aggregator was serving the request)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", chaos.DefaultDrainTimeout, "how long to wait after the last request for every reply")
	fs.DurationVar(&cfg.StopBound, "stop-bound", chaos.DefaultStopBound, "how long a role may take to exit after SIGTERM")
	fs.StringVar(&cfg.Prefix, "topic-prefix", "", "prefix of the run's topics and groups; default chaos-<random>.")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "directory for the role logs; default a temporary one, deleted if the run passes")
	fs.StringVar(&cfg.KafkaLogLevel, "kafka-log-level", "warn", "the roles' --kafka-log-level: level of the Kafka client's own logs in the role logs (debug, info, warn, error or none)")
	fs.BoolVar(&cfg.KeepTopics, "keep-topics", false, "keep the run's topics on --brokers (deleted after a run that passed, unless --topic-prefix was given)")
	fs.DurationVar(&cfg.Progress, "progress", chaos.DefaultProgress, "interval of progress lines")
}

// config returns the harness's config for the flags as parsed; the
// harness validates it (chaos.New).
func (f *chaosFlags) config() (chaos.Config, error) {
	g, err := kafkaconfig.ParseGuarantee(f.guarantee)
	if err != nil {
		return chaos.Config{}, fmt.Errorf("--guarantee: %w", err)
	}
	cfg := f.cfg
	cfg.Guarantee, cfg.Brokers, cfg.Seed = g, splitList(f.brokers), f.seed
	cfg.StragglerRate = f.stragglers
	if f.stragglers == 0 {
		cfg.StragglerRate = -1 // none; zero would take the default
	}
	cfg.Victims = splitList(f.victims)
	cfg.Out = os.Stdout
	return cfg, nil
}

func chaosCmd() *Command {
	var f chaosFlags
	return &Command{
		Name:    "chaos",
		Summary: "Kill roles (and Kafka nodes) under load and check that every request got exactly one right reply.",
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

Broker crashes on real Kafka: with --brokers pointing at a cluster of
scripts/kafka-local.sh (start --brokers 3), --broker-kills N kills a random
node N times with SIGKILL and --broker-bounces N restarts one cleanly
(SIGTERM), at random moments of the load, one at a time: the node stays down
--broker-pause-min..max (5-15s, from --seed), is started again with its own
config and data (kafka-local.sh start-node), and the next fault waits until
every replica is back in sync, --broker-settle (5s) has passed, the node's
leaders have been moved back to it (a preferred leader election, as an
operator would run), every partition of results and replies has shown a
record since that move (while load is offered; at most 30s), and
--broker-settle has passed again. The harness calls
--kafka-local (default
scripts/kafka-local.sh, with --kafka-home as SG_KAFKA_HOME) and checks first
that --brokers are that cluster's nodes. Use --replication-factor 3 (topics
with min.insync.replicas 2); a cluster where one node down stops writes (one
node, or replication not above min.insync.replicas) is refused unless
--allow-broker-outage. A fault takes 30-70s (pause, restart, catch-up,
settling): lower --rate to keep them all under load. The "broker faults" line
gives each fault two stalls: its "longest stall", the longest time a partition
of results or replies showed no new record that ended between the signal and
the node's restart (what its death cost), and "on its return", the same from
the restart to the fault's end. For example:

  SG_KAFKA_PORT=27092 scripts/kafka-local.sh start --brokers 3
  scattergather chaos --brokers 127.0.0.1:27092,127.0.0.1:27093,127.0.0.1:27094 \
    --replication-factor 3 --rate 20 --kills 6 --broker-kills 2 --broker-bounces 1

Afterwards it reads replies, results and tasks from the start (read_committed)
and checks: every request has exactly one reply, none is missing; a COMPLETE
reply has every part OK with the payload of a committed result of that part;
a part is not OK only when it truly missed the deadline (see docs/guarantees.md
for the rule). Under exactly-once no task, manifest or result is committed
twice either. The last line is the verdict (kills counts roles):

  chaos: requests=N replies=N lost=0 duplicated=0 wrong=0 kills=K broker_kills=B broker_bounces=C complete_pct=P longest_stall_s=S guarantee=exactly-once broker=kfake

complete_pct is the share of COMPLETE replies; longest_stall_s the longest
time, while requests were sent, that a partition of results or replies
showed no new record.

Exit status 1 when lost, wrong or (exactly-once) duplicated is above zero, a
role did not stop cleanly on SIGTERM, or a broker fault failed (a node that
did not come back); at-least-once reports duplicates.
Role logs go to --log-dir (default a temporary dir, kept and tailed on failure).
Ctrl-C kills every child process (a node that is down is started again first).`,
		Flags: f.register,
		Run: func(ctx context.Context, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
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
