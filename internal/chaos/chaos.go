package chaos

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// Route is the split route every chaos request goes to.
const Route schemas.Route = "chaos"

// Defaults of [Config].
const (
	DefaultRequests       = 2000
	DefaultRate           = 50
	DefaultFanout         = 4
	DefaultTimeout        = 3 * time.Second
	DefaultProcessors     = 2
	DefaultAggregators    = 2
	DefaultPartitions     = 6
	DefaultKills          = 6
	DefaultPauseMin       = 200 * time.Millisecond
	DefaultPauseMax       = 2 * time.Second
	DefaultStragglerRate  = 0.002
	DefaultSlack          = time.Second
	DefaultOnTime         = 300 * time.Millisecond
	DefaultDrainTimeout   = 2 * time.Minute
	DefaultStopBound      = 20 * time.Second
	DefaultSettle         = 3 * time.Second
	DefaultProgress       = 5 * time.Second
	DefaultBrokerPauseMin = 5 * time.Second
	DefaultBrokerPauseMax = 15 * time.Second
	// DefaultBrokerSettle is how long a returned node is left before its
	// leaders move back to it, and after (BrokerSettle).
	DefaultBrokerSettle = 5 * time.Second
)

// Config configures a chaos run. Zero fields take the defaults above;
// Validate fills them in.
type Config struct {
	// Exe is the scattergather binary that every role (and the broker) is
	// run as, one OS process each; default os.Executable().
	Exe string
	// Env is added to each child's environment.
	Env []string
	// Brokers of a running Kafka to use; empty starts `Exe broker` (kfake)
	// as a child process on a free port with a temporary data dir. Its
	// nodes are killed only with BrokerKills or BrokerBounces, through
	// KafkaLocal.
	Brokers []string
	// ReplicationFactor of the run's topics; 0 or -1 takes the broker's
	// default. At 3 or more the topics also get min.insync.replicas 2, so
	// that one node down stops no write.
	ReplicationFactor int
	// Prefix of the run's topics and groups; default "chaos-<random>.", so
	// runs never see each other's data. Only topics under a generated
	// prefix are ever deleted.
	Prefix string
	// Requests to send, at Rate per second, each split into Fanout parts
	// with Timeout.
	Requests int
	Rate     float64
	Fanout   int
	Timeout  time.Duration
	// Processors (sleep handler, one consumer group) and Aggregators to run.
	Processors  int
	Aggregators int
	// ProcessorConcurrency is the processors' --concurrency: 1 (the
	// default) commits each polled batch whole, above 1 each result as soon
	// as it is ready.
	ProcessorConcurrency int
	// Partitions of every topic.
	Partitions int
	// Kills is how many roles get SIGKILL during the load, at random
	// moments; both aggregators are among the first victims picked, then
	// the scatterer and a processor. Terms is how many get SIGTERM instead
	// (a graceful stop that must exit 0 within StopBound). Each victim is
	// restarted, with the same instance id, after a random pause in
	// [PauseMin, PauseMax].
	Kills, Terms       int
	PauseMin, PauseMax time.Duration
	// Fences is how many times the harness fences a live role's producer
	// under load: it initialises the role's transactional id itself
	// (InitProducerID), as a restarted twin or a transaction timeout
	// would; exactly-once only. Kicks is how many times it has the group
	// coordinator remove a live role from its group (LeaveGroup naming its
	// member), as a session timeout under load would. Neither kills the
	// role: it must ride them out (internal/kafka.Hop builds a new client)
	// without exiting, and without losing, repeating or spoiling a reply.
	// Victims take turns by kind, as for Terms.
	Fences, Kicks int
	// ScaleProcessors is how many processor instances join the run at a
	// third of the load and leave it (SIGTERM, not restarted) at two
	// thirds: with Processors 2 and ScaleProcessors 2 the route scales
	// 2 -> 4 -> 2 under load (issue #16: at least 99.9% COMPLETE).
	ScaleProcessors int
	// LoseProcessor SIGKILLs processor-0 at a third of the load (half,
	// with ScaleProcessors) and never restarts it: an instance lost for
	// good, whose partitions wait out its static membership's session
	// timeout (10s) before the others take them.
	LoseProcessor bool
	// SessionTimeout is the roles' --session-timeout; zero leaves their
	// default (10s).
	SessionTimeout time.Duration
	// MinCompletePct fails the run when fewer first replies than this
	// percentage are COMPLETE; 0 sets no bound.
	MinCompletePct float64
	// Victims limits the kinds of role that are killed or stopped:
	// "scatterer", "processor", "aggregator"; empty means all three.
	Victims []string
	// BrokerKills is how many times a broker gets SIGKILL during the load.
	// With Brokers: a random node of the cluster of KafkaLocal, started
	// again (its config and data as they were) after a pause in
	// [BrokerPauseMin, BrokerPauseMax]; BrokerBounces adds clean restarts
	// (SIGTERM) of a random node. One broker fault at a time; each waits
	// until the node is back and every replica in sync (2 minutes at most).
	// A cluster where one node down stops writes (one node, or a topic
	// whose replication factor is not above its min.insync.replicas) is
	// refused unless AllowBrokerOutage.
	//
	// Without Brokers, BrokerKills kills the kfake broker the harness runs,
	// restarting it on the same port and data dir: an experiment that
	// shows what a crash of kfake does to transactions
	// (docs/guarantees.md); exactly-once is not expected to survive it.
	BrokerKills, BrokerBounces int
	// BrokerPauseMin and BrokerPauseMax bound how long a node of Brokers
	// stays down; default 5s and 15s.
	BrokerPauseMin, BrokerPauseMax time.Duration
	// BrokerSettle is how long, once a node is back and every replica in
	// sync, the harness waits before it moves the node's leaders back to
	// it (a preferred leader election), and again after that before the
	// fault ends: the next fault waits for it, so that it strikes a
	// balanced cluster that has absorbed the last, and what the return
	// costs is counted as this fault's; default 5s.
	BrokerSettle time.Duration
	// AllowBrokerOutage lets broker faults go ahead where a node down
	// stops writes: the run then measures an outage, not a failover.
	AllowBrokerOutage bool
	// KafkaLocal is scripts/kafka-local.sh, which runs the cluster at
	// Brokers; broker faults call its env, kill, stop-node and start-node.
	// KafkaHome is the SG_KAFKA_HOME it runs with; empty keeps the
	// environment's (the script's default is .kafka at its repo root).
	KafkaLocal, KafkaHome string
	// HedgeDelay, when above zero, makes the run's route hedged: a part
	// without a result that long after submission is sent again to
	// another partition (attempt 2), with a budget of 1 (every part may
	// be hedged). The verifier takes a part's second attempt for what it
	// is, not for a duplicate.
	HedgeDelay time.Duration
	// StragglerRate is the fraction of tasks the sleep handler delays past
	// their deadline, so that PARTIAL replies occur; default 0.002. Set it
	// below zero for none.
	StragglerRate float64
	// Guarantee every role runs with.
	Guarantee kafkaconfig.Guarantee
	// Seed makes the schedule (victims, moments, pauses) repeatable; zero
	// picks one, printed at the start.
	Seed uint64
	// Slack is how long before its deadline a part's result must have
	// been committed to count as in time (see docs/guarantees.md).
	Slack time.Duration
	// OnTime is how long after its deadline a reply counts as on time,
	// from an aggregator that was serving the request; default 300ms.
	OnTime time.Duration
	// DrainTimeout bounds the wait, after the last request, for every reply
	// and every part's result.
	DrainTimeout time.Duration
	// StopBound is how long a role may take to exit after SIGTERM.
	StopBound time.Duration
	// Settle is how long to wait after draining for late duplicates.
	Settle time.Duration
	// KafkaLogLevel is the roles' --kafka-log-level (the Kafka client's own
	// logs in the role logs); default warn.
	KafkaLogLevel string
	// LogDir receives one log file per role; empty uses a temporary
	// directory, deleted after a run that passed.
	LogDir string
	// KeepTopics keeps the run's topics on an external broker; by default
	// they are deleted after a run that passed, if Prefix was generated.
	KeepTopics bool
	// Progress is the interval of progress lines.
	Progress time.Duration
	// Out receives progress, the summary and the final line; default
	// os.Stdout.
	Out io.Writer
	// Logger receives the Kafka clients' warnings; default discards.
	Logger *slog.Logger

	generatedPrefix bool // Validate made Prefix up: the run's topics are ours to delete
}

