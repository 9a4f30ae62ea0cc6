package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/replay"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// registerConnection defines the flags of a tool command that talks to a
// cluster without running a role: brokers, TLS/SASL, topic prefix, logs.
func (c *common) registerConnection(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
	registerSecurity(fs, &c.security)
	fs.StringVar(&c.prefix, "topic-prefix", kafkaconfig.DefaultPrefix, "prefix of the pipeline's topics (the source of a replay)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "warn", "level of the Kafka client's own logs: debug, info, warn, error or none")
}

// rateFlag is a rate in requests per second: "500" or "500/s".
type rateFlag float64

func (r *rateFlag) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }

func (r *rateFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v < 0 {
		return fmt.Errorf("rate %q: want requests per second, e.g. 500 or 500/s (0: unlimited)", s)
	}
	*r = rateFlag(v)
	return nil
}

// listFlag collects a repeatable flag; each value may also be a comma
// separated list (as from an environment variable).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, splitList(s)...)
	return nil
}

// waitFlag is a duration flag that knows whether it was given.
type waitFlag struct {
	d   time.Duration
	set bool
}

func (w *waitFlag) String() string {
	if w == nil || !w.set {
		return ""
	}
	return w.d.String()
}

func (w *waitFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("%s is negative", s)
	}
	w.d, w.set = d, true
	return nil
}

