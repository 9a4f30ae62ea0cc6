package kafkaconfig

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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
// other topics may have more partitions than asked. It returns once every
// topic it created has a leader for each partition, so that a produce to
// it succeeds, with what it created and every problem at once.
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
		made  []TopicSpec
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
			made = append(made, s)
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
	errs = append(errs, settle(ctx, adm, made, raced)...)
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

// settle waits until every topic of made, created by us, and raced,
// created by another client while we were creating it, is listed with each
// of its partitions led, and then checks the raced ones as existing topics.
// A real broker answers CreateTopics before its brokers know the new
// partitions' leaders, and a produce then fails with
// UNKNOWN_TOPIC_OR_PARTITION once the client's UnknownTopicRetries are
// spent. So ask again until the leaders show or settleFor passes.
func settle(ctx context.Context, adm *kadm.Client, made, raced []TopicSpec) []error {
	var errs []error
	// kadm answers ListTopics from the client's metadata cache, which still
	// holds the "unknown topic" seen before the create for MetadataMinAge
	// (5s by default); asking for the authorized operations makes it ask
	// the broker each time.
	fresh := kadm.WithAuthorizedOps(ctx)
	wait := make(map[string]TopicSpec, len(made)+len(raced))
	check := make(map[string]bool, len(raced))
	for _, s := range made {
		wait[s.Name] = s
	}
	for _, s := range raced {
		wait[s.Name], check[s.Name] = s, true
	}
	deadline := time.Now().Add(settleFor)
	for len(wait) > 0 {
		names := slices.Sorted(maps.Keys(wait))
		details, err := adm.ListTopics(fresh, names...)
		if err != nil {
			return append(errs, fmt.Errorf("list topics: %w", err))
		}
		late := time.Now().After(deadline)
		for _, name := range names {
			s, d := wait[name], details[name]
			switch {
			case d.Err == nil && check[name] && led(d):
				errs = append(errs, s.check(d)...)
			case d.Err == nil && led(d) && len(d.Partitions) >= int(s.Partitions):
			case d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) && !errors.Is(d.Err, kerr.LeaderNotAvailable):
				errs = append(errs, fmt.Errorf("describe topic %s: %w", name, d.Err))
			case late:
				errs = append(errs, fmt.Errorf("topic %s: %d of its %d partitions have a leader %s after it was created; is a broker down?",
					name, ledCount(d), s.Partitions, settleFor))
			default:
				continue
			}
			delete(wait, name)
		}
		if len(wait) > 0 {
			select {
			case <-ctx.Done():
				names := strings.Join(slices.Sorted(maps.Keys(wait)), ", ")
				return append(errs, fmt.Errorf("waiting for the leaders of topics %s: %w", names, ctx.Err()))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return errs
}

// settleFor is how long settle waits for new topics' leaders.
const settleFor = 30 * time.Second

// led reports whether the topic has partitions and each has a leader.
func led(d kadm.TopicDetail) bool {
	return len(d.Partitions) > 0 && ledCount(d) == len(d.Partitions)
}

func ledCount(d kadm.TopicDetail) int {
	n := 0
	for _, p := range d.Partitions {
		if p.Leader >= 0 && p.Err == nil {
			n++
		}
	}
	return n
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