// Validate fills in defaults and reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			errs = append(errs, fmt.Errorf("exe: %w", err))
		}
		c.Exe = exe
	}
	intDefault := func(name string, v *int, def, lo int) {
		if *v == 0 {
			*v = def
		}
		if *v < lo {
			errs = append(errs, fmt.Errorf("%s: %d, want at least %d", name, *v, lo))
		}
	}
	intDefault("requests", &c.Requests, DefaultRequests, 1)
	intDefault("fanout", &c.Fanout, DefaultFanout, 1)
	intDefault("processors", &c.Processors, DefaultProcessors, 1)
	intDefault("aggregators", &c.Aggregators, DefaultAggregators, 1)
	intDefault("processor concurrency", &c.ProcessorConcurrency, 1, 1)
	intDefault("partitions", &c.Partitions, DefaultPartitions, 1)
	if c.ScaleProcessors < 0 || c.MinCompletePct < 0 || c.MinCompletePct > 100 {
		errs = append(errs, fmt.Errorf("scale processors %d, min complete pct %g: want zero or more, and a percentage up to 100", c.ScaleProcessors, c.MinCompletePct))
	}
	if c.LoseProcessor && c.Processors < 2 && c.ScaleProcessors == 0 {
		errs = append(errs, errors.New("lose processor: needs another processor to take its partitions (processors 2 or more)"))
	}
	if c.Kills < 0 || c.Terms < 0 || c.BrokerKills < 0 || c.BrokerBounces < 0 || c.Fences < 0 || c.Kicks < 0 {
		errs = append(errs, fmt.Errorf("kills %d, terms %d, broker kills %d, broker bounces %d, fences %d, kicks %d: want zero or more",
			c.Kills, c.Terms, c.BrokerKills, c.BrokerBounces, c.Fences, c.Kicks))
	}
	switch {
	case len(c.Brokers) == 0 && c.BrokerBounces > 0:
		errs = append(errs, errors.New("broker bounces: only with brokers (a cluster of scripts/kafka-local.sh), not on the kfake broker the harness starts"))
	case len(c.Brokers) > 0 && c.BrokerKills+c.BrokerBounces > 0 && c.KafkaLocal == "":
		errs = append(errs, errors.New("broker kills and bounces with brokers: kafka local (scripts/kafka-local.sh, which runs that cluster) is not set"))
	}
	switch {
	case c.ReplicationFactor == 0:
		c.ReplicationFactor = -1
	case c.ReplicationFactor < -1 || c.ReplicationFactor > math.MaxInt16:
		errs = append(errs, fmt.Errorf("replication factor: %d, want -1 (the broker's default) or at least 1", c.ReplicationFactor))
	case c.ReplicationFactor > 1 && len(c.Brokers) == 0:
		errs = append(errs, fmt.Errorf("replication factor: %d needs brokers; the kfake broker the harness starts is one node", c.ReplicationFactor))
	}
	for _, v := range c.Victims {
		if !slices.Contains(roleKinds, v) {
			errs = append(errs, fmt.Errorf("victims: %q is not a role; want some of %v", v, roleKinds))
		}
	}
	if len(c.Victims) == 0 {
		c.Victims = roleKinds
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate: %v, want a positive number of requests per second", c.Rate))
	}
	durDefault := func(name string, v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 {
			errs = append(errs, fmt.Errorf("%s: %s is negative", name, *v))
		}
	}
	durDefault("timeout", &c.Timeout, DefaultTimeout)
	durDefault("pause min", &c.PauseMin, DefaultPauseMin)
	durDefault("pause max", &c.PauseMax, DefaultPauseMax)
	durDefault("slack", &c.Slack, DefaultSlack)
	durDefault("on time", &c.OnTime, DefaultOnTime)
	durDefault("drain timeout", &c.DrainTimeout, DefaultDrainTimeout)
	durDefault("stop bound", &c.StopBound, DefaultStopBound)
	durDefault("settle", &c.Settle, DefaultSettle)
	durDefault("progress", &c.Progress, DefaultProgress)
	durDefault("broker pause min", &c.BrokerPauseMin, DefaultBrokerPauseMin)
	durDefault("broker pause max", &c.BrokerPauseMax, DefaultBrokerPauseMax)
	durDefault("broker settle", &c.BrokerSettle, DefaultBrokerSettle)
	if c.HedgeDelay < 0 || c.HedgeDelay >= c.Timeout {
		errs = append(errs, fmt.Errorf("hedge delay %s: want zero (no hedging) or a positive delay shorter than the timeout (%s)", c.HedgeDelay, c.Timeout))
	}
	if c.PauseMax < c.PauseMin {
		errs = append(errs, fmt.Errorf("pause max %s is below pause min %s", c.PauseMax, c.PauseMin))
	}
	if c.BrokerPauseMax < c.BrokerPauseMin {
		errs = append(errs, fmt.Errorf("broker pause max %s is below broker pause min %s", c.BrokerPauseMax, c.BrokerPauseMin))
	}
	switch {
	case c.StragglerRate == 0:
		c.StragglerRate = DefaultStragglerRate
	case c.StragglerRate < 0:
		c.StragglerRate = 0
	case c.StragglerRate > 1 || math.IsNaN(c.StragglerRate):
		errs = append(errs, fmt.Errorf("straggler rate: %v is not in [0, 1]", c.StragglerRate))
	}
	if c.Guarantee == "" {
		c.Guarantee = kafkaconfig.ExactlyOnce
	}
	if _, err := kafkaconfig.ParseGuarantee(string(c.Guarantee)); err != nil {
		errs = append(errs, err)
	}
	if c.Fences > 0 && c.Guarantee != kafkaconfig.ExactlyOnce {
		errs = append(errs, fmt.Errorf("fences: %d under %s, where roles have no transactional id to fence; want exactly-once", c.Fences, c.Guarantee))
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			errs = append(errs, fmt.Errorf("brokers: empty address in %q", strings.Join(c.Brokers, ",")))
			break
		}
	}
	if c.Seed == 0 {
		c.Seed = mrand.Uint64()
	}
	if c.Prefix == kafkaconfig.DefaultPrefix {
		// SG_TOPIC_PREFIX=sg. in the environment would otherwise point a
		// chaos run at a real pipeline's topics.
		errs = append(errs, fmt.Errorf("prefix: %q is the pipeline's default prefix; a chaos run needs topics of its own", c.Prefix))
	}
	if c.Prefix == "" {
		c.generatedPrefix = true
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Prefix = "chaos-" + hex.EncodeToString(b[:]) + "."
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// roleKinds are the kinds of role a run starts, in the order SIGTERMs go
// to them.
var roleKinds = []string{"aggregator", "processor", "scatterer"}

// Stop is one SIGTERM sent to a role and how the role took it.
type Stop struct {
	Role  string
	Final bool // at the end of the run rather than under load
	Code  int  // exit status; 128+n when signal n ended it
	Took  time.Duration
	Err   error // e.g. it overran the bound and was killed
}

// Report is the verdict of a run.
type Report struct {
	// Requests sent; reply records read (duplicates included).
	Requests, Replies int
	// Lost: requests without a reply (LostReplies) plus parts of a
	// scattered request that never got a task or a result (LostParts).
	Lost, LostReplies, LostParts int
	// Duplicated: replies beyond the first of a request; under
	// exactly-once also manifests, tasks and results committed more than
	// once (HopDuplicates), which at-least-once allows and only reports.
	Duplicated, DuplicateReplies int
	// ConflictingDuplicates counts requests whose duplicate replies differ.
	ConflictingDuplicates int
	HopDuplicates         struct{ Manifests, Tasks, Results int }
	// Wrong counts replies that break a rule (see the package doc).
	Wrong int
	// Records read, duplicates included.
	Manifests, Tasks, Results int
	// First replies by status.
	Complete, Partial, Failed int
	// LongestStall is the longest time, while requests were being sent,
	// that a partition of results or replies showed no new record
	// (longestStall in verify.go); LongestStallAt says which and when.
	LongestStall   time.Duration
	LongestStallAt string
	// NotOK counts the parts that are not OK in first replies, by reason:
	// verdict, late, outage, never.
	NotOK map[string]int
	// Kills (SIGKILLs of roles), BrokerKills (of a broker: kfake, or a
	// node of Config.Brokers), BrokerBounces (clean restarts of a node),
	// Terms, Fences and Kicks delivered under load.
	Kills, BrokerKills, BrokerBounces, Terms, Fences, Kicks int
	// BrokerFaults lists each kill or bounce of a node of Config.Brokers.
	BrokerFaults []BrokerFault
	// ClientRestarts counts the times a role built a new Kafka client
	// after an error it recovered from (from the role logs).
	ClientRestarts int
	// Stops lists every SIGTERM; BadStops those not exiting 0 in time.
	Stops    []Stop
	BadStops int
	// UnexpectedExits counts roles that exited without being told to.
	UnexpectedExits int
	// Errors of the harness itself (a broker that died, a topic it could
	// not read to the end); any fails the run.
	Errors    []string
	Guarantee kafkaconfig.Guarantee
	Broker    string
	Elapsed   time.Duration
	// MinCompletePct is Config.MinCompletePct: OK fails below it.
	MinCompletePct float64
	// LostAt is when the processor of LoseProcessor was killed, and
	// LastNotCompleteAfter how long after it the last request whose reply
	// was not COMPLETE was sent (0: none after it): how long the pipeline
	// took to recover.
	LostAt               time.Time
	LastNotCompleteAfter time.Duration
	// Problems lists examples of what was wrong.
	Problems []string
	// ReplyLagMax is the longest a reply took from its CompletedAt (when
	// the aggregator decided it) to being read by the observer, and
	// RepliesVisibleLate counts those that took more than a second: a
	// transaction's end, or its commit markers, waiting out a broker fault.
	ReplyLagMax        time.Duration
	RepliesVisibleLate int
}

// OK reports whether the run proved the guarantee: nothing lost, nothing
// wrong, no duplicates under exactly-once, every stop clean.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Wrong == 0 && r.BadStops == 0 && r.UnexpectedExits == 0 && len(r.Errors) == 0 &&
		(r.Guarantee != kafkaconfig.ExactlyOnce || r.Duplicated == 0) && r.CompletePct() >= r.MinCompletePct
}