func replayCmd() *Command {
	var (
		c              common
		from, to       string
		routeList      string
		rate           rateFlag
		batch          int
		dryRun         bool
		runID          string
		targetPrefix   string
		includeReplays bool
		txTimeout      time.Duration
		progress       string
	)
	return &Command{
		Name:    "replay",
		Summary: "Re-submit a range of the requests topic (resumable); 'replay compare' diffs the replies.",
		Usage:   "replay --from BOUND [--to BOUND] [flags]  |  replay compare --run ID [flags]",
		Long: `Reads the requests topic from --from up to (not including) --to and re-submits
each request with a new correlation id (rp-<run>-<partition>-<offset>), replay_of
set to the original's id, replay_run to the run id, submitted-at = now and the
original's relative timeout (so the deadline is set afresh), and the original's
submitted-at and timeout in the headers sg-original-submitted-at and
sg-original-timeout-ms. A bound is an RFC3339 time, a duration ago (2h, 1d),
offset:N, earliest or latest; times resolve to offsets per partition with
ListOffsets when the run is created and are kept with the run.

Each batch of requests is written in one Kafka transaction together with the
run's checkpoint (topic <target-prefix>replay-checkpoints), so after a crash or
Ctrl-C the same command with --run-id ID resumes where the last batch committed,
without submitting any request twice. The run id is printed at the start.

--target-prefix writes to <target-prefix>requests instead: a shadow pipeline on
its own topics answers the replay, production replies are untouched.
--dry-run prints the requests per partition and route and submits nothing.

Then: scattergather replay compare --run ID   (see 'replay compare --help').
More in docs/replay.md. Exit status 130 when interrupted before the end.`,
		Flags: func(fs *flag.FlagSet) {
			c.registerConnection(fs)
			c.registry.register(fs)
			fs.StringVar(&from, "from", "", "start of the range (inclusive): RFC3339 time, duration ago (2h), offset:N, earliest; required for a new run")
			fs.StringVar(&to, "to", "", "end of the range (exclusive): RFC3339 time, duration ago, offset:N or latest; empty: latest (the end when the run is created)")
			fs.StringVar(&routeList, "route", "", "replay only these routes (comma separated); empty replays all")
			fs.Var(&rate, "rate", "most requests per second, e.g. 500 or 500/s; 0 is unlimited")
			fs.IntVar(&batch, "batch-size", replay.DefaultBatchSize, "most requests per transaction")
			fs.BoolVar(&dryRun, "dry-run", false, "count the requests per partition and route; submit nothing")
			fs.StringVar(&runID, "run-id", "", "id of the run; an existing run is resumed; empty generates one (printed at the start)")
			fs.StringVar(&targetPrefix, "target-prefix", "", "topic prefix to replay into (a shadow pipeline); empty replays in place into --topic-prefix")
			fs.BoolVar(&includeReplays, "include-replays", false, "also replay requests that are themselves replays (skipped by default)")
			fs.DurationVar(&txTimeout, "transaction-timeout", replay.DefaultTransactionTimeout, "transaction timeout of the replay's producer: how long a crashed replay can hold back readers of the target")
			fs.IntVar(&c.replication, "replication-factor", -1, "replication factor of the checkpoint topic when created; -1 takes the broker's default")
			fs.StringVar(&progress, "progress", "auto", "progress on stderr: auto (a bar redrawn on a terminal, else a line every 5s), lines (a line every 5s) or never")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 && args[0] == "compare" {
				if code := run(ctx, compareCmd(), args[1:], os.Stdout, os.Stderr); code != 0 {
					return ExitError{Code: code}
				}
				return nil
			}
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q (the subcommand is 'replay compare', before any flag)", args[0])
			}
			log, err := c.logger()
			if err != nil {
				return err
			}
			cc, err := c.clientConfig(c.brokerList(), "scattergather-replay")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			if cc, err = c.registry.apply(ctx, cc, log); err != nil {
				return err
			}
			cfg := replay.Config{Client: cc, Source: c.topics(), RunID: runID, Rate: float64(rate), BatchSize: batch,
				IncludeReplays: includeReplays, TransactionTimeout: txTimeout, ReplicationFactor: int16(c.replication), Logger: log}
			if targetPrefix != "" {
				cfg.Target = kafkaconfig.Topics{Prefix: targetPrefix}
			}
			if from != "" {
				b, err := replay.ParseBound(from)
				if err != nil {
					return fmt.Errorf("--from: %w", err)
				}
				cfg.From = &b
			}
			if to != "" {
				b, err := replay.ParseBound(to)
				if err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				cfg.To = &b
			}
			for _, r := range splitList(routeList) {
				cfg.Routes = append(cfg.Routes, schemas.Route(r))
			}
			if dryRun && from == "" {
				return errors.New("--dry-run needs --from")
			}
			var bar *replay.Bar
			switch progress {
			case "auto", "lines":
				bar = &replay.Bar{W: os.Stderr, TTY: progress == "auto" && isTerminal(os.Stderr)}
				cfg.Progress = bar.Update
			case "never":
			default:
				return fmt.Errorf("--progress %q: want auto, lines or never", progress)
			}
			r, err := replay.New(cfg)
			if err != nil {
				return err
			}
			if dryRun {
				plan, err := r.DryRun(ctx)
				if err != nil {
					return err
				}
				return plan.Print(os.Stdout)
			}
			resume := "--run-id " + r.RunID()
			if targetPrefix != "" {
				resume += " --target-prefix " + targetPrefix
			}
			fmt.Fprintf(os.Stderr, "replay run %s (resume after an interruption with: scattergather replay %s)\n", r.RunID(), resume)
			err = r.Run(ctx)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			st := r.State()
			fmt.Printf("run %s: %s [%s, %s) → %s: %d submitted", st.RunID, st.SourceTopic, st.From, st.To, st.TargetTopic, st.Submitted)
			for reason, n := range st.Skipped {
				fmt.Printf(", %d skipped (%s)", n, reason)
			}
			fmt.Println()
			if !st.Done {
				fmt.Fprintf(os.Stderr, "replay interrupted; resume with: scattergather replay %s\n", resume)
				return ExitError{Code: 130}
			}
			// Compare waits by itself until the run's last replies are
			// due (the longest timeout after the last submission, plus
			// 5s); run at once without that wait, it reported a few
			// replies missing.
			fmt.Printf("compare the replies with: scattergather replay compare --run %s", st.RunID)
			if targetPrefix != "" {
				fmt.Printf(" --target-prefix %s", targetPrefix)
			}
			fmt.Println()
			return nil
		},
	}
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func compareCmd() *Command {
	var (
		c            common
		runID        string
		targetPrefix string
		asJSON       bool
		ignore       listFlag
		maxChanged   int
		maxMissing   int
		reportFile   string
		examples     int
		wait         waitFlag
	)
	return &Command{
		Name:    "replay compare",
		Summary: "Compare the replies of a replay run with the originals' replies.",
		Usage:   "replay compare --run ID [flags]",
		Long: `Finds the run's replayed requests on the target requests topic, their replies on
the target reply topics (<target-prefix>replies*) and the originals' replies
(by replay_of) on <topic-prefix>replies*, and counts each pair as same,
changed (same status, other payload), status changed (e.g. COMPLETE→PARTIAL)
or missing (no replay reply yet, or no original reply). Prints the counts and
a few examples of each; --report FILE writes the whole report as JSON
(--report - prints it instead of the text).

Payloads are compared byte for byte; --json compares them as JSON (key order,
whitespace and number spelling ignored) and --ignore-field a.b leaves fields
out (a path applies to every element of an array on its way; implies --json).

Exit status 3 when changes (changed + status changed) exceed --max-changed or
missing pairs exceed --max-missing, so a deploy pipeline can gate on it.`,
		Flags: func(fs *flag.FlagSet) {
			c.registerConnection(fs)
			c.registry.register(fs)
			fs.StringVar(&runID, "run", "", "id of the replay run (required)")
			fs.StringVar(&targetPrefix, "target-prefix", "", "topic prefix the run replayed into; empty: --topic-prefix")
			fs.BoolVar(&asJSON, "json", false, "compare payloads as JSON, ignoring key order")
			fs.Var(&ignore, "ignore-field", "dotted JSON path to leave out of the comparison, e.g. meta.took_ms (repeatable; implies --json)")
			fs.IntVar(&maxChanged, "max-changed", -1, "exit 3 when more pairs than this changed (payload or status); -1: never")
			fs.IntVar(&maxMissing, "max-missing", -1, "exit 3 when more pairs than this miss a reply; -1: never")
			fs.StringVar(&reportFile, "report", "", "write the JSON report to this file; - prints it on stdout instead of the text")
			fs.IntVar(&examples, "examples", replay.DefaultExamples, "examples per category")
			fs.Var(&wait, "wait", "wait up to this long for replay replies that have not come yet, e.g. 2m (0: read what is there now); default: until the run's last replies are due, its last request plus its longest timeout plus 5s (no wait for a run that ended before that)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if runID == "" {
				return errors.New("--run is required")
			}
			log, err := c.logger()
			if err != nil {
				return err
			}
			cc, err := c.clientConfig(c.brokerList(), "scattergather-replay-compare")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			if cc, err = c.registry.apply(ctx, cc, log); err != nil {
				return err
			}
			cfg := replay.CompareConfig{Client: cc, Source: c.topics(), RunID: runID, JSON: asJSON, Wait: wait.d, UntilDue: !wait.set, Logger: log, Examples: examples}
			if examples == 0 {
				cfg.Examples = -1
			}
			if targetPrefix != "" {
				cfg.Target = kafkaconfig.Topics{Prefix: targetPrefix}
			}
			for _, f := range ignore {
				p, err := replay.ParseFieldPath(f)
				if err != nil {
					return fmt.Errorf("--ignore-field: %w", err)
				}
				cfg.IgnoreFields = append(cfg.IgnoreFields, p)
			}
			rep, err := replay.Compare(ctx, cfg)
			if err != nil {
				return err
			}
			if reportFile != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				b = append(b, '\n')
				if reportFile == "-" {
					_, err = os.Stdout.Write(b)
				} else {
					err = os.WriteFile(reportFile, b, 0o644)
				}
				if err != nil {
					return fmt.Errorf("--report: %w", err)
				}
			}
			if reportFile != "-" {
				if err := rep.Print(os.Stdout); err != nil {
					return err
				}
			}
			return compareGate(rep, maxChanged, maxMissing)
		},
	}
}

// compareGate fails with exit status 3 when the report exceeds a limit
// (-1: no limit), saying which on stderr.
func compareGate(rep *replay.Report, maxChanged, maxMissing int) error {
	var why []string
	if maxChanged >= 0 && rep.Changes() > maxChanged {
		why = append(why, fmt.Sprintf("%d changed, more than --max-changed %d", rep.Changes(), maxChanged))
	}
	if maxMissing >= 0 && rep.Missing() > maxMissing {
		why = append(why, fmt.Sprintf("%d missing, more than --max-missing %d", rep.Missing(), maxMissing))
	}
	if len(why) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "replay compare: %s\n", strings.Join(why, "; "))
	return ExitError{Code: 3}
}
