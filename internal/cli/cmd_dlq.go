package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/dlq"
	"github.com/scattergather/scattergather/internal/replay"
)

func dlqCmd() *Command {
	return &Command{
		Name:    "dlq",
		Summary: "Dead-letter tools: 'dlq list', 'dlq show', 'dlq redrive' (see docs/dead-letters.md).",
		Usage:   "dlq list|show|redrive [flags]",
		Long: `Subcommands:
  list      one line per dead letter, filtered by reason, role, source topic, time
  show      one dead letter decoded, with all its headers
  redrive   write dead letters back to their source topics, each at most once
            (a dry run unless --execute)
Run 'scattergather dlq <subcommand> --help' for each one's flags.`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return errors.New("a subcommand is required: list, show or redrive")
			}
			var sub *Command
			rest := args[1:]
			switch args[0] {
			case "list":
				sub = dlqListCmd()
			case "show":
				sub = dlqShowCmd()
				// "show 0/12 --brokers ...": the position first, as the
				// usage has it; the flag package stops at it.
				if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
					rest = append(append([]string{}, rest[1:]...), rest[0])
				}
			case "redrive":
				sub = dlqRedriveCmd()
			default:
				return fmt.Errorf("unknown subcommand %q: want list, show or redrive", args[0])
			}
			if code := run(ctx, sub, rest, os.Stdout, os.Stderr); code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

// dlqFlags are the flags every dlq subcommand shares: the connection, the
// dead-letter topic and the filter.
type dlqFlags struct {
	c        common
	topic    string
	reasons  listFlag
	roles    listFlag
	sources  listFlag
	since    string
	until    string
	at       listFlag
	progress string
}

func (f *dlqFlags) register(fs *flag.FlagSet, withFilter bool) {
	f.c.registerConnection(fs)
	f.c.registry.register(fs)
	fs.StringVar(&f.topic, "dlq-topic", "", "dead-letter topic, full name; empty: <topic-prefix>dlq")
	fs.StringVar(&f.progress, "progress", "lines", "progress on stderr while reading the DLQ (and redriving): lines (a line every 5s) or never")
	if !withFilter {
		return
	}
	fs.Var(&f.reasons, "reason", "only dead letters with this sg-dlq-reason, e.g. unknown-route (repeatable, or comma separated)")
	fs.Var(&f.roles, "role", "only dead letters from this role: scatterer, processor or aggregator (repeatable)")
	fs.Var(&f.sources, "source-topic", "only dead letters from this topic, full name or pattern, e.g. 'sg.tasks.*' (repeatable)")
	fs.StringVar(&f.since, "since", "", "only dead letters written at or after this: RFC3339 time or a duration ago (2h, 1d)")
	fs.StringVar(&f.until, "until", "", "only dead letters written before this: RFC3339 time or a duration ago")
	fs.Var(&f.at, "at", "only the dead letter at this partition/offset of the DLQ topic, e.g. 0/12 (repeatable)")
}

// dlqConfig is what the dlq flags resolve to.
type dlqConfig struct {
	topic  string
	filter dlq.Filter
}

// config checks the flags and returns what they select; now anchors
// durations ago.
func (f *dlqFlags) config(now time.Time) (dlqConfig, error) {
	cfg := dlqConfig{topic: f.topic, filter: dlq.Filter{Reasons: f.reasons, Roles: f.roles, SourceTopics: f.sources}}
	if cfg.topic == "" {
		cfg.topic = f.c.topics().DLQ()
	}
	var errs []error
	var err error
	if cfg.filter.Since, err = parseTimeFlag(f.since, now); err != nil {
		errs = append(errs, fmt.Errorf("--since: %w", err))
	}
	if cfg.filter.Until, err = parseTimeFlag(f.until, now); err != nil {
		errs = append(errs, fmt.Errorf("--until: %w", err))
	}
	for _, s := range f.at {
		p, err := dlq.ParsePos(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--at: %w", err))
			continue
		}
		cfg.filter.At = append(cfg.filter.At, p)
	}
	if f.progress != "lines" && f.progress != "never" {
		errs = append(errs, fmt.Errorf("--progress %q: want lines or never", f.progress))
	}
	if len(errs) == 0 {
		if err := cfg.filter.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("filter: %w", err))
		}
	}
	return cfg, errors.Join(errs...)
}

