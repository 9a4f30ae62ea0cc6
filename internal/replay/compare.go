package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// The categories of a compared pair (original reply, replay reply).
const (
	Same            = "same"             // same status and payload
	Changed         = "changed"          // same status, different payload
	StatusChanged   = "status_changed"   // different status (e.g. COMPLETE→PARTIAL)
	MissingReplay   = "missing_replay"   // the replay has no reply (yet)
	MissingOriginal = "missing_original" // the original has no reply (never, or gone by retention)
)

// DefaultExamples is the number of examples per category in a report.
const DefaultExamples = 3

// CompareConfig configures [Compare].
type CompareConfig struct {
	Client kafkaconfig.Client
	// Source names the topics of the originals: their replies are read
	// from every topic whose name starts with Source.Replies() (the
	// replies topic and any per-client reply topics).
	Source kafkaconfig.Topics
	// Target names the topics the run replayed into: its checkpoint
	// topic, its requests and its replies (every topic starting with
	// Target.Replies()); zero means Source.
	Target kafkaconfig.Topics
	// RunID is the run to compare; required.
	RunID string
	// JSON compares payloads as JSON documents (key order, whitespace and
	// number spelling ignored); otherwise byte for byte. A payload that is
	// not JSON is compared byte for byte.
	JSON bool
	// IgnoreFields are left out of the JSON comparison; setting any
	// implies JSON.
	IgnoreFields []FieldPath
	// Examples per category in the report; default 3, -1 for none.
	Examples int
	// Wait is how long to wait for replay replies that have not come yet
	// (the replay may still be in flight); 0 reads what is there now.
	Wait time.Duration
	// UntilDue also waits for them until the run's last replies are due:
	// its last checkpoint plus its longest request timeout plus 5s
	// ([RunDue]), which is in the past for a run that ended long ago.
	// The longer of the two waits holds.
	UntilDue bool
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Validate fills in defaults and reports every problem with c at once.
func (c *CompareConfig) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Source.Prefix == "" {
		c.Source.Prefix = kafkaconfig.DefaultPrefix
	}
	if c.Target.Prefix == "" {
		c.Target = c.Source
	}
	if c.RunID == "" {
		errs = append(errs, errors.New("run id: required"))
	} else if err := ValidRunID(c.RunID); err != nil {
		errs = append(errs, err)
	}
	if len(c.IgnoreFields) > 0 {
		c.JSON = true
	}
	switch {
	case c.Examples == 0:
		c.Examples = DefaultExamples
	case c.Examples < 0:
		c.Examples = 0
	}
	if c.Wait < 0 {
		errs = append(errs, fmt.Errorf("wait: %s is negative", c.Wait))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Pair is one replayed request with its original, as compared.
type Pair struct {
	Category       string `json:"category"`
	ReplayID       string `json:"replay_id"`
	OriginalID     string `json:"original_id"`
	OriginalStatus string `json:"original_status,omitempty"`
	ReplayStatus   string `json:"replay_status,omitempty"`
	// Paths says where JSON payloads differ (at most 10).
	Paths []string `json:"paths,omitempty"`
	// Latencies (completed_at − submitted_at of each reply), when it came.
	OriginalLatencyMs int64 `json:"original_latency_ms,omitempty"`
	ReplayLatencyMs   int64 `json:"replay_latency_ms,omitempty"`
	// Payloads, truncated to 300 bytes, in examples only.
	OriginalPayload string `json:"original_payload,omitempty"`
	ReplayPayload   string `json:"replay_payload,omitempty"`
}

// Report is the result of [Compare].
type Report struct {
	RunID string `json:"run_id"`
	// RunComplete is false while the run has not replayed its whole range.
	RunComplete bool     `json:"run_complete"`
	Mode        string   `json:"mode"` // "bytes" or "json"
	Ignored     []string `json:"ignored_fields,omitempty"`
	// Requests is the number of replayed requests of the run found on the
	// target requests topic.
	Requests int `json:"requests"`
	// Counts by category (Same, Changed, ...); every category is present.
	Counts map[string]int `json:"counts"`
	// Transitions counts status changes, e.g. "COMPLETE→PARTIAL": 3.
	Transitions map[string]int `json:"status_transitions"`
	// Examples are the first few pairs of each category but Same, with
	// their payloads.
	Examples map[string][]Pair `json:"examples"`
	// Differences lists every pair that is not Same, sorted by replay id.
	Differences []Pair `json:"differences"`
	// DuplicateReplies counts second replies found for one correlation id
	// (there should be none).
	DuplicateReplies int `json:"duplicate_replies"`
	// Latency compares the originals' and the replays' latencies.
	Latency Latency `json:"latency"`
}

// Latency compares how long the originals and their replays took, from
// submitted-at to completed-at of each reply (the original's timings come
// from the original's own reply), over the pairs where both replied.
type Latency struct {
	Pairs         int     `json:"pairs"`
	OriginalP50Ms float64 `json:"original_p50_ms"`
	OriginalP99Ms float64 `json:"original_p99_ms"`
	ReplayP50Ms   float64 `json:"replay_p50_ms"`
	ReplayP99Ms   float64 `json:"replay_p99_ms"`
}

func latencyMs(r schemas.Reply) int64 { return r.CompletedAt.Sub(r.SubmittedAt).Milliseconds() }

// quantile returns the q quantile (nearest rank) of sorted, 0 for none.
func quantile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.5) - 1
	return float64(sorted[min(max(i, 0), len(sorted)-1)])
}

