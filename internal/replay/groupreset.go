package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// GroupReset is a planned move of a consumer group's committed offsets on
// one topic. Build it with [PlanGroupReset]; nothing changes until
// [GroupReset.Execute].
type GroupReset struct {
	Group string `json:"group"`
	Topic string `json:"topic"`
	To    string `json:"to"`
	// GroupType is "classic", "consumer" (KIP-848) or "" when the group
	// does not exist yet; State is the group's state then ("Empty", ...).
	GroupType string `json:"group_type"`
	State     string `json:"state"`
	// Moves has one entry per partition of the topic, sorted.
	Moves []OffsetMove `json:"moves"`
	// Note says what reading the topic again does to replies, when the
	// topic is one of the pipeline's and the reset reads records again.
	Note string `json:"note,omitempty"`
}

// reprocessingNote says what re-reading topic means for replies, judged by
// its name (see docs/replay.md, "In place").
func reprocessingNote(topic string) string {
	switch {
	case strings.HasSuffix(topic, "requests"):
		return "re-scattering requests: the aggregator drops the manifests of requests within their deadline plus its late window " +
			"(--late-window, default 5m) as duplicates and their results as late; older manifests are dead-lettered as manifest-expired " +
			"and their results as orphan-result, never answered again. Requests the scatterer rejects are rejected, and answered FAILED, " +
			"again. To re-run old requests, use 'scattergather replay', which re-submits them under new ids."
	case strings.HasSuffix(topic, "results"):
		return "re-aggregating results: the aggregator restores the requests it answered within their deadline plus its late window from " +
			"its changelog and drops their records as duplicates and late; older manifests are dead-lettered as manifest-expired and their " +
			"results as orphan-result. No request is answered twice."
	case strings.Contains(topic, "tasks."):
		return "re-processing tasks: tasks past their deadline are answered EXPIRED without running the handler; results of requests answered " +
			"within the aggregator's late window are dropped as late, older ones are dead-lettered as orphan-result. No request is answered twice."
	}
	return ""
}

// OffsetMove is one partition's move. Current is -1 when the group has no
// committed offset for the partition.
type OffsetMove struct {
	Partition int32 `json:"partition"`
	Current   int64 `json:"current"`
	New       int64 `json:"new"`
	// Start and Stable are the partition's log start and last stable
	// offsets when planned.
	Start  int64 `json:"log_start"`
	Stable int64 `json:"log_end"`
}

// LiveMembersError is returned when a group to reset has members: a
// running consumer would overwrite the new offsets with its own, so the
// reset refuses until every member has stopped.
type LiveMembersError struct {
	Group   string
	State   string
	Members []string // client id@host of each member
}

func (e *LiveMembersError) Error() string {
	return fmt.Sprintf("group %s is %s with %d live member(s) (%s): stop them first, offsets can only be reset on a group without members",
		e.Group, e.State, len(e.Members), strings.Join(e.Members, ", "))
}

// PlanGroupReset works out where group's offsets on topic would move to
// reach to, and fails with a *LiveMembersError while the group has
// members. It changes nothing.
func PlanGroupReset(ctx context.Context, adm *kadm.Client, group, topic string, to Bound, now time.Time) (*GroupReset, error) {
	if group == "" || topic == "" {
		return nil, errors.New("group reset: a group and a topic are required")
	}
	gr := &GroupReset{Group: group, Topic: topic, To: to.String()}
	if err := gr.checkMembers(ctx, adm); err != nil {
		return nil, err
	}
	target, wm, err := to.Resolve(ctx, adm, topic, now)
	if err != nil {
		return nil, fmt.Errorf("group reset of %s on %s: %w", group, topic, err)
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, group, topic)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("group reset: committed offsets of %s: %w", group, err)
	}
	for p, o := range target {
		m := OffsetMove{Partition: p, Current: -1, New: o, Start: wm[p].Start, Stable: wm[p].Stable}
		if c, ok := committed.Lookup(topic, p); ok && c.Err == nil && c.At >= 0 {
			m.Current = c.At
		}
		gr.Moves = append(gr.Moves, m)
	}
	slices.SortFunc(gr.Moves, func(a, b OffsetMove) int { return int(a.Partition - b.Partition) })
	for _, m := range gr.Moves {
		if m.Current < 0 || m.New < m.Current {
			gr.Note = reprocessingNote(topic)
			break
		}
	}
	return gr, nil
}