// Line is the one-line verdict:
//
//	chaos: requests=2000 replies=2000 lost=0 duplicated=0 wrong=0 kills=6 broker_kills=0 broker_bounces=0 complete_pct=97.4 longest_stall_s=3.2 guarantee=exactly-once broker=kfake
func (r Report) Line() string {
	return fmt.Sprintf("chaos: requests=%d replies=%d lost=%d duplicated=%d wrong=%d kills=%d broker_kills=%d broker_bounces=%d complete_pct=%.1f longest_stall_s=%.1f guarantee=%s broker=%s",
		r.Requests, r.Replies, r.Lost, r.Duplicated, r.Wrong, r.Kills, r.BrokerKills, r.BrokerBounces, r.CompletePct(), r.LongestStall.Seconds(), r.Guarantee, r.Broker)
}

// CompletePct is the share of requests whose first reply was COMPLETE, in
// percent.
func (r Report) CompletePct() float64 {
	if r.Requests == 0 {
		return 0
	}
	return 100 * float64(r.Complete) / float64(r.Requests)
}

// Harness runs one chaos run.
type Harness struct {
	cfg Config
	rng *mrand.Rand

	outMu sync.Mutex
	start time.Time
}

// New returns a harness for cfg. It starts nothing until Run.
func New(cfg Config) (*Harness, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("chaos config: %w", err)
	}
	return &Harness{cfg: cfg, rng: mrand.New(mrand.NewPCG(cfg.Seed, 0xc4a05))}, nil
}

// say prints one progress line.
func (h *Harness) say(format string, args ...any) {
	h.outMu.Lock()
	defer h.outMu.Unlock()
	fmt.Fprintf(h.cfg.Out, "chaos: %5.1fs ", time.Since(h.start).Seconds())
	fmt.Fprintf(h.cfg.Out, format, args...)
	fmt.Fprintln(h.cfg.Out)
}

// Run runs the pipeline as child processes, loads it, kills roles, then
// drains, stops everything and checks every reply. It prints progress and,
// last, the report's Line. The error is for runs that could not be carried
// out (no broker, ctx cancelled); a run that was carried out returns its
// Report, whose OK says whether the guarantee held. Every child process
// has exited when Run returns.
func (h *Harness) Run(ctx context.Context) (Report, error) {
	h.start = time.Now()
	logDir, tempLogs := h.cfg.LogDir, h.cfg.LogDir == ""
	var err error
	if tempLogs {
		if logDir, err = os.MkdirTemp("", "scattergather-chaos-"); err != nil {
			return Report{}, err
		}
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return Report{}, err
	}
	r := &run{logDir: logDir}
	rep, err := h.run(ctx, r)
	// Every child has exited and the broker is closed: what is printed
	// now is the last word.
	if err != nil || !rep.OK() {
		for _, p := range r.procs {
			h.outMu.Lock()
			fmt.Fprintf(h.cfg.Out, "----- %s (%s), last lines:\n", p.name, p.logPath)
			for _, l := range p.tail(25) {
				fmt.Fprintln(h.cfg.Out, "  "+l)
			}
			h.outMu.Unlock()
		}
		h.say("logs kept in %s", logDir)
	} else if tempLogs {
		os.RemoveAll(logDir)
	}
	if err != nil {
		return rep, err
	}
	h.summary(rep, r.clientTimeouts)
	return rep, nil
}

// run is the state of one Run that outlives h.run.
type run struct {
	logDir         string
	procs          []*proc
	clientTimeouts int
}