// Changes is the number of pairs that changed: payload or status.
func (r *Report) Changes() int { return r.Counts[Changed] + r.Counts[StatusChanged] }

// Missing is the number of pairs where either reply is missing.
func (r *Report) Missing() int { return r.Counts[MissingReplay] + r.Counts[MissingOriginal] }

// replyGrace is how long after a request's timeout its reply may still
// come: the aggregator's deadline tick and the reply's transaction.
const replyGrace = 5 * time.Second

// RunDue is when the last reply of st's requests is due: the last
// checkpoint (after the last request sent) plus the longest timeout of
// its requests plus a grace for the reply's own way.
func RunDue(st *RunState) time.Time {
	return st.UpdatedAt.Add(time.Duration(st.LongestTimeoutMS)*time.Millisecond + replyGrace)
}

// Compare joins the replies of run's replayed requests with the replies of
// their originals (by Reply.ReplayOf) and classifies every pair.
//
// The run's requests are found on the target requests topic after where it
// ended when the run was created (RunState.TargetStart), by their
// Request.ReplayRun; their replies on the target reply topics by
// correlation id, and the originals' replies on the source reply topics
// from a minute before the earliest original's submitted-at.
func Compare(ctx context.Context, cfg CompareConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("compare config: %w", err)
	}
	st, err := LoadRun(ctx, cfg.Client, cfg.Target, cfg.RunID)
	if err != nil {
		return nil, err
	}
	cl, err := kafka.NewClient(cfg.Client)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// The run's requests: replay id → original id.
	origOf := map[schemas.CorrelationID]schemas.CorrelationID{}
	var earliest time.Time
	wm, err := kafka.Watermarks(ctx, adm, st.TargetTopic)
	if err != nil {
		return nil, err
	}
	var ranges []PartitionRange
	for p, w := range wm {
		from := max(st.TargetStart[p], w.Start)
		ranges = append(ranges, PartitionRange{Partition: p, Start: from, Next: from, End: max(from, w.Stable)})
	}
	err = kafka.ReadRanges(ctx, cfg.Client, st.TargetTopic, spans(ranges), func(rec *kgo.Record) error {
		if rec.Attrs.IsControl() || !hasHeader(rec, HeaderReplayRun, st.RunID) {
			return nil
		}
		req, err := schemas.DecodeRequest(rec.Value)
		if err != nil || req.ReplayRun == nil || *req.ReplayRun != st.RunID || req.ReplayOf == nil {
			return nil
		}
		origOf[req.CorrelationID] = *req.ReplayOf
		if t, err := time.Parse(time.RFC3339Nano, req.Headers[HeaderOriginalSubmittedAt]); err == nil && (earliest.IsZero() || t.Before(earliest)) {
			earliest = t
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the requests of run %s: %w", st.RunID, err)
	}
	if earliest.IsZero() {
		earliest = st.CreatedAt
	}

	// The replies.
	replays := make(map[schemas.CorrelationID]bool, len(origOf))
	originals := make(map[schemas.CorrelationID]bool, len(origOf))
	for r, o := range origOf {
		replays[r], originals[o] = true, true
	}
	until := cfg.Now().Add(cfg.Wait)
	if due := RunDue(st); cfg.UntilDue && due.After(until) {
		until = due
	}
	var replies map[schemas.CorrelationID]schemas.Reply
	var dups int
	if cfg.Source.Replies() == cfg.Target.Replies() {
		want := maps.Clone(replays)
		maps.Copy(want, originals)
		replies, dups, err = collectReplies(ctx, cfg, adm, cfg.Target.Replies(), earliest.Add(-time.Minute), want, replays, until)
	} else {
		var rep, orig map[schemas.CorrelationID]schemas.Reply
		var d1, d2 int
		rep, d1, err = collectReplies(ctx, cfg, adm, cfg.Target.Replies(), st.CreatedAt.Add(-time.Minute), replays, replays, until)
		if err == nil {
			orig, d2, err = collectReplies(ctx, cfg, adm, cfg.Source.Replies(), earliest.Add(-time.Minute), originals, nil, time.Time{})
		}
		replies, dups = rep, d1+d2
		maps.Copy(replies, orig)
	}
	if err != nil {
		return nil, err
	}

	rep := &Report{
		RunID: st.RunID, RunComplete: st.Done, Mode: "bytes", Requests: len(origOf),
		Counts:      map[string]int{Same: 0, Changed: 0, StatusChanged: 0, MissingReplay: 0, MissingOriginal: 0},
		Transitions: map[string]int{}, Examples: map[string][]Pair{}, DuplicateReplies: dups,
	}
	if cfg.JSON {
		rep.Mode = "json"
		for _, f := range cfg.IgnoreFields {
			rep.Ignored = append(rep.Ignored, f.String())
		}
	}
	var origLat, replayLat []int64
	for _, rid := range slices.Sorted(maps.Keys(origOf)) {
		oid := origOf[rid]
		o, oOK := replies[oid]
		r, rOK := replies[rid]
		p := Pair{ReplayID: string(rid), OriginalID: string(oid)}
		if oOK {
			p.OriginalStatus, p.OriginalLatencyMs = string(o.Status), latencyMs(o)
		}
		if rOK {
			p.ReplayStatus, p.ReplayLatencyMs = string(r.Status), latencyMs(r)
		}
		if oOK && rOK {
			origLat, replayLat = append(origLat, p.OriginalLatencyMs), append(replayLat, p.ReplayLatencyMs)
		}
		switch {
		case !rOK:
			p.Category = MissingReplay
		case !oOK:
			p.Category = MissingOriginal
		case o.Status != r.Status:
			p.Category = StatusChanged
			rep.Transitions[string(o.Status)+"→"+string(r.Status)]++
		default:
			p.Category = Same
			if !cfg.samePayload(o.Payload, r.Payload, &p) {
				p.Category = Changed
			}
		}
		rep.Counts[p.Category]++
		if p.Category == Same {
			continue
		}
		rep.Differences = append(rep.Differences, p)
		if len(rep.Examples[p.Category]) < cfg.Examples {
			ex := p
			if oOK {
				ex.OriginalPayload = snippet(o.Payload)
			}
			if rOK {
				ex.ReplayPayload = snippet(r.Payload)
			}
			rep.Examples[p.Category] = append(rep.Examples[p.Category], ex)
		}
	}
	slices.Sort(origLat)
	slices.Sort(replayLat)
	rep.Latency = Latency{Pairs: len(origLat),
		OriginalP50Ms: quantile(origLat, 0.5), OriginalP99Ms: quantile(origLat, 0.99),
		ReplayP50Ms: quantile(replayLat, 0.5), ReplayP99Ms: quantile(replayLat, 0.99)}
	return rep, nil
}

// samePayload compares payloads as configured and notes where they differ.
func (c *CompareConfig) samePayload(a, b []byte, p *Pair) bool {
	if c.JSON {
		if diffs, ok := JSONDiff(a, b, c.IgnoreFields, 10); ok {
			p.Paths = diffs
			return len(diffs) == 0
		}
	}
	return bytes.Equal(a, b)
}

func snippet(b []byte) string {
	const n = 300
	if len(b) <= n {
		return string(b)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "…"
}

func hasHeader(rec *kgo.Record, key, value string) bool {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value) == value
		}
	}
	return false
}

