package bench

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The kinds of record a chain writes.
const (
	kindRequest = iota
	kindTask
	kindManifest
	kindResult
	kindReply
	kindState
	kindDLQ
	kindOther
	numKinds
)

var kindNames = [numKinds]string{"request", "task", "manifest", "result", "reply", "aggregator-state", "dlq", "other"}

// recordCounter counts the records that the clients it is hooked into
// write to Kafka, by kind, from their topic (and the sg-type header on the
// results topic, which carries manifests and results). It is a kgo hook;
// safe for concurrent use.
type recordCounter struct {
	// The topic names, built once: the hook runs for every record.
	requests, tasks, results, replies, state, dlq string
	kinds                                         [numKinds]struct{ n, bytes, valueBytes, headerBytes atomic.Int64 }
	// apis counts the requests written to brokers, by API key (Produce,
	// Fetch, TxnOffsetCommit, ...).
	apis [maxAPIKey + 1]atomic.Int64
}

// maxAPIKey bounds the Kafka API keys counted; larger ones count as the
// last.
const maxAPIKey = 127

func newRecordCounter(t kafkaconfig.Topics) *recordCounter {
	return &recordCounter{requests: t.Requests(), tasks: t.Tasks(""), results: t.Results(), replies: t.Replies(), state: t.State(), dlq: t.DLQ()}
}

var (
	_ kgo.HookProduceRecordUnbuffered = (*recordCounter)(nil)
	_ kgo.HookBrokerWrite             = (*recordCounter)(nil)
)

// OnBrokerWrite counts a request written to a broker, by its API key.
func (c *recordCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil || key < 0 {
		return
	}
	c.apis[min(int(key), maxAPIKey)].Add(1)
}

// requestStats returns the requests written to brokers by API name, per
// request of the requests sent.
func (c *recordCounter) requestStats() map[string]RequestStat {
	out := map[string]RequestStat{}
	reqs := c.kinds[kindRequest].n.Load()
	for key := range c.apis {
		n := c.apis[key].Load()
		if n == 0 {
			continue
		}
		s := RequestStat{Count: n}
		if reqs > 0 {
			s.PerRequest = float64(n) / float64(reqs)
		}
		out[kmsg.NameForKey(int16(key))] = s
	}
	return out
}

// OnProduceRecordUnbuffered counts r once Kafka has acknowledged it.
func (c *recordCounter) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if err != nil {
		return
	}
	hdr := headerBytes(r.Headers)
	k := &c.kinds[c.kind(r)]
	k.n.Add(1)
	k.bytes.Add(int64(len(r.Key) + len(r.Value) + hdr))
	k.valueBytes.Add(int64(len(r.Value)))
	k.headerBytes.Add(int64(hdr))
}

func (c *recordCounter) kind(r *kgo.Record) int {
	switch {
	case r.Topic == c.requests:
		return kindRequest
	case strings.HasPrefix(r.Topic, c.tasks):
		return kindTask
	case r.Topic == c.results:
		for _, h := range r.Headers {
			if h.Key == scatterer.HeaderType && string(h.Value) == "manifest" {
				return kindManifest
			}
		}
		return kindResult
	case strings.HasPrefix(r.Topic, c.replies):
		return kindReply
	case r.Topic == c.state:
		return kindState
	case r.Topic == c.dlq:
		return kindDLQ
	}
	return kindOther
}

// total returns the bytes counted so far.
func (c *recordCounter) total() int64 {
	var n int64
	for i := range c.kinds {
		n += c.kinds[i].bytes.Load()
	}
	return n
}

// stats returns the counts by kind name, per request of the requests sent.
func (c *recordCounter) stats() map[string]RecordStat {
	out := map[string]RecordStat{}
	reqs := c.kinds[kindRequest].n.Load()
	for i := range c.kinds {
		n := c.kinds[i].n.Load()
		if n == 0 {
			continue
		}
		s := RecordStat{Count: n, AvgBytes: float64(c.kinds[i].bytes.Load()) / float64(n)}
		if reqs > 0 {
			s.PerRequest = float64(n) / float64(reqs)
		}
		out[kindNames[i]] = s
	}
	return out
}