// run does the work of Run; when it returns, every child has exited.
func (h *Harness) run(ctx context.Context, r *run) (rep Report, err error) {
	cfg := h.cfg
	logDir := r.logDir
	rep = Report{Guarantee: cfg.Guarantee, NotOK: map[string]int{}}
	where := "kfake started here"
	if len(cfg.Brokers) > 0 {
		where = strings.Join(cfg.Brokers, ",")
	}
	h.say("seed %d, guarantee %s, %d requests at %g/s, fan-out %d, timeout %s, %d kills, %d terms, %d broker kills, %d broker bounces, processor concurrency %d, brokers %s, replication factor %s, topic prefix %s, logs in %s",
		cfg.Seed, cfg.Guarantee, cfg.Requests, cfg.Rate, cfg.Fanout, cfg.Timeout, cfg.Kills, cfg.Terms, cfg.BrokerKills, cfg.BrokerBounces,
		cfg.ProcessorConcurrency, where, replicationName(cfg.ReplicationFactor), cfg.Prefix, logDir)

	// The broker: the given one, or kfake in a child process of its own,
	// kept running (and killed, with BrokerKills) by a keeper of its own
	// that outlives the roles'.
	brokers, broker := cfg.Brokers, ""
	actions := map[string]chan action{}
	var brokerExits atomic.Int64
	var bp *proc
	if len(brokers) == 0 {
		var addr string
		if bp, addr, err = h.startBroker(logDir); err != nil {
			return rep, err
		}
		r.procs = append(r.procs, bp)
		bctx, stopBroker := context.WithCancel(ctx)
		ch := make(chan action)
		actions[bp.name] = ch
		var bwg sync.WaitGroup
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			bp.keep(bctx, ch, func(p *proc, code int) {
				brokerExits.Add(1)
				h.say("the broker exited on its own with status %d; restarting it", code)
			}, h.say)
		}()
		defer func() {
			a := action{sig: syscall.SIGTERM, bound: cfg.StopBound, final: true, done: make(chan actionResult, 1)}
			select {
			case ch <- a:
				if res := <-a.done; res.err != nil {
					h.say("broker: %v", res.err)
				}
			case <-ctx.Done():
			}
			stopBroker()
			bwg.Wait()
			if err == nil && rep.OK() {
				// Kept after a failed run, next to the logs, for a look
				// at what the broker holds (scattergather broker
				// --data-dir).
				os.RemoveAll(filepath.Join(logDir, "broker-data"))
			}
		}()
		brokers, broker = []string{addr}, "kfake"
	}
	cc := kafkaconfig.Client{Brokers: brokers, ClientID: "scattergather-chaos", Logger: cfg.Logger}
	adminCl, err := kafka.NewClient(cc)
	if err != nil {
		return rep, err
	}
	defer adminCl.Close()
	adm := kadm.NewClient(adminCl)
	if broker == "" {
		broker = identify(ctx, adm)
	}
	rep.Broker = broker
	var cluster *localCluster
	if len(cfg.Brokers) > 0 && cfg.BrokerKills+cfg.BrokerBounces > 0 {
		if cluster, err = openLocalCluster(ctx, cfg.KafkaLocal, cfg.KafkaHome, cfg.Brokers); err != nil {
			return rep, err
		}
	}
	topics := kafkaconfig.Topics{Prefix: cfg.Prefix}
	if err := h.ensureTopics(ctx, adm, topics); err != nil {
		return rep, err
	}
	if cluster != nil {
		risks, err := outageRisks(ctx, adm, cluster.nodes, runTopics(topics))
		if err != nil {
			return rep, fmt.Errorf("broker faults: %w", err)
		}
		if len(risks) > 0 && !cfg.AllowBrokerOutage {
			if cfg.generatedPrefix && !cfg.KeepTopics {
				h.deleteTopics(adm, topics)
			}
			return rep, fmt.Errorf("broker faults refused: a node down would stop writes, an outage rather than a failover (%s); "+
				"use a cluster of 3 nodes (scripts/kafka-local.sh start --brokers 3) and --replication-factor 3, or allow the outage (--allow-broker-outage)",
				strings.Join(risks, "; "))
		}
		allowed := ""
		if len(risks) > 0 {
			allowed = "; outage allowed: " + strings.Join(risks, "; ")
		}
		home := "its default home"
		if cfg.KafkaHome != "" {
			home = "SG_KAFKA_HOME " + cfg.KafkaHome
		}
		h.say("broker faults on the %d-node cluster of %s (%s)%s", cluster.nodes, cfg.KafkaLocal, home, allowed)
		// A fault takes the pause, a restart (10-35s on two shared cores)
		// and the catch-up, one after the other from 10% of the load on:
		// what does not fit comes after the load, while the run drains.
		n := cfg.BrokerKills + cfg.BrokerBounces
		load := time.Duration(float64(cfg.Requests) / cfg.Rate * float64(time.Second))
		if need := time.Duration(n) * ((cfg.BrokerPauseMin+cfg.BrokerPauseMax)/2 + 15*time.Second + 2*cfg.BrokerSettle); need > load*8/10 {
			h.say("broker faults: %d take about %s in all (each a pause of %s-%s, a restart, the catch-up, %s settled), the load lasts %s: some will come after it, while the run drains; lower --rate or raise --requests to have them all under load",
				n, need.Round(time.Second), cfg.BrokerPauseMin, cfg.BrokerPauseMax, cfg.BrokerSettle, load.Round(time.Second))
		}
	}
	if len(cfg.Brokers) > 0 {
		defer func() {
			if rep.OK() && err == nil && !cfg.KeepTopics && cfg.generatedPrefix {
				h.deleteTopics(adm, topics)
			}
		}()
	}
	routesFile := filepath.Join(logDir, "routes.json")
	if err := os.WriteFile(routesFile, h.routeTable(), 0o644); err != nil {
		return rep, err
	}

	// The observer starts before any role, so it sees every record appear.
	obsCtx, stopObs := context.WithCancel(ctx)
	defer stopObs()
	var obsWG sync.WaitGroup
	defer obsWG.Wait()
	defer stopObs()
	obs := newObserver(topics, cfg.Prefix+"aggregator")
	obsCl, err := kafka.NewClient(cc, kgo.ConsumeTopics(topics.Results(), topics.Replies()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return rep, err
	}
	defer obsCl.Close()
	obsWG.Add(2)
	go func() { defer obsWG.Done(); obs.run(obsCtx, obsCl) }()
	go func() { defer obsWG.Done(); obs.sampleCommits(obsCtx, adm, 200*time.Millisecond) }()

	// The roles, each kept running by a keeper until the end of the run.
	roles := h.roles(brokers, routesFile, logDir)
	r.procs = append(r.procs, roles...)
	keepCtx, stopKeepers := context.WithCancel(ctx)
	defer stopKeepers()
	var keepWG sync.WaitGroup
	defer keepWG.Wait()
	defer stopKeepers()
	var unexpected atomic.Int64
	// startRole starts p and its keeper, which keepWG waits for.
	startRole := func(p *proc) error {
		if err := p.start(nil); err != nil {
			return err
		}
		keepWG.Add(1)
		go func() {
			defer keepWG.Done()
			p.keep(keepCtx, actions[p.name], func(p *proc, code int) {
				unexpected.Add(1)
				h.say("%s exited on its own with status %d; restarting it", p.name, code)
			}, h.say)
		}()
		return nil
	}
	var running []*proc // the roles started now: the scale events start the others
	for _, p := range roles {
		actions[p.name] = make(chan action)
		if p.deferred {
			continue
		}
		if err := startRole(p); err != nil {
			return rep, err
		}
		running = append(running, p)
	}

	cl, err := client.New(ctx, client.Config{Client: cc, Topics: topics, DefaultTimeout: cfg.Timeout})
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	if err := h.warmUp(ctx, cl); err != nil {
		return rep, err
	}

	s := &session{h: h, obs: obs, adm: adm, kcl: adminCl, actions: actions, submitted: map[schemas.CorrelationID]submission{}, rep: &rep,
		startRole: startRole, gone: map[string]bool{}}
	for _, p := range roles {
		if p.deferred {
			s.gone[p.name] = true // until scaled up
			s.deferred = append(s.deferred, p)
		}
	}
	sched := h.schedule(running, bp)
	sched = append(sched, h.scaleSchedule(roles)...)
	slices.SortStableFunc(sched, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	var bsched []brokerEvent
	if cluster != nil {
		s.brokers = &brokerFaults{s: s, cluster: cluster, topics: runTopics(topics), settle: cfg.BrokerSettle}
		bsched = brokerSchedule(cfg, h.rng, cluster.nodes)
	}
	if err := s.load(ctx, cl, sched, bsched); err != nil {
		return rep, err
	}
	if err := s.drain(ctx); err != nil {
		return rep, err
	}
	if err := s.stopRoles(ctx, roles); err != nil {
		return rep, err
	}
	rep.UnexpectedExits = int(unexpected.Load())
	rep.ClientRestarts = countRestarts(roles)
	if n := brokerExits.Load(); n > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("the broker exited on its own %d times", n))
	}
	stopObs()
	obsWG.Wait()

	// The verdict, from the topics read from the start, read_committed.
	f := newFacts(Route)
	f.submitted = s.submitted
	if err := h.readFacts(ctx, cc, topics, obs, f); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	if s.subErrs > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d requests could not be submitted", s.subErrs))
	}
	v := check(f, checkOptions{guarantee: cfg.Guarantee, slack: cfg.Slack, onTime: cfg.OnTime, maxExamples: 20})
	v.Kills, v.BrokerKills, v.BrokerBounces, v.BrokerFaults = rep.Kills, rep.BrokerKills, rep.BrokerBounces, rep.BrokerFaults
	faultStalls(f, v.BrokerFaults)
	v.Terms, v.Stops, v.BadStops, v.UnexpectedExits = rep.Terms, rep.Stops, rep.BadStops, rep.UnexpectedExits
	v.Fences, v.Kicks, v.ClientRestarts = rep.Fences, rep.Kicks, rep.ClientRestarts
	v.Errors, v.Broker = rep.Errors, rep.Broker
	v.MinCompletePct = cfg.MinCompletePct
	v.Elapsed = time.Since(h.start)
	r.clientTimeouts = s.timeouts
	if !s.lostAt.IsZero() {
		v.LostAt, v.LastNotCompleteAfter = s.lostAt, lastNotComplete(f, s.lostAt)
	}
	return v, nil
}