// collectReplies reads the replies whose correlation id is in want from
// every topic whose name starts with base, from the first offset at or
// after since. While ids of need are still missing it keeps reading new
// replies until until; it returns how many second replies it saw for one
// id.
func collectReplies(ctx context.Context, cfg CompareConfig, adm *kadm.Client, base string, since time.Time,
	want, need map[schemas.CorrelationID]bool, until time.Time) (map[schemas.CorrelationID]schemas.Reply, int, error) {
	out := map[schemas.CorrelationID]schemas.Reply{}
	if len(want) == 0 {
		return out, 0, nil
	}
	tds, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list reply topics: %w", err)
	}
	var topics []string
	for _, t := range tds.Names() {
		if strings.HasPrefix(t, base) {
			topics = append(topics, t)
		}
	}
	if len(topics) == 0 {
		return nil, 0, fmt.Errorf("no reply topic %s*", base)
	}
	from := map[string][]PartitionRange{}
	for _, t := range topics {
		starts, _, err := Bound{Kind: AtTime, Time: since}.Resolve(ctx, adm, t, cfg.Now())
		if err != nil {
			return nil, 0, err
		}
		for p, o := range starts {
			from[t] = append(from[t], PartitionRange{Partition: p, Start: o, Next: o, End: o})
		}
	}
	dups := 0
	missing := func() int {
		n := 0
		for id := range need {
			if _, ok := out[id]; !ok {
				n++
			}
		}
		return n
	}
	for {
		for _, t := range topics {
			wm, err := kafka.Watermarks(ctx, adm, t)
			if err != nil {
				return nil, 0, err
			}
			for i := range from[t] {
				pr := &from[t][i]
				pr.Start, pr.End = pr.Next, max(pr.Next, wm[pr.Partition].Stable)
			}
			err = kafka.ReadRanges(ctx, cfg.Client, t, spans(from[t]), func(rec *kgo.Record) error {
				if rec.Attrs.IsControl() || !want[schemas.CorrelationID(rec.Key)] {
					return nil
				}
				reply, err := schemas.DecodeReply(rec.Value)
				if err != nil {
					cfg.Logger.Warn("undecodable reply", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
					return nil
				}
				if _, seen := out[reply.CorrelationID]; seen {
					dups++
					return nil
				}
				out[reply.CorrelationID] = reply
				return nil
			})
			if err != nil {
				return nil, 0, fmt.Errorf("read replies: %w", err)
			}
			for i := range from[t] {
				from[t][i].Next = from[t][i].End
			}
		}
		if missing() == 0 || !cfg.Now().Before(until) {
			return out, dups, nil
		}
		cfg.Logger.Info("waiting for replay replies", "missing", missing(), "until", until.Format(time.RFC3339))
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Print writes the report for people: counts, transitions and examples.
func (r *Report) Print(w io.Writer) error {
	state := "complete"
	if !r.RunComplete {
		state = "NOT complete: only what it replayed so far is compared"
	}
	how := "byte for byte"
	if r.Mode == "json" {
		how = "as JSON"
		if len(r.Ignored) > 0 {
			how += " ignoring " + strings.Join(r.Ignored, ", ")
		}
	}
	fmt.Fprintf(w, "replay compare: run %s (%s), %d replayed requests, payloads compared %s\n\n", r.RunID, state, r.Requests, how)
	fmt.Fprintf(w, "  %-16s %d\n", "same", r.Counts[Same])
	fmt.Fprintf(w, "  %-16s %d\n", "changed", r.Counts[Changed])
	fmt.Fprintf(w, "  %-16s %d", "status changed", r.Counts[StatusChanged])
	for _, t := range slices.Sorted(maps.Keys(r.Transitions)) {
		fmt.Fprintf(w, "  %s %d", t, r.Transitions[t])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-16s %d  (no replay reply %d, no original reply %d)\n", "missing", r.Missing(), r.Counts[MissingReplay], r.Counts[MissingOriginal])
	if l := r.Latency; l.Pairs > 0 {
		fmt.Fprintf(w, "  %-16s original p50 %.0fms p99 %.0fms, replay p50 %.0fms p99 %.0fms (%d pairs)\n", "latency",
			l.OriginalP50Ms, l.OriginalP99Ms, l.ReplayP50Ms, l.ReplayP99Ms, l.Pairs)
	}
	if r.DuplicateReplies > 0 {
		fmt.Fprintf(w, "  %-16s %d  (second replies for one correlation id: a pipeline bug)\n", "duplicate", r.DuplicateReplies)
	}
	for _, c := range []string{Changed, StatusChanged, MissingReplay, MissingOriginal} {
		ex := r.Examples[c]
		if len(ex) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%d of %d):\n", strings.ReplaceAll(c, "_", " "), len(ex), r.Counts[c])
		for _, p := range ex {
			fmt.Fprintf(w, "  %s (replay of %s)", p.ReplayID, p.OriginalID)
			if p.OriginalStatus != "" || p.ReplayStatus != "" {
				fmt.Fprintf(w, ": %s → %s", orDash(p.OriginalStatus), orDash(p.ReplayStatus))
			}
			if len(p.Paths) > 0 {
				fmt.Fprintf(w, ", differs at %s", strings.Join(p.Paths, ", "))
			}
			fmt.Fprintln(w)
			if p.OriginalPayload != "" {
				fmt.Fprintf(w, "    original: %s\n", p.OriginalPayload)
			}
			if p.ReplayPayload != "" {
				fmt.Fprintf(w, "    replay:   %s\n", p.ReplayPayload)
			}
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
