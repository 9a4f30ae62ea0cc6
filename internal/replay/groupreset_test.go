package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// produceTimed produces perPartition records to every partition of topic,
// record i of a partition with the timestamp t0 + i minutes.
func produceTimed(t *testing.T, c *testkafka.Cluster, topic string, partitions int32, perPartition int, t0 time.Time) {
	t.Helper()
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for p := range partitions {
		for i := range perPartition {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "%d", i), Timestamp: t0.Add(time.Duration(i) * time.Minute)})
		}
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func groupOffsets(t *testing.T, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	resp, err := adm.FetchOffsetsForTopics(t.Context(), group, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// TestGroupResetStoppedGroup plans and executes resets of a group without
// members: a dry run changes nothing, an execute commits what it planned.
func TestGroupResetStoppedGroup(t *testing.T) {
	c := testkafka.New(t)
	adm := c.Admin(t)
	topic := c.CreateTopic(t, "tasks.echo", 3, nil)
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Minute)
	now := t0.Add(3 * time.Hour)
	produceTimed(t, c, topic, 3, 100, t0) // offsets 0..99, one minute apart
	group := c.Name("processor.echo")

	for _, tc := range []struct {
		bound string
		want  int64 // in every partition
	}{
		{"earliest", 0},
		{t0.Add(40 * time.Minute).Format(time.RFC3339), 40},
		{t0.Add(40*time.Minute + time.Second).Format(time.RFC3339Nano), 41},
		{"offset:25", 25},
		{"offset 1000", 100}, // clamped to the end
		{"latest", 100},
		{"2h", 60},      // now is t0+3h: 2h ago is minute 60
		{"1h ago", 100}, // minute 120: after the last record (minute 99), so the end
	} {
		t.Run(tc.bound, func(t *testing.T) {
			// The group has consumed everything: offsets at 100.
			var end kadm.Offsets
			for p := range int32(3) {
				end.AddOffset(topic, p, 100, -1)
			}
			if err := adm.CommitAllOffsets(t.Context(), group, end); err != nil {
				t.Fatal(err)
			}
			to, err := ParseBound(tc.bound)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := PlanGroupReset(t.Context(), adm, group, topic, to, now)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			var out strings.Builder
			if err := plan.Print(&out); err != nil {
				t.Fatal(err)
			}
			if len(plan.Moves) != 3 {
				t.Fatalf("plan has %d moves, want 3:\n%s", len(plan.Moves), out.String())
			}
			for _, m := range plan.Moves {
				if m.Current != 100 || m.New != tc.want || m.Start != 0 || m.Stable != 100 {
					t.Errorf("partition %d: %d → %d (log %d..%d), want 100 → %d (log 0..100)\n%s", m.Partition, m.Current, m.New, m.Start, m.Stable, tc.want, out.String())
				}
			}
			if tc.want < 100 && !strings.Contains(out.String(), fmt.Sprintf("re-read %d", 100-tc.want)) {
				t.Errorf("plan does not say how much is read again:\n%s", out.String())
			}
			// Reading tasks again comes with what it means for replies.
			if hasNote := strings.Contains(plan.Note, "re-processing tasks"); hasNote != (tc.want < 100) {
				t.Errorf("note %q for a move to %d", plan.Note, tc.want)
			}
			// A dry run leaves the offsets alone.
			for p, o := range groupOffsets(t, adm, group, topic) {
				if o != 100 {
					t.Fatalf("after the plan, partition %d is at %d, want 100", p, o)
				}
			}
			if err := plan.Execute(t.Context(), adm); err != nil {
				t.Fatalf("execute: %v", err)
			}
			got := groupOffsets(t, adm, group, topic)
			for p := range int32(3) {
				if got[p] != tc.want {
					t.Errorf("after execute, partition %d is at %d, want %d", p, got[p], tc.want)
				}
			}
		})
	}
}

// TestGroupResetRefusesLiveMembers: a group with a running member is not
// touched, with either group protocol.
func TestGroupResetRefusesLiveMembers(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"classic", nil},
		{"consumer (KIP-848)", []kgo.Opt{kgo.ServerSideBalancer()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkafka.New(t)
			adm := c.Admin(t)
			topic := c.CreateTopic(t, "tasks.echo", 2, nil)
			produceTimed(t, c, topic, 2, 10, time.Now().Add(-time.Hour))
			group := c.Name("live")

			joined := make(chan struct{}, 1)
			member := c.Client(t, append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ClientID("live-member"),
				kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
					select {
					case joined <- struct{}{}:
					default:
					}
				})}, tc.opts...)...)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			// The member polls (and commits) until the test ends it.
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					member.PollFetches(ctx)
				}
			}()
			t.Cleanup(func() { cancel(); <-done })
			select {
			case <-joined:
			case <-time.After(30 * time.Second):
				t.Fatal("the member did not join within 30s")
			}
			if err := member.CommitUncommittedOffsets(t.Context()); err != nil {
				t.Fatal(err)
			}
			before := groupOffsets(t, adm, group, topic)

			_, err := PlanGroupReset(t.Context(), adm, group, topic, Bound{Kind: Earliest}, time.Now())
			var live *LiveMembersError
			if !errors.As(err, &live) || len(live.Members) != 1 || !strings.Contains(live.Members[0], "live-member") {
				t.Fatalf("plan with a live member: %v, want a LiveMembersError naming live-member", err)
			}
			if !strings.Contains(err.Error(), "stop them first") {
				t.Errorf("error does not say what to do: %v", err)
			}
			// A plan made before the member joined is refused at execute too.
			stale := &GroupReset{Group: group, Topic: topic, Moves: []OffsetMove{{Partition: 0, New: 0}, {Partition: 1, New: 0}}}
			if err := stale.Execute(t.Context(), adm); !errors.As(err, &live) {
				t.Fatalf("execute with a live member: %v, want a LiveMembersError", err)
			}
			if after := groupOffsets(t, adm, group, topic); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("offsets moved from %v to %v", before, after)
			}
		})
	}
}