// session is the load and chaos phase of a run: the requests sent, the
// signals delivered.
type session struct {
	h       *Harness
	obs     *observer
	adm     *kadm.Client
	kcl     *kgo.Client            // adm's, for the requests kadm has no call for
	actions map[string]chan action // by role name, to each role's keeper
	brokers *brokerFaults          // nil unless nodes of Config.Brokers are to be killed
	// startRole starts a role and its keeper (the scale events);
	// gone names the roles not running: not started yet, scaled down,
	// or lost for good. Run's goroutine only.
	startRole func(p *proc) error
	gone      map[string]bool
	lostAt    time.Time // when the processor of LoseProcessor was killed
	deferred  []*proc   // the processors of Config.ScaleProcessors

	lastReplied int     // at the previous progress line; run's goroutine only
	rep         *Report // Kills, Terms, Stops, BadStops, Errors; run's goroutine only

	mu        sync.Mutex // guards the fields below, written by the sender and the awaiters
	submitted map[schemas.CorrelationID]submission
	ids       []schemas.CorrelationID // in the order their submits returned
	timeouts  int                     // client awaits that gave up
	subErrs   int                     // requests that could not be submitted
	awaitWG   sync.WaitGroup
}

// load sends the requests at the configured rate while it carries out the
// schedule's signals and, on a goroutine of their own, the broker faults
// of bsched, and returns once all three are done.
func (s *session) load(ctx context.Context, cl *client.Client, sched []event, bsched []brokerEvent) error {
	cfg := s.h.cfg
	start := time.Now()
	sent := make(chan struct{})
	go func() {
		// The sender; exits when every request is sent or ctx ends.
		defer close(sent)
		s.send(ctx, cl, start)
	}()
	if s.brokers != nil {
		s.brokers.start(ctx, start, bsched, sent)
		defer s.brokersDone()
	}
	tick := time.NewTicker(cfg.Progress)
	defer tick.Stop()
	for _, ev := range sched {
		for wait := time.Until(start.Add(ev.at)); wait > 0; wait = time.Until(start.Add(ev.at)) {
			select {
			case <-ctx.Done():
				<-sent
				return ctx.Err()
			case <-tick.C:
				s.progress("load")
			case <-time.After(wait):
			}
		}
		switch ev.fault {
		case faultScaleUp, faultScaleDown:
			s.scale(ctx, ev.fault == faultScaleUp)
			continue
		case "":
		default:
			s.fault(ctx, ev)
			continue
		}
		if err := s.signal(ctx, ev); err != nil {
			<-sent
			return err
		}
	}
	for {
		select {
		case <-sent:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.progress("sent")
			if s.brokers != nil {
				// The last broker fault may outlast the load: its node
				// comes back, and the run drains, before the roles stop.
				done := make(chan struct{})
				go func() { s.brokers.wg.Wait(); close(done) }() // exits with the broker goroutine
				for waiting := true; waiting; {
					select {
					case <-done:
						waiting = false
					case <-tick.C:
						s.progress("brokers")
					}
				}
			}
			return nil
		case <-tick.C:
			s.progress("load")
		}
	}
}

// brokersDone waits for the broker faults to end and records them.
func (s *session) brokersDone() {
	for _, f := range s.brokers.wait() {
		s.rep.BrokerFaults = append(s.rep.BrokerFaults, f)
		if f.Err != nil {
			s.rep.Errors = append(s.rep.Errors, fmt.Sprintf("%s node %d: %v", f.Signal, f.Node, f.Err))
		}
		switch {
		case !f.Stopped:
		case f.Signal == "SIGKILL":
			s.rep.BrokerKills++
		default:
			s.rep.BrokerBounces++
		}
	}
}

// send submits cfg.Requests requests, the i-th at start + i/rate whatever
// became of those before it: an open loop, as callers are. Each is
// submitted and its reply awaited on a goroutine of its own (counted in
// awaitWG), so a submit held up by a broker failover, which waits for
// the requests partition's new leader, holds back no other. send returns
// once every submit has returned.
func (s *session) send(ctx context.Context, cl *client.Client, start time.Time) {
	cfg := s.h.cfg
	var submits sync.WaitGroup
	defer submits.Wait()
	for i := range cfg.Requests {
		at := start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
		if !sleepCtx(ctx, time.Until(at)) {
			return
		}
		submits.Add(1)
		s.awaitWG.Add(1)
		go func() {
			// Exits when the reply comes or Await gives up.
			defer s.awaitWG.Done()
			pend := s.submit(ctx, cl, i)
			submits.Done()
			if pend == nil {
				return
			}
			if _, err := pend.Await(ctx); errors.Is(err, client.ErrTimeout) {
				s.mu.Lock()
				s.timeouts++
				s.mu.Unlock()
			}
		}()
	}
}

// submit submits request i and notes it; nil if it could not be submitted.
func (s *session) submit(ctx context.Context, cl *client.Client, i int) *client.Pending {
	cfg := s.h.cfg
	payload := fmt.Appendf(nil, `{"n":%d,"seed":%d}`, i, cfg.Seed)
	t0 := time.Now()
	pend, err := cl.Submit(ctx, Route, payload, client.Options{Timeout: cfg.Timeout, Fanout: cfg.Fanout})
	if err != nil {
		if ctx.Err() == nil {
			s.mu.Lock()
			s.subErrs++
			s.mu.Unlock()
			s.h.say("submit %d: %v", i, err)
		}
		return nil
	}
	s.mu.Lock()
	s.submitted[pend.ID] = submission{at: t0, timeout: cfg.Timeout, fanout: cfg.Fanout}
	s.ids = append(s.ids, pend.ID)
	s.mu.Unlock()
	return pend
}

