package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// tpo names one record.
type tpo struct {
	topic     string
	partition int32
	offset    int64
}

// observer reads results and replies with read_committed while the run
// goes on and notes when each record became visible, and samples the
// aggregator group's committed offsets. It is how the verdict tells a part
// that truly missed its deadline from one the aggregator could have had.
// It also counts progress and knows when the pipeline has drained.
type observer struct {
	topics kafkaconfig.Topics
	group  string

	mu        sync.Mutex
	visible   map[tpo]time.Time
	commits   map[int32][]offsetSample
	replied   map[schemas.CorrelationID]schemas.ReplyStatus // first reply seen
	parts     map[partKey]bool                              // manifest parts; true once a result came
	pending   int                                           // parts without a result
	lastReply time.Time
	last      map[stallKey]time.Time // the newest record seen, by partition of results and replies
}

func newObserver(topics kafkaconfig.Topics, group string) *observer {
	return &observer{
		topics:  topics,
		group:   group,
		visible: map[tpo]time.Time{},
		commits: map[int32][]offsetSample{},
		replied: map[schemas.CorrelationID]schemas.ReplyStatus{},
		parts:   map[partKey]bool{},
		last:    map[stallKey]time.Time{},
	}
}

// run reads until ctx ends.
func (o *observer) run(ctx context.Context, cl *kgo.Client) {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		now := time.Now()
		o.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			o.visible[tpo{r.Topic, r.Partition, r.Offset}] = now
			o.last[stallKey{r.Topic, r.Partition}] = now
			switch r.Topic {
			case o.topics.Replies():
				id := schemas.CorrelationID(r.Key)
				if _, ok := o.replied[id]; !ok {
					st := schemas.ReplyStatus("UNDECODABLE")
					if rep, err := schemas.DecodeReply(r.Value); err == nil {
						st = rep.Status
					}
					o.replied[id] = st
				}
				o.lastReply = now
			case o.topics.Results():
				o.noteResult(r.Value)
			}
		})
		o.mu.Unlock()
	}
}

// noteResult tracks which parts of which manifests have results; o.mu held.
func (o *observer) noteResult(v []byte) {
	kind, err := schemas.KindOf(v)
	if err != nil {
		return
	}
	switch kind {
	case schemas.KindManifest:
		mf, err := schemas.DecodeManifest(v)
		if err != nil {
			return
		}
		for _, p := range mf.Parts {
			k := partKey{mf.CorrelationID, p}
			if _, ok := o.parts[k]; !ok {
				o.parts[k] = false
				o.pending++
			}
		}
	case schemas.KindResult:
		res, err := schemas.DecodeResult(v)
		if err != nil {
			return
		}
		k := partKey{res.CorrelationID, res.PartID}
		if done, ok := o.parts[k]; !ok || !done {
			if ok {
				o.pending--
			}
			// A result before its manifest (never with a scatterer that
			// commits the manifest with the tasks) counts when it comes.
			o.parts[k] = true
		}
	}
}

// sampleCommits polls the aggregator group's committed offsets every
// interval until ctx ends.
func (o *observer) sampleCommits(ctx context.Context, adm *kadm.Client, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		offs, err := adm.FetchOffsets(ctx, o.group)
		now := time.Now()
		if err == nil {
			o.mu.Lock()
			offs.Each(func(r kadm.OffsetResponse) {
				if r.Topic != o.topics.Results() || r.Err != nil || r.At < 0 {
					return
				}
				s := o.commits[r.Partition]
				if n := len(s); n > 0 && s[n-1].offset >= r.At {
					return
				}
				o.commits[r.Partition] = append(s, offsetSample{at: now, offset: r.At})
			})
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// progress counts the requests of ids with a reply, by status.
func (o *observer) progress(ids []schemas.CorrelationID) (replied int, byStatus map[schemas.ReplyStatus]int, pendingParts int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	byStatus = map[schemas.ReplyStatus]int{}
	for _, id := range ids {
		if st, ok := o.replied[id]; ok {
			replied++
			byStatus[st]++
		}
	}
	return replied, byStatus, o.pending
}

// drained reports whether every request of ids has a reply and every part
// of every manifest seen a result.
func (o *observer) drained(ids []schemas.CorrelationID) bool {
	replied, _, pending := o.progress(ids)
	return replied == len(ids) && pending == 0
}

// flowingSince reports whether every partition of results and replies
// that has had a record has had one since t: a stall that began before t
// (a partition showing nothing new) has ended. If not, it names a
// partition still waiting, as topic/partition.
func (o *observer) flowingSince(t time.Time) (bool, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.last) == 0 {
		return false, "no record yet"
	}
	waiting := ""
	for k, at := range o.last {
		if at.Before(t) {
			name := fmt.Sprintf("%s/%d", k.topic, k.partition)
			if waiting == "" || name < waiting {
				waiting = name
			}
		}
	}
	return waiting == "", waiting
}

// visibleAt returns when the record was first seen; zero if never.
func (o *observer) visibleAt(k tpo) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.visible[k]
}

// commitSamples returns a copy of the committed offset samples.
func (o *observer) commitSamples() map[int32][]offsetSample {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[int32][]offsetSample, len(o.commits))
	for p, s := range o.commits {
		out[p] = append([]offsetSample(nil), s...)
	}
	return out
}