// parseTimeFlag reads an RFC3339 time or a duration ago; "" is the zero
// time (no bound).
func parseTimeFlag(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	b, err := replay.ParseBound(s)
	switch {
	case err != nil:
	case b.Kind == replay.AtTime:
		return b.Time, nil
	case b.Kind == replay.Ago:
		return now.Add(-b.Ago), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC3339 time (2026-05-01T12:00:00Z) or a duration ago (2h, 90m, 1d)", s)
}

// scan reads the DLQ topic, with a progress line every 5s on stderr, and
// names the topics command when the topic is missing.
func (f *dlqFlags) scan(ctx context.Context, topic string, filter dlq.Filter) (*dlq.Log, error) {
	cc, err := f.c.clientConfig(f.c.brokerList(), "scattergather-dlq")
	if err != nil {
		return nil, fmt.Errorf("--brokers: %w", err)
	}
	if cc, err = f.c.registry.apply(ctx, cc, nil); err != nil {
		return nil, err
	}
	l, err := dlq.Scan(ctx, cc, topic, filter, f.progressFunc(os.Stderr, "read", "records of "+topic))
	return l, f.explain(err)
}

// explain adds the way out to an error about a missing DLQ topic.
func (f *dlqFlags) explain(err error) error {
	var mt *dlq.MissingTopicError
	if errors.As(err, &mt) {
		return fmt.Errorf("%w: check --topic-prefix (%s) and --dlq-topic, or create the pipeline's topics with 'scattergather topics --brokers %s --topic-prefix %s'",
			err, f.c.prefix, f.c.brokers, f.c.prefix)
	}
	return err
}

// progressFunc returns a function that writes "dlq: <verb> n/total <what>"
// at most every 5s, and once more at the end when it wrote any.
func (f *dlqFlags) progressFunc(w io.Writer, verb, what string) func(n, total int64) {
	if f.progress == "never" {
		return nil
	}
	start := time.Now()
	var last time.Time
	return func(n, total int64) {
		now := time.Now()
		if now.Sub(start) < 5*time.Second || (n < total && now.Sub(last) < 5*time.Second) || (n >= total && last.IsZero()) {
			return
		}
		last = now
		fmt.Fprintf(w, "dlq: %s %d/%d %s (%s)\n", verb, n, total, what, now.Sub(start).Round(time.Second))
	}
}

func dlqListCmd() *Command {
	var (
		f      dlqFlags
		asJSON bool
	)
	return &Command{
		Name:    "dlq list",
		Summary: "List dead letters, one line each (bounded: reads the DLQ up to its end as of the start).",
		Usage:   "dlq list [--reason R] [--role R] [--source-topic T] [--since T] [--until T] [--json] [flags]",
		Long: `Reads the dead-letter topic (<topic-prefix>dlq) read_committed from the start of
each partition up to its end when the command starts, and prints one line per
dead letter that passes the filters: its partition/offset in the DLQ (what
'dlq show' and --at take), when it was dead-lettered, where it was consumed
(topic/partition/offset; for an output record Kafka refused, the topic it was
going to), the role that refused it, the reason, its size, and where it was
redriven to, if it was. Redrive markers are not listed. Filters of different
kinds must all match; a repeated filter matches any of its values.

--json writes one JSON object per line instead, with the error text and the key.`,
		Flags: func(fs *flag.FlagSet) {
			f.register(fs, true)
			fs.BoolVar(&asJSON, "json", false, "one JSON object per line instead of the table")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			cfg, err := f.config(time.Now())
			if err != nil {
				return err
			}
			l, err := f.scan(ctx, cfg.topic, cfg.filter)
			if err != nil {
				return err
			}
			sel := l.Entries
			if asJSON {
				return dlq.WriteJSONLines(os.Stdout, cfg.topic, sel)
			}
			if err := dlq.PrintList(os.Stdout, sel); err != nil {
				return err
			}
			redriven := 0
			for _, e := range sel {
				if e.Redriven != nil {
					redriven++
				}
			}
			fmt.Printf("%d of %d dead letters in %s (%d of them redriven)\n", len(sel), l.Total, cfg.topic, redriven)
			return nil
		},
	}
}

func dlqShowCmd() *Command {
	var (
		f      dlqFlags
		asJSON bool
	)
	return &Command{
		Name:    "dlq show",
		Summary: "Show one dead letter: why, from where, its headers and its value decoded.",
		Usage:   "dlq show PARTITION/OFFSET [flags]",
		Long: `Prints the dead letter at PARTITION/OFFSET of the dead-letter topic (as 'dlq list'
prints it): where it was consumed, the role and reason, the error, whether and
where it was redriven, its key and all its headers, and its value: decoded
when it is one of the pipeline's Avro records (request, task, manifest, result,
reply, told apart by their fingerprint), otherwise the first 512 bytes as text
or hex with the reason it does not decode. --json prints the same as JSON.`,
		Flags: func(fs *flag.FlagSet) {
			f.register(fs, false)
			fs.BoolVar(&asJSON, "json", false, "print as JSON")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return errors.New("want one PARTITION/OFFSET of the dead-letter topic, e.g. 'dlq show 0/12' (see 'dlq list')")
			}
			at, err := dlq.ParsePos(args[0])
			if err != nil {
				return err
			}
			cfg, err := f.config(time.Now())
			if err != nil {
				return err
			}
			l, err := f.scan(ctx, cfg.topic, dlq.Filter{At: []dlq.Pos{at}})
			if err != nil {
				return err
			}
			e := l.Find(at)
			if e == nil {
				end, ok := l.End[at.Partition]
				if !ok {
					return fmt.Errorf("%s has no partition %d (it has %d)", cfg.topic, at.Partition, len(l.End))
				}
				return fmt.Errorf("no dead letter at %s in %s (partition %d ends at offset %d; a redrive marker or a transaction marker is not a dead letter)", at, cfg.topic, at.Partition, end)
			}
			if asJSON {
				b, err := json.MarshalIndent(e.JSON(cfg.topic, true), "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Printf("%s\n", b)
				return err
			}
			return dlq.PrintEntry(os.Stdout, cfg.topic, e)
		},
	}
}

func dlqRedriveCmd() *Command {
	var (
		f         dlqFlags
		all       bool
		execute   bool
		batch     int
		txTimeout time.Duration
	)
	return &Command{
		Name:    "dlq redrive",
		Summary: "Write dead letters back to their source topics, each at most once (dry run unless --execute).",
		Usage:   "dlq redrive (--reason R | --role R | --source-topic T | --since T | --until T | --at P/O | --all) [--execute] [flags]",
		Long: `Selects dead letters with the filters of 'dlq list' (at least one, or --all) and
writes each back to its source topic (sg-dlq-topic) with its key, value and
headers less the sg-dlq-* ones, to the partition its key hashes to. Without
--execute it prints what it would do and writes nothing.

Each batch is one Kafka transaction that also writes, to the dead-letter topic,
a marker naming each dead letter redriven (header sg-dlq-redriven). Redrive
skips dead letters that have a marker, and its transactional id is the same
for every redrive of a DLQ topic, so two redrives fence each other: a dead
letter is written back at most once, however often the command runs.

A dead letter that cannot go back is reported and the others go on: a
stand-in for a record too large to dead-letter (its original is still in the
source topic, at the offset shown), a source topic that no longer exists, a
record the topic refuses. Exit status 1 when any could not.`,
		Flags: func(fs *flag.FlagSet) {
			f.register(fs, true)
			fs.BoolVar(&all, "all", false, "select every dead letter not yet redriven (when no filter is given)")
			fs.BoolVar(&execute, "execute", false, "write the records back; without it, only print what would be written")
			fs.IntVar(&batch, "batch-size", dlq.DefaultBatchSize, "most dead letters per transaction")
			fs.DurationVar(&txTimeout, "transaction-timeout", dlq.DefaultTransactionTimeout, "transaction timeout of the redrive's producer")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			cfg, err := f.config(time.Now())
			if err != nil {
				return err
			}
			filtered := len(f.reasons)+len(f.roles)+len(f.sources)+len(f.at) > 0 || f.since != "" || f.until != ""
			if !filtered && !all {
				return errors.New("select what to redrive: --reason, --role, --source-topic, --since, --until or --at, or --all for every dead letter")
			}
			log, err := f.c.logger()
			if err != nil {
				return err
			}
			cc, err := f.c.clientConfig(f.c.brokerList(), "scattergather-dlq-redrive")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			if cc, err = f.c.registry.apply(ctx, cc, log); err != nil {
				return err
			}
			rc := dlq.RedriveConfig{Client: cc, Topic: cfg.topic, Filter: cfg.filter, Execute: execute,
				BatchSize: batch, TransactionTimeout: txTimeout, Logger: log}
			rc.ScanProgress = f.progressFunc(os.Stderr, "read", "records of "+cfg.topic)
			if p := f.progressFunc(os.Stderr, "redrove", "dead letters"); p != nil {
				rc.Progress = func(rp dlq.RedriveProgress) { p(int64(rp.Done), int64(rp.Total)) }
			}
			res, err := dlq.Redrive(ctx, rc)
			if res != nil {
				printRedrive(os.Stdout, res, execute)
			}
			if err != nil {
				return f.explain(err)
			}
			if execute && len(res.Failed) > 0 {
				return fmt.Errorf("%d of %d dead letters could not be redriven (see above)", len(res.Failed), len(res.Planned))
			}
			return nil
		},
	}
}

// printRedrive writes what a redrive did, or would do.
func printRedrive(w io.Writer, res *dlq.RedriveResult, execute bool) {
	failed := map[*dlq.Entry]bool{}
	for _, fe := range res.Failed {
		failed[fe.Entry] = true
	}
	dups := ""
	if len(res.Duplicates) > 0 {
		dups = fmt.Sprintf(", %d duplicates skipped", len(res.Duplicates))
	}
	if !execute {
		var plan []*dlq.Entry
		for _, e := range res.Planned {
			if !failed[e] {
				plan = append(plan, e)
			}
		}
		fmt.Fprintf(w, "dry run: would redrive %d of %d selected dead letters of %s (%d already redriven, %d cannot be%s)\n",
			len(plan), res.Selected, res.Topic, len(res.Already), len(res.Failed), dups)
		if len(plan) > 0 {
			_ = dlq.PrintList(w, plan)
		}
	} else {
		fmt.Fprintf(w, "redrove %d of %d selected dead letters of %s (%d already redriven, %d could not be%s)\n",
			len(res.Redriven), res.Selected, res.Topic, len(res.Already), len(res.Failed), dups)
		for _, e := range res.Redriven {
			fmt.Fprintf(w, "  %s → %s\n", e.At, e.Redriven)
		}
	}
	for _, d := range res.Duplicates {
		fmt.Fprintf(w, "skipped %s: a duplicate of %s, a dead letter of the same record %s\n", d.Entry.At, d.Of, d.Entry.Source())
	}
	for _, fe := range res.Failed {
		fmt.Fprintf(w, "cannot redrive %s (%s, %s): %v\n", fe.Entry.At, fe.Entry.Source(), fe.Entry.Reason, fe.Err)
	}
	if !execute {
		fmt.Fprintln(w, "nothing written; add --execute to write them back")
	}
}