// signal has the victim's keeper deliver ev and restart the victim, and
// records the outcome.
func (s *session) signal(ctx context.Context, ev event) error {
	a := action{sig: ev.sig, bound: s.h.cfg.StopBound, pause: ev.pause, final: ev.final, done: make(chan actionResult, 1)}
	select {
	case s.actions[ev.victim.name] <- a:
	case <-ctx.Done():
		return ctx.Err()
	}
	var res actionResult
	select {
	case res = <-a.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if ev.sig == syscall.SIGKILL {
		if ev.victim.role == "broker" {
			s.rep.BrokerKills++
		} else {
			s.rep.Kills++
		}
		if ev.final {
			s.gone[ev.victim.name], s.lostAt = true, time.Now()
			s.h.say("SIGKILL %s (pid %d); lost for good, not restarted", ev.victim.name, res.pid)
		} else {
			s.h.say("SIGKILL %s (pid %d); restarted after %s as pid %d", ev.victim.name, res.pid, ev.pause.Round(time.Millisecond), res.restarted)
		}
		if res.err != nil {
			s.rep.Errors = append(s.rep.Errors, fmt.Sprintf("kill %s: %v", ev.victim.name, res.err))
		}
		return nil
	}
	s.rep.Terms++
	s.addStop(Stop{Role: ev.victim.name, Code: res.code, Took: res.took, Err: res.err})
	s.h.say("SIGTERM %s (pid %d): exit status %d after %s%s; restarted after %s as pid %d", ev.victim.name, res.pid,
		res.code, res.took.Round(time.Millisecond), errSuffix(res.err), ev.pause.Round(time.Millisecond), res.restarted)
	return nil
}

func (s *session) addStop(st Stop) {
	s.rep.Stops = append(s.rep.Stops, st)
	if st.Code != 0 || st.Err != nil {
		s.rep.BadStops++
	}
}

// drain waits until every request has a reply and every part a result,
// or DrainTimeout passes, then Settle longer for late duplicates.
func (s *session) drain(ctx context.Context) error {
	cfg := s.h.cfg
	tick := time.NewTicker(cfg.Progress)
	defer tick.Stop()
	end := time.Now().Add(cfg.DrainTimeout)
	for ids := s.sentIDs(); !s.obs.drained(ids); {
		if time.Now().After(end) {
			s.h.say("not drained after %s; checking what there is", cfg.DrainTimeout)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			s.progress("drain")
		case <-time.After(250 * time.Millisecond):
		}
	}
	if !sleepCtx(ctx, cfg.Settle) {
		return ctx.Err()
	}
	s.awaitWG.Wait()
	s.progress("drained")
	return nil
}

// stopRoles stops every role with SIGTERM, all at once: a graceful stop
// must exit 0 within StopBound.
func (s *session) stopRoles(ctx context.Context, roles []*proc) error {
	roles = slices.DeleteFunc(slices.Clone(roles), func(p *proc) bool { return s.gone[p.name] })
	final := make([]action, len(roles))
	for i, p := range roles {
		final[i] = action{sig: syscall.SIGTERM, bound: s.h.cfg.StopBound, final: true, done: make(chan actionResult, 1)}
		select {
		case s.actions[p.name] <- final[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i, p := range roles {
		res := <-final[i].done
		s.addStop(Stop{Role: p.name, Final: true, Code: res.code, Took: res.took, Err: res.err})
	}
	return nil
}

// scale starts the processors of Config.ScaleProcessors (up) or stops
// them with SIGTERM for good (down), and records it.
func (s *session) scale(ctx context.Context, up bool) {
	for _, p := range s.deferred {
		if up {
			if err := s.startRole(p); err != nil {
				s.rep.Errors = append(s.rep.Errors, fmt.Sprintf("scale up %s: %v", p.name, err))
				continue
			}
			delete(s.gone, p.name)
			s.h.say("scale up: %s started", p.name)
			continue
		}
		if s.gone[p.name] {
			continue
		}
		a := action{sig: syscall.SIGTERM, bound: s.h.cfg.StopBound, final: true, done: make(chan actionResult, 1)}
		select {
		case s.actions[p.name] <- a:
		case <-ctx.Done():
			return
		}
		res := <-a.done
		s.gone[p.name] = true
		s.addStop(Stop{Role: p.name, Code: res.code, Took: res.took, Err: res.err})
		s.h.say("scale down: SIGTERM %s (pid %d): exit status %d after %s%s", p.name, res.pid, res.code, res.took.Round(time.Millisecond), errSuffix(res.err))
	}
}

func (s *session) sentIDs() []schemas.CorrelationID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// progress prints one progress line.
func (s *session) progress(phase string) {
	cfg := s.h.cfg
	ids := s.sentIDs()
	replied, by, pending := s.obs.progress(ids)
	faults := ""
	if cfg.Fences+cfg.Kicks > 0 {
		faults = fmt.Sprintf(" fences=%d/%d kicks=%d/%d", s.rep.Fences, cfg.Fences, s.rep.Kicks, cfg.Kicks)
	}
	if b := s.brokers; b != nil {
		faults += fmt.Sprintf(" broker_kills=%d/%d broker_bounces=%d/%d", b.kills.Load(), cfg.BrokerKills, b.bounces.Load(), cfg.BrokerBounces)
	} else if cfg.BrokerKills > 0 {
		faults += fmt.Sprintf(" broker_kills=%d/%d", s.rep.BrokerKills, cfg.BrokerKills)
	}
	s.h.say("%s sent=%d/%d replied=%d complete=%d partial=%d failed=%d parts-pending=%d kills=%d/%d terms=%d/%d%s",
		phase, len(ids), cfg.Requests, replied, by[schemas.ReplyComplete], by[schemas.ReplyPartial], by[schemas.ReplyFailed],
		pending, s.rep.Kills, cfg.Kills, s.rep.Terms, cfg.Terms, faults)
	if replied == s.lastReplied && replied < len(ids) {
		s.describeGroups()
	}
	s.lastReplied = replied
}

// describeGroups prints the roles' consumer groups as the broker sees them:
// when no reply came since the last progress line, a group stuck with a
// dead member, or a partition nobody owns, shows here.
func (s *session) describeGroups() {
	p := s.h.cfg.Prefix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs, err := s.adm.DescribeGroups(ctx, p+"scatterer", p+"processor."+string(Route), p+"aggregator")
	if err != nil {
		s.h.say("stalled; describe groups: %v", err)
		return
	}
	for _, g := range gs.Sorted() {
		var ms []string
		for _, m := range g.Members {
			var parts []int32
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, t := range a.Topics {
					parts = append(parts, t.Partitions...)
				}
			}
			slices.Sort(parts)
			id := m.MemberID
			if len(id) > 8 {
				id = id[len(id)-8:]
			}
			ms = append(ms, fmt.Sprintf("…%s%v", id, parts))
		}
		s.h.say("stalled? group %s: %s, %d members %s", strings.TrimPrefix(g.Group, p), g.State, len(ms), strings.Join(ms, " "))
	}
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// startBroker starts `exe broker` on a free port and returns its address.
// The port is picked here rather than by the broker so that a restarted
// broker listens where the clients look for it.
func (h *Harness) startBroker(logDir string) (*proc, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("find a free port for the broker: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &proc{name: "broker", role: "broker", exe: h.cfg.Exe, env: h.cfg.Env, logPath: filepath.Join(logDir, "broker.log"),
		args: []string{"broker", "--broker-addr", addr, "--data-dir", filepath.Join(logDir, "broker-data")}}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	defer pr.Close()
	if err := p.start(pw); err != nil {
		pw.Close()
		return nil, "", err
	}
	pw.Close()
	lines := make(chan string, 1)
	go func() {
		// Exits at the first line, or when the broker closes stdout.
		l, _ := bufio.NewReader(pr).ReadString('\n')
		lines <- strings.TrimSpace(l)
	}()
	select {
	case l := <-lines:
		if l != "" {
			killed := "never killed"
			if h.cfg.BrokerKills > 0 {
				killed = fmt.Sprintf("killed %d times", h.cfg.BrokerKills)
			}
			h.say("broker (kfake, its own process, %s) on %s", killed, l)
			return p, strings.Split(l, ",")[0], nil
		}
	case <-time.After(30 * time.Second):
	}
	_, _, _ = p.stop(syscall.SIGKILL, time.Second)
	return nil, "", fmt.Errorf("the broker did not start; its log:\n%s", strings.Join(p.tail(20), "\n"))
}

// roles builds the role processes (not started).
func (h *Harness) roles(brokers []string, routesFile, logDir string) []*proc {
	cfg := h.cfg
	common := func(instance string) []string {
		return []string{
			"--brokers", strings.Join(brokers, ","), "--topic-prefix", cfg.Prefix, "--routes-file", routesFile,
			"--guarantee", string(cfg.Guarantee), "--instance-id", instance, "--create-topics=false",
			"--log-level", "info", "--kafka-log-level", cmp.Or(cfg.KafkaLogLevel, "warn"),
			// Many instances of a role on one host: no fixed metrics port.
			"--metrics-addr=",
		}
	}
	if cfg.SessionTimeout > 0 {
		base := common
		common = func(instance string) []string {
			return append(base(instance), "--session-timeout", cfg.SessionTimeout.String())
		}
	}
	mk := func(role string, i int, extra ...string) *proc {
		name := role + "-" + strconv.Itoa(i)
		return &proc{name: name, role: role, exe: cfg.Exe, env: cfg.Env, logPath: filepath.Join(logDir, name+".log"),
			args: append(append([]string{role}, common(name)...), extra...)}
	}
	out := []*proc{mk("scatterer", 0)}
	for i := range cfg.Processors + cfg.ScaleProcessors {
		extra := []string{"--route", string(Route), "--handler", "sleep", "--sleep-delay", "1ms", "--sleep-max-delay", "5ms",
			"--concurrency", strconv.Itoa(cfg.ProcessorConcurrency)}
		if cfg.StragglerRate > 0 {
			extra = append(extra, "--straggler-rate", strconv.FormatFloat(cfg.StragglerRate, 'g', -1, 64),
				"--straggler-delay", (2 * cfg.Timeout).String())
		}
		p := mk("processor", i, extra...)
		p.deferred = i >= cfg.Processors // started and stopped by the scale events
		out = append(out, p)
	}
	for i := range cfg.Aggregators {
		out = append(out, mk("aggregator", i))
	}
	return out
}

// routeTable is the run's route file: one split route whose parts are
// gathered by collect, so every part's payload is in the reply.
func (h *Harness) routeTable() []byte {
	type route struct {
		Name      string            `json:"name"`
		Mode      string            `json:"mode"`
		Fanout    int               `json:"fanout"`
		MaxFanout int               `json:"max_fanout"`
		Timeout   string            `json:"timeout"`
		Merge     map[string]string `json:"merge"`
		Hedge     string            `json:"hedge_delay,omitempty"`
		Budget    float64           `json:"hedge_budget,omitempty"`
	}
	r := route{
		Name: string(Route), Mode: "split", Fanout: h.cfg.Fanout, MaxFanout: max(h.cfg.Fanout, 256),
		Timeout: h.cfg.Timeout.String(), Merge: map[string]string{"kind": "collect"},
	}
	if h.cfg.HedgeDelay > 0 {
		r.Hedge, r.Budget = h.cfg.HedgeDelay.String(), 1
	}
	b, _ := json.MarshalIndent(map[string][]route{"routes": {r}}, "", "  ")
	return b
}

// warmUp waits until the pipeline answers: three COMPLETE replies in a row.
// Warm-up requests are not part of the run.
func (h *Harness) warmUp(ctx context.Context, cl *client.Client) error {
	deadline := time.Now().Add(2 * time.Minute)
	ok := 0
	for ok < 3 {
		if time.Now().After(deadline) {
			return errors.New("the pipeline did not answer within 2m of starting")
		}
		rep, err := cl.Do(ctx, Route, []byte(`{"warmup":true}`), client.Options{Timeout: h.cfg.Timeout, Fanout: h.cfg.Fanout})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && rep.Status == schemas.ReplyComplete {
			ok++
			continue
		}
		ok = 0
	}
	h.say("pipeline up: scatterer, %d processors, %d aggregators answer", h.cfg.Processors, h.cfg.Aggregators)
	return nil
}

// event is one signal of the schedule.
type event struct {
	at     time.Duration // from the start of the load
	victim *proc
	sig    syscall.Signal
	pause  time.Duration
	fault  string // faultFence, faultKick, faultScaleUp or faultScaleDown instead of a signal
	final  bool   // the victim is not restarted (LoseProcessor)
}

// The faults the harness causes through the broker, the role left running.
const (
	faultFence = "fence"
	faultKick  = "kick"
	// The processors of Config.ScaleProcessors join, and leave.
	faultScaleUp   = "scale-up"
	faultScaleDown = "scale-down"
)

// scaleSchedule returns the events of ScaleProcessors and LoseProcessor.
func (h *Harness) scaleSchedule(roles []*proc) []event {
	cfg := h.cfg
	load := time.Duration(float64(cfg.Requests) / cfg.Rate * float64(time.Second))
	var evs []event
	if cfg.ScaleProcessors > 0 {
		evs = append(evs, event{at: load / 3, fault: faultScaleUp}, event{at: load * 2 / 3, fault: faultScaleDown})
	}
	if cfg.LoseProcessor {
		at := load / 3
		if cfg.ScaleProcessors > 0 {
			at = load / 2
		}
		for _, p := range roles {
			if p.name == "processor-0" {
				evs = append(evs, event{at: at, victim: p, sig: syscall.SIGKILL, final: true})
			}
		}
	}
	return evs
}

// schedule picks the victims and moments: kills and terms spread over the
// middle of the load (one per equal slot of [10%, 90%] of it, at a random
// point of the slot). Every aggregator is among the kills first, then the
// scatterer, then a processor (of the kinds in Config.Victims); the rest
// are random. Terms go to a random role of each kind in turn (aggregator,
// processor, scatterer).
func (h *Harness) schedule(roles []*proc, broker *proc) []event {
	cfg := h.cfg
	byRole := map[string][]*proc{}
	var pool []*proc
	for _, p := range roles {
		byRole[p.role] = append(byRole[p.role], p)
		if slices.Contains(cfg.Victims, p.role) {
			pool = append(pool, p)
		}
	}
	var victims []*proc
	if slices.Contains(cfg.Victims, "aggregator") {
		victims = append(victims, byRole["aggregator"]...)
	}
	if slices.Contains(cfg.Victims, "scatterer") {
		victims = append(victims, byRole["scatterer"][0])
	}
	if ps := byRole["processor"]; slices.Contains(cfg.Victims, "processor") {
		victims = append(victims, ps[h.rng.IntN(len(ps))])
	}
	for len(victims) < cfg.Kills {
		victims = append(victims, pool[h.rng.IntN(len(pool))])
	}
	victims = victims[:cfg.Kills]
	var evs []event
	for _, v := range victims {
		evs = append(evs, event{victim: v, sig: syscall.SIGKILL})
	}
	var kinds []string
	for _, k := range roleKinds {
		if slices.Contains(cfg.Victims, k) {
			kinds = append(kinds, k)
		}
	}
	for i := range cfg.Terms {
		ps := byRole[kinds[i%len(kinds)]]
		evs = append(evs, event{victim: ps[h.rng.IntN(len(ps))], sig: syscall.SIGTERM})
	}
	for i := range cfg.Fences {
		ps := byRole[kinds[i%len(kinds)]]
		evs = append(evs, event{victim: ps[h.rng.IntN(len(ps))], fault: faultFence})
	}
	for i := range cfg.Kicks {
		ps := byRole[kinds[i%len(kinds)]]
		evs = append(evs, event{victim: ps[h.rng.IntN(len(ps))], fault: faultKick})
	}
	for range cfg.BrokerKills {
		if broker != nil {
			evs = append(evs, event{victim: broker, sig: syscall.SIGKILL})
		}
	}
	h.rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	load := time.Duration(float64(cfg.Requests) / cfg.Rate * float64(time.Second))
	lo, span := load/10, load*8/10
	for i := range evs {
		slot := span / time.Duration(len(evs))
		evs[i].at = lo + slot*time.Duration(i) + time.Duration(h.rng.Int64N(int64(slot)+1))
		evs[i].pause = cfg.PauseMin + time.Duration(h.rng.Int64N(int64(cfg.PauseMax-cfg.PauseMin)+1))
	}
	return evs
}

// readFacts reads the run's topics from the start, read_committed, into f.
func (h *Harness) readFacts(ctx context.Context, cc kafkaconfig.Client, topics kafkaconfig.Topics, obs *observer, f *facts) error {
	var errs []error
	err := readTopic(ctx, cc, topics.Tasks(string(Route)), func(r *kgo.Record) {
		t, err := schemas.DecodeTask(r.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("task at %d@%d: %w", r.Partition, r.Offset, err))
			return
		}
		if _, ok := f.submitted[t.CorrelationID]; ok {
			k := partKey{t.CorrelationID, t.PartID}
			f.tasks[k]++
			f.attempts[k] |= 1 << min(uint(max(t.Attempt, 1)), 63)
		}
	})
	errs = append(errs, err)
	err = readTopic(ctx, cc, topics.Results(), func(r *kgo.Record) {
		kind, err := schemas.KindOf(r.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("results at %d@%d: %w", r.Partition, r.Offset, err))
			return
		}
		switch kind {
		case schemas.KindManifest:
			mf, err := schemas.DecodeManifest(r.Value)
			if err == nil {
				if _, ok := f.submitted[mf.CorrelationID]; ok {
					f.manifests[mf.CorrelationID] = append(f.manifests[mf.CorrelationID], mf)
				}
			}
		case schemas.KindResult:
			res, err := schemas.DecodeResult(r.Value)
			if err == nil {
				if _, ok := f.submitted[res.CorrelationID]; ok {
					k := partKey{res.CorrelationID, res.PartID}
					f.results[k] = append(f.results[k], resultFact{res: res, partition: r.Partition, offset: r.Offset,
						visible: obs.visibleAt(tpo{r.Topic, r.Partition, r.Offset})})
				}
			}
		}
	})
	errs = append(errs, err)
	err = readTopic(ctx, cc, topics.Replies(), func(r *kgo.Record) {
		id := schemas.CorrelationID(r.Key)
		if _, ok := f.submitted[id]; !ok {
			return
		}
		rep, err := schemas.DecodeReply(r.Value)
		if err != nil {
			rep = schemas.Reply{CorrelationID: id, Status: "UNDECODABLE", Error: err.Error()}
		}
		f.replies[id] = append(f.replies[id], replyFact{reply: rep, partition: r.Partition, visible: obs.visibleAt(tpo{r.Topic, r.Partition, r.Offset})})
	})
	errs = append(errs, err)
	f.commits = obs.commitSamples()
	return errors.Join(errs...)
}

// readTopic reads every committed record of topic from the start up to its
// end offsets as they are now. Control records are kept so that the reader
// knows it reached the end even when the log ends with a transaction
// marker.
func readTopic(ctx context.Context, cc kafkaconfig.Client, topic string, each func(*kgo.Record)) error {
	cl, err := kafka.NewClient(cc)
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("read %s: end offsets: %w", topic, err)
	}
	want := map[int32]int64{}
	start := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[topic][o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	rd, err := kafka.NewClient(cc, kgo.ConsumePartitions(start), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return err
	}
	defer rd.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	next := map[int32]int64{}
	for {
		done := true
		for p, end := range want {
			if next[p] < end {
				done = false
			}
		}
		if done {
			return nil
		}
		fs := rd.PollFetches(rctx)
		if rctx.Err() != nil {
			var stuck []string
			for p, end := range want {
				if next[p] < end {
					stuck = append(stuck, fmt.Sprintf("partition %d at %d of %d", p, next[p], end))
				}
			}
			sort.Strings(stuck)
			return fmt.Errorf("read %s: not at the end after a minute (%s): a transaction left open?", topic, strings.Join(stuck, ", "))
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				each(r)
			}
		})
	}
}