func headerBytes(hs []kgo.RecordHeader) int {
	n := 0
	for _, h := range hs {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// recordSize is the size of one kind of record, in bytes.
type recordSize struct {
	Value int `json:"value"`
	// Headers is the keys and values of the headers together.
	Headers int `json:"headers"`
}

// recordSizes are the sizes of the records of one request that the
// baseline chain writes, so that it moves as many bytes as the pipeline
// does. (Keys are the same by construction.)
type recordSizes struct {
	Request recordSize `json:"request"`
	Task    recordSize `json:"task"`
	Result  recordSize `json:"result"`
	Reply   recordSize `json:"reply"`
	// Measured says the sizes are averages of what the pipeline wrote in
	// this run, rather than estimated by encoding typical records.
	Measured bool `json:"measured"`
}

// measuredSizes returns the average sizes counted by c, if it saw every
// kind the baseline needs.
func (c *recordCounter) measuredSizes() (recordSizes, bool) {
	avg := func(k int) recordSize {
		n := c.kinds[k].n.Load()
		if n == 0 {
			return recordSize{}
		}
		return recordSize{Value: int(c.kinds[k].valueBytes.Load() / n), Headers: int(c.kinds[k].headerBytes.Load() / n)}
	}
	s := recordSizes{Request: avg(kindRequest), Task: avg(kindTask), Result: avg(kindResult), Reply: avg(kindReply), Measured: true}
	return s, s.Request.Value > 0 && s.Task.Value > 0 && s.Result.Value > 0 && s.Reply.Value > 0
}

// typeHeader is the sg-type header the roles put on what they write.
func typeHeader(kind string) []kgo.RecordHeader {
	return []kgo.RecordHeader{{Key: scatterer.HeaderType, Value: []byte(kind)}}
}

// headers returns the baseline's headers for a record of this size: the
// pipeline's sg-type header, padded with an sg-pad header to the headers'
// size in the pipeline (a trace context, say).
func (s recordSize) headers(kind string) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	if kind != "" {
		hs = typeHeader(kind)
	}
	const padKey = "sg-pad"
	if pad := s.Headers - headerBytes(hs) - len(padKey); pad >= 0 {
		hs = append(hs, kgo.RecordHeader{Key: padKey, Value: make([]byte, pad)})
	}
	return hs
}

// estimateSizes encodes the records of one typical request of cfg: what the
// pipeline writes when its roles run elsewhere and cannot be counted.
func estimateSizes(cfg *Config, payload []byte) (recordSizes, error) {
	now := time.Now()
	id := client.NewCorrelationID()
	route := schemas.Route(cfg.Route)
	fanout := cfg.Fanout
	var sizes recordSizes
	req := schemas.Request{CorrelationID: id, Route: route, Payload: payload, ContentType: "application/json",
		Timeout: cfg.Timeout, SubmittedAt: now}
	if cfg.Mode == scatterer.Split {
		req.Fanout = &fanout
	}
	b, err := schemas.EncodeRequest(req)
	if err != nil {
		return sizes, err
	}
	sizes.Request = recordSize{Value: len(b)}
	part := schemas.PartID("")
	if cfg.Mode == scatterer.Split {
		part = scatterer.ShardID(fanout - 1)
	}
	b, err = schemas.EncodeTask(schemas.Task{CorrelationID: id, PartID: part, PartCount: fanout, Route: route, Payload: payload,
		ContentType: "application/json", Deadline: now.Add(cfg.Timeout), Attempt: 1, SubmittedAt: now})
	if err != nil {
		return sizes, err
	}
	sizes.Task = recordSize{Value: len(b), Headers: headerBytes(typeHeader("task"))}
	if part == "" {
		part = recipientID(fanout - 1)
	}
	out := payload
	if cfg.Handler.Name == "sleep" {
		out = []byte(`{"part":"` + string(part) + `","slept_ms":` + strconv.Itoa(int(cfg.Handler.Delay.Milliseconds())) + `}`)
	}
	b, err = schemas.EncodeResult(schemas.Result{CorrelationID: id, PartID: part, Route: route, Status: schemas.ResultOK, Payload: out,
		ProcessorID: "processor-0", Attempt: 1, Tries: 1, StartedAt: now, FinishedAt: now, Deadline: now.Add(cfg.Timeout)})
	if err != nil {
		return sizes, err
	}
	sizes.Result = recordSize{Value: len(b), Headers: headerBytes(typeHeader("result"))}
	parts := make([]aggregator.Part, fanout)
	outcomes := make([]schemas.PartOutcome, fanout)
	for i := range parts {
		parts[i] = aggregator.Part{ID: partID(cfg.Mode, i), Payload: out}
		outcomes[i] = schemas.PartOutcome{PartID: parts[i].ID, Status: schemas.PartOK, ProcessorID: "processor-0", Attempt: 1, Latency: 5 * time.Millisecond}
	}
	merged, err := aggregator.Collect()(parts)
	if err != nil {
		return sizes, err
	}
	b, err = schemas.EncodeReply(schemas.Reply{CorrelationID: id, Route: route, Status: schemas.ReplyComplete, Payload: merged,
		ContentType: "application/json", Parts: outcomes, SubmittedAt: now, CompletedAt: now})
	if err != nil {
		return sizes, err
	}
	sizes.Reply = recordSize{Value: len(b), Headers: headerBytes(typeHeader("reply"))}
	return sizes, nil
}

// partID is the id of part i: shard-i on a split route, the i-th recipient
// on a broadcast route.
func partID(mode scatterer.Mode, i int) schemas.PartID {
	if mode == scatterer.Broadcast {
		return recipientID(i)
	}
	return scatterer.ShardID(i)
}

// recipientID names the i-th recipient of the bench's broadcast route.
func recipientID(i int) schemas.PartID { return schemas.PartID("r" + strconv.Itoa(i)) }