// checkMembers fills in the group's type and state and fails with a
// *LiveMembersError if it has members.
func (gr *GroupReset) checkMembers(ctx context.Context, adm *kadm.Client) error {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("group reset: list groups: %w", err)
	}
	lg, ok := listed[gr.Group]
	if !ok {
		gr.GroupType, gr.State = "", "absent"
		return nil
	}
	gr.GroupType, gr.State = lg.GroupType, lg.State
	var members []string
	switch lg.GroupType {
	case "consumer":
		ds, err := adm.DescribeConsumerGroups(ctx, gr.Group)
		if err == nil {
			err = ds.Error()
		}
		if err != nil {
			return fmt.Errorf("group reset: describe group %s: %w", gr.Group, err)
		}
		d := ds[gr.Group]
		gr.State = d.State
		for _, m := range d.Members {
			members = append(members, m.ClientID+"@"+m.ClientHost)
		}
	case "classic", "":
		ds, err := adm.DescribeGroups(ctx, gr.Group)
		if err == nil {
			err = ds.Error()
		}
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			return fmt.Errorf("group reset: describe group %s: %w", gr.Group, err)
		}
		d := ds[gr.Group]
		if d.State != "" {
			gr.State = d.State
		}
		for _, m := range d.Members {
			members = append(members, m.ClientID+"@"+m.ClientHost)
		}
	default:
		return fmt.Errorf("group reset: group %s is a %s group; only consumer groups can be reset", gr.Group, lg.GroupType)
	}
	if len(members) > 0 {
		slices.Sort(members)
		return &LiveMembersError{Group: gr.Group, State: gr.State, Members: members}
	}
	return nil
}

// Execute commits the planned offsets, after checking again that the
// group has no members.
func (gr *GroupReset) Execute(ctx context.Context, adm *kadm.Client) error {
	if err := gr.checkMembers(ctx, adm); err != nil {
		return err
	}
	var os kadm.Offsets
	for _, m := range gr.Moves {
		os.AddOffset(gr.Topic, m.Partition, m.New, -1)
	}
	resp, err := adm.CommitOffsets(ctx, gr.Group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("group reset: commit offsets of %s on %s (did a member join meanwhile?): %w", gr.Group, gr.Topic, err)
	}
	return nil
}

// Print writes the plan as a table: each partition's current → new offset
// and how many offsets the group will read again or skip (offsets, not
// records: transaction markers take an offset each).
func (gr *GroupReset) Print(w io.Writer) error {
	kind := gr.GroupType
	if kind == "" {
		kind = "no such group yet"
	}
	fmt.Fprintf(w, "group %s (%s, %s) on %s → %s\n\n", gr.Group, kind, gr.State, gr.Topic, gr.To)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PARTITION\tLOG START\tLOG END\tCURRENT\tNEW\tCHANGE\t")
	var reread, skip int64
	for _, m := range gr.Moves {
		cur, change := "-", "-"
		if m.Current >= 0 {
			cur = fmt.Sprint(m.Current)
			switch d := m.New - m.Current; {
			case d < 0:
				change = fmt.Sprintf("re-read %d", -d)
				reread -= d
			case d > 0:
				change = fmt.Sprintf("skip %d", d)
				skip += d
			default:
				change = "none"
			}
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%s\t\n", m.Partition, m.Start, m.Stable, cur, m.New, change)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nin total: %d offsets to read again, %d to skip (transaction markers count as offsets)\n", reread, skip)
	if gr.Note != "" {
		fmt.Fprintf(w, "\nnote: %s\n", gr.Note)
	}
	return nil
}