// identify names the broker: kfake (its cluster id) or Kafka and the
// version its API versions match.
func identify(ctx context.Context, adm *kadm.Client) string {
	if md, err := adm.BrokerMetadata(ctx); err == nil && md.Cluster == "kfake" {
		return "kfake"
	}
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return "unknown"
	}
	for _, v := range vs.Sorted() {
		if v.Err == nil {
			g := v.VersionGuess()
			g = strings.TrimPrefix(g, "unknown custom version ")
			g = strings.TrimPrefix(g, "at least ")
			return "kafka " + strings.TrimPrefix(g, "v")
		}
	}
	return "unknown"
}

// deleteTopics removes the run's topics from an external broker.
func (h *Harness) deleteTopics(adm *kadm.Client, topics kafkaconfig.Topics) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.DeleteTopics(ctx, runTopics(topics)...); err != nil {
		h.say("delete topics: %v", err)
	}
}

// ensureTopics creates the run's topics with cfg.ReplicationFactor; at 3
// or more with min.insync.replicas 2, so that a write survives one node
// down and is still on two replicas when acknowledged.
func (h *Harness) ensureTopics(ctx context.Context, adm *kadm.Client, topics kafkaconfig.Topics) error {
	cfg := h.cfg
	layout := kafkaconfig.Layout{Partitions: int32(cfg.Partitions), ResultPartitions: int32(cfg.Partitions), ReplicationFactor: int16(cfg.ReplicationFactor)}
	if err := layout.Validate(); err != nil {
		return fmt.Errorf("topic layout: %w", err)
	}
	specs := topics.Specs(layout, []string{string(Route)})
	if cfg.ReplicationFactor >= 3 {
		for i := range specs {
			specs[i].Configs = maps.Clone(specs[i].Configs)
			if specs[i].Configs == nil {
				specs[i].Configs = map[string]string{}
			}
			specs[i].Configs["min.insync.replicas"] = "2"
		}
	}
	if _, err := kafkaconfig.EnsureTopics(ctx, adm, specs); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	return nil
}

