package kafkaconfig

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec is one topic to create or check.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	Configs           map[string]string
	// CoPartitioned names the group of topics that must share a partition
	// count (results and aggregator-state); empty for none.
	CoPartitioned string
}

// Layout says how many partitions and replicas the pipeline's topics get.
type Layout struct {
	// Partitions of requests, tasks, replies and dlq.
	Partitions int32
	// ResultPartitions of results and aggregator-state, which must match.
	ResultPartitions int32
	// ReplicationFactor of every topic; -1 takes the broker's default.
	ReplicationFactor int16
}

// Validate reports every problem with l at once.
func (l Layout) Validate() error {
	var errs []error
	if l.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions: %d, want at least 1", l.Partitions))
	}
	if l.ResultPartitions < 1 {
		errs = append(errs, fmt.Errorf("result partitions: %d, want at least 1", l.ResultPartitions))
	}
	if l.ReplicationFactor == 0 || l.ReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("replication factor: %d, want -1 (broker default) or at least 1", l.ReplicationFactor))
	}
	return errors.Join(errs...)
}

// Specs returns the topics of the pipeline for the given routes.
func (t Topics) Specs(l Layout, routes []string) []TopicSpec {
	specs := []TopicSpec{
		{Name: t.Requests(), Partitions: l.Partitions, ReplicationFactor: l.ReplicationFactor},
		{Name: t.Results(), Partitions: l.ResultPartitions, ReplicationFactor: l.ReplicationFactor, CoPartitioned: "results"},
		{Name: t.State(), Partitions: l.ResultPartitions, ReplicationFactor: l.ReplicationFactor, CoPartitioned: "results",
			Configs: map[string]string{"cleanup.policy": "compact"}},
		{Name: t.Replies(), Partitions: l.Partitions, ReplicationFactor: l.ReplicationFactor},
		{Name: t.DLQ(), Partitions: l.Partitions, ReplicationFactor: l.ReplicationFactor},
	}
	for _, r := range routes {
		specs = append(specs, TopicSpec{Name: t.Tasks(r), Partitions: l.Partitions, ReplicationFactor: l.ReplicationFactor})
	}
	return specs
}

// PartitionMismatchError says that an existing topic does not have the
// partition count the pipeline needs.
type PartitionMismatchError struct {
	Topic  string
	Have   int
	Want   int32
	Reason string
}

func (e *PartitionMismatchError) Error() string {
	return fmt.Sprintf("topic %s has %d partitions, want %d: %s", e.Topic, e.Have, e.Want, e.Reason)
}

// CreateTopics creates the pipeline's topics for routes under t with layout
// l (what `scattergather topics` does), checking those that exist; see
// [EnsureTopics]. It returns the names it created.
func CreateTopics(ctx context.Context, c Client, t Topics, l Layout, routes []string) ([]string, error) {
	if err := errors.Join(c.Validate(), l.Validate()); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(c.Options()...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	return EnsureTopics(ctx, kadm.NewClient(cl), t.withDefaults().Specs(l, routes))
}

// EnsureTopics creates the missing topics of specs and checks the existing
// ones. Topics in one co-partitioned group must have exactly the wanted
// partition count (the aggregator's state follows the results' partitions);
// other topics may have more partitions than asked. It returns what it
// created and every problem at once.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec) (created []string, err error) {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var (
		errs  []error
		raced []TopicSpec // created by someone else between our list and create
	)
	for _, s := range specs {
		d, ok := existing[s.Name]
		if ok && d.Err == nil {
			errs = append(errs, s.check(d)...)
			continue
		}
		if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("describe topic %s: %w", s.Name, d.Err))
			continue
		}
		configs := map[string]*string{}
		for k, v := range s.Configs {
			configs[k] = kadm.StringPtr(v)
		}
		resp, cerr := adm.CreateTopic(ctx, s.Partitions, s.ReplicationFactor, configs, s.Name)
		switch {
		case cerr == nil && resp.Err == nil:
			created = append(created, s.Name)
		case errors.Is(cerr, kerr.TopicAlreadyExists) || errors.Is(resp.Err, kerr.TopicAlreadyExists):
			// Listed as unknown, yet it exists: another instance created it
			// meanwhile. Check it below.
			raced = append(raced, s)
		case cerr != nil:
			errs = append(errs, fmt.Errorf("create topic %s: %w", s.Name, cerr))
		default:
			msg := ""
			if resp.ErrMessage != "" {
				msg = ": " + resp.ErrMessage
			}
			errs = append(errs, fmt.Errorf("create topic %s (%d partitions, replication %d): %w%s", s.Name, s.Partitions, s.ReplicationFactor, resp.Err, msg))
		}
	}
	errs = append(errs, checkRaced(ctx, adm, raced)...)
	sort.Strings(created)
	return created, errors.Join(errs...)
}

// check compares an existing topic's partition count with s.
func (s TopicSpec) check(d kadm.TopicDetail) []error {
	have := len(d.Partitions)
	switch {
	case s.CoPartitioned != "" && have != int(s.Partitions):
		return []error{&PartitionMismatchError{Topic: s.Name, Have: have, Want: s.Partitions,
			Reason: fmt.Sprintf("the %s topics must be co-partitioned; recreate it or set the result partitions to %d", s.CoPartitioned, have)}}
	case have < int(s.Partitions):
		return []error{&PartitionMismatchError{Topic: s.Name, Have: have, Want: s.Partitions,
			Reason: "fewer partitions than configured; add partitions or lower the setting"}}
	}
	return nil
}

// checkRaced checks topics that another client created while we were
// creating them. The client serves metadata requests from a cache for a few
// seconds, so the "unknown topic" we saw may be repeated for a while: ask
// again until it clears or ten seconds pass.
func checkRaced(ctx context.Context, adm *kadm.Client, specs []TopicSpec) []error {
	var errs []error
	for attempt := 0; len(specs) > 0; attempt++ {
		names := make([]string, len(specs))
		for i, s := range specs {
			names[i] = s.Name
		}
		details, err := adm.ListTopics(ctx, names...)
		if err != nil {
			return append(errs, fmt.Errorf("list topics: %w", err))
		}
		var again []TopicSpec
		for _, s := range specs {
			switch d := details[s.Name]; {
			case d.Err == nil:
				errs = append(errs, s.check(d)...)
			case errors.Is(d.Err, kerr.UnknownTopicOrPartition) && attempt < 50:
				again = append(again, s)
			default:
				errs = append(errs, fmt.Errorf("describe topic %s: %w", s.Name, d.Err))
			}
		}
		if specs = again; len(specs) > 0 {
			select {
			case <-ctx.Done():
				return append(errs, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return errs
}

// ValidRouteName reports whether name can be part of a topic name.
func ValidRouteName(name string) error {
	if name == "" {
		return errors.New("route name is empty")
	}
	if len(name) > 200 {
		return fmt.Errorf("route name %.20q... is %d characters, want at most 200", name, len(name))
	}
	if i := strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}); i >= 0 {
		return fmt.Errorf("route name %q: character %q at %d is not allowed in a topic name (use letters, digits, '.', '_', '-')", name, name[i], i)
	}
	return nil
}
