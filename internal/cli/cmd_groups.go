package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/replay"
)

func groupsCmd() *Command {
	return &Command{
		Name:    "groups",
		Summary: "Consumer group tools: 'groups reset' moves a stopped group's offsets.",
		Usage:   "groups reset --group G --topic T --to BOUND [--execute]",
		Long: `Subcommands:
  reset   move a consumer group's committed offsets on a topic, for in-place
          reprocessing (see 'scattergather groups reset --help' and docs/replay.md)`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return errors.New("a subcommand is required: reset")
			}
			if args[0] != "reset" {
				return fmt.Errorf("unknown subcommand %q: want reset", args[0])
			}
			if code := run(ctx, groupsResetCmd(), args[1:], os.Stdout, os.Stderr); code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

func groupsResetCmd() *Command {
	var (
		c       common
		group   string
		topic   string
		to      string
		execute bool
	)
	return &Command{
		Name:    "groups reset",
		Summary: "Move a consumer group's committed offsets on a topic (dry run unless --execute).",
		Usage:   "groups reset --group G --topic T --to BOUND [--execute]",
		Long: `Prints, per partition of --topic, the group's current offset, the new one and
how many records the group will read again or skip. With --execute it commits
the new offsets. It refuses while the group has live members (a running
consumer would overwrite the offsets): stop the role first, reset, start it.

--to is an RFC3339 time (the first record at or after it), a duration ago (2h),
offset:N (clamped to the partition), earliest or latest (the last stable
offset). Topic and group are full names, e.g. for the processors of route
search under the default prefix:
  scattergather groups reset --group sg.processor.search --topic sg.tasks.search --to 1h

Resetting a role of a running pipeline reprocesses in place: the aggregator
drops results for requests it already answered (counted as late) while it
remembers them (its --late-window); see docs/replay.md before resetting past it.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
			registerSecurity(fs, &c.security)
			fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
			fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "warn", "level of the Kafka client's own logs: debug, info, warn, error or none")
			fs.StringVar(&group, "group", "", "consumer group to move (required)")
			fs.StringVar(&topic, "topic", "", "topic whose offsets to move, full name (required)")
			fs.StringVar(&to, "to", "", "where to: RFC3339 time, duration ago (2h), offset:N, earliest or latest (required)")
			fs.BoolVar(&execute, "execute", false, "commit the new offsets; without it, only print them")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			var missing []error
			for _, f := range []struct{ name, v string }{{"--group", group}, {"--topic", topic}, {"--to", to}} {
				if f.v == "" {
					missing = append(missing, fmt.Errorf("%s is required", f.name))
				}
			}
			if err := errors.Join(missing...); err != nil {
				return err
			}
			bound, err := replay.ParseBound(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			cc, err := c.clientConfig(c.brokerList(), "scattergather-groups")
			if err != nil {
				return fmt.Errorf("--brokers: %w", err)
			}
			cl, err := kafka.NewClient(cc)
			if err != nil {
				return err
			}
			defer cl.Close()
			adm := kadm.NewClient(cl)
			plan, err := replay.PlanGroupReset(ctx, adm, group, topic, bound, time.Now())
			if err != nil {
				return err
			}
			if err := plan.Print(os.Stdout); err != nil {
				return err
			}
			if !execute {
				fmt.Println("dry run: nothing changed; add --execute to commit these offsets")
				return nil
			}
			if err := plan.Execute(ctx, adm); err != nil {
				return err
			}
			fmt.Printf("committed the new offsets of group %s on %s\n", group, topic)
			return nil
		},
	}
}