func replicationName(rf int) string {
	if rf < 0 {
		return "the broker's default"
	}
	if rf >= 3 {
		return strconv.Itoa(rf) + " (min.insync.replicas 2)"
	}
	return strconv.Itoa(rf)
}

// summary prints the breakdown, the problems and, last, the line.
func (h *Harness) summary(r Report, clientTimeouts int) {
	h.outMu.Lock()
	defer h.outMu.Unlock()
	w := h.cfg.Out
	fmt.Fprintf(w, "chaos: replies complete=%d partial=%d failed=%d; parts not OK: verdict=%d late=%d outage=%d never=%d; client awaits that timed out=%d\n",
		r.Complete, r.Partial, r.Failed, r.NotOK[whyVerdict], r.NotOK[whyLate], r.NotOK[whyOutage], r.NotOK[whyNever], clientTimeouts)
	fmt.Fprintf(w, "chaos: hops manifests=%d tasks=%d results=%d; duplicates manifests=%d tasks=%d results=%d replies=%d (conflicting %d); lost replies=%d parts=%d\n",
		r.Manifests, r.Tasks, r.Results, r.HopDuplicates.Manifests, r.HopDuplicates.Tasks, r.HopDuplicates.Results,
		r.DuplicateReplies, r.ConflictingDuplicates, r.LostReplies, r.LostParts)
	fmt.Fprintf(w, "chaos: replies visible after the aggregator completed them: at most %s later, %d more than 1s later\n",
		r.ReplyLagMax.Round(time.Millisecond), r.RepliesVisibleLate)
	var stops []string
	for _, s := range r.Stops {
		when := "load"
		if s.Final {
			when = "end"
		}
		stops = append(stops, fmt.Sprintf("%s@%s=%d/%s%s", s.Role, when, s.Code, s.Took.Round(10*time.Millisecond), errSuffix(s.Err)))
	}
	fmt.Fprintf(w, "chaos: SIGTERM stops (status/time): %s; bad=%d; unexpected exits=%d; broker kills=%d bounces=%d; fences=%d kicks=%d; client restarts in the roles=%d; elapsed %s\n",
		strings.Join(stops, " "), r.BadStops, r.UnexpectedExits, r.BrokerKills, r.BrokerBounces, r.Fences, r.Kicks, r.ClientRestarts, r.Elapsed.Round(time.Second))
	if len(r.BrokerFaults) > 0 {
		var fs []string
		for _, f := range r.BrokerFaults {
			healed := "not in sync within " + healBound.String()
			switch {
			case f.Rebalanced >= 0:
				flowing := ""
				if f.Flowing >= 0 {
					flowing = fmt.Sprintf(", flowing +%s", f.Flowing.Round(100*time.Millisecond))
				}
				healed = fmt.Sprintf("in sync +%s, %d leaders back +%s (after %s)%s, settled %s", f.Healed.Round(100*time.Millisecond), f.Moved, f.Rebalanced.Round(100*time.Millisecond), f.Settle.Round(100*time.Millisecond), flowing, f.Settle.Round(100*time.Millisecond))
			case f.Healed >= 0:
				healed = "in sync +" + f.Healed.Round(100*time.Millisecond).String() + ", leaders not back"
			}
			stall := ""
			if f.StallAt != "" {
				stall = fmt.Sprintf(", longest stall %s (%s)", f.Stall.Round(100*time.Millisecond), f.StallAt)
			}
			if f.ReturnStallAt != "" {
				stall += fmt.Sprintf(", on its return %s (%s)", f.ReturnStall.Round(100*time.Millisecond), f.ReturnStallAt)
			}
			at := f.At.Round(100 * time.Millisecond).String()
			if !f.When.IsZero() {
				at += " (" + clock(f.When) + ")"
			}
			fs = append(fs, fmt.Sprintf("%s node %d at %s, down %s, restart %s, %s%s%s", f.Signal, f.Node, at,
				f.Pause.Round(100*time.Millisecond), f.Restart.Round(100*time.Millisecond), healed, stall, errSuffix(f.Err)))
		}
		fmt.Fprintf(w, "chaos: broker faults: %s\n", strings.Join(fs, "; "))
	}
	if !r.LostAt.IsZero() {
		recovered := "every request sent after it was answered COMPLETE"
		if r.LastNotCompleteAfter > 0 {
			recovered = "the last request answered not COMPLETE was sent " + r.LastNotCompleteAfter.Round(100*time.Millisecond).String() + " after it"
		}
		fmt.Fprintf(w, "chaos: processor-0 lost for good at %s; %s\n", r.LostAt.Format("15:04:05.000"), recovered)
	}
	if r.LongestStallAt != "" {
		fmt.Fprintf(w, "chaos: longest stall: %s for %s\n", r.LongestStallAt, r.LongestStall.Round(100*time.Millisecond))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "chaos: error: %s\n", e)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "chaos: problem: %s\n", p)
	}
	fmt.Fprintln(w, r.Line())
}
