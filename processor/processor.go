package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// Record header set on every result.
const (
	HeaderType = "sg-type"
	typeResult = "result"
)

// headerRecipients is scatterer.HeaderRecipients: on a broadcast task, the
// route's recipients, comma separated.
const headerRecipients = "sg-recipients"

// reasonNoPartID is the dead-letter reason of a broadcast task that reached
// a processor without a Recipient.
const reasonNoPartID = "no-part-id"

// Processor consumes the tasks of one route and answers each with a result.
type Processor struct {
	cfg Config
	log *slog.Logger
	run *runner

	// Counted when a batch's output is committed.
	nOK, nError, nExpired, nDLQ atomic.Uint64
	// Batches whose output was thrown away to be consumed again.
	nAborted atomic.Uint64
	// Broadcast tasks skipped: their route does not have cfg.Recipient.
	nUnknownRecipient atomic.Uint64
	warnedRecipient   atomic.Bool // the warning is logged once

	obs *observer  // metrics and spans
	hop *kafka.Hop // built by New, run once by Run
	pl  *pipeline  // with Concurrency above 1; nil otherwise
	ran atomic.Bool
}

// Stats are a processor's counters so far.
type Stats struct {
	// OK, Error and Expired count committed results by status.
	OK, Error, Expired uint64
	// DeadLettered counts committed dead letters.
	DeadLettered uint64
	// Retries counts handler retries, and Panics recovered handler panics,
	// as they happen, committed or not.
	Retries, Panics uint64
	// AbortedBatches counts batches that were not committed (shutdown,
	// rebalance, produce failure); their tasks are consumed again.
	AbortedBatches uint64
	// UnknownRecipient counts broadcast tasks skipped, as they are read,
	// because their route's recipients (the task's sg-recipients header)
	// do not include Config.Recipient.
	UnknownRecipient uint64
}

// Processed returns the number of committed results.
func (s Stats) Processed() uint64 { return s.OK + s.Error + s.Expired }

// New returns a processor that handles the tasks of cfg.Route with h. It
// validates cfg and builds the processor's Kafka client; Run joins the
// group.
func New(cfg Config, h Handler) (*Processor, error) {
	cfg = cfg.setDefaults()
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if h == nil {
		errs = append(errs, errors.New("handler: nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("processor config: %w", err)
	}
	// The hop names the group in its own lines: its logger must not.
	hopLog := cfg.Logger.With("role", "processor", "route", cfg.Route, "instance", cfg.InstanceID)
	if cfg.Recipient != "" {
		hopLog = hopLog.With("recipient", cfg.Recipient)
	}
	log := hopLog.With("group", cfg.Group)
	p := &Processor{cfg: cfg, log: log, run: newRunner(&cfg, h, log)}
	hc := cfg.hopConfig()
	hc.Logger = hopLog
	if cfg.Concurrency > 1 {
		p.pl = newPipeline(p)
		hc.Wake, hc.OnAssigned, hc.OnRevoked, hc.FinalBatch = p.pl.wake, p.pl.assigned, p.pl.revoked, true
	}
	hop, err := kafka.NewHop(hc)
	if err != nil {
		return nil, fmt.Errorf("processor %s: %w", cfg.Group, err)
	}
	p.hop = hop
	if p.obs, err = newObserver(&cfg, p.run); err != nil {
		return nil, fmt.Errorf("processor metrics: %w", err)
	}
	return p, nil
}

// Stats returns the counters so far. Safe for concurrent use.
func (p *Processor) Stats() Stats {
	return Stats{
		OK:             p.nOK.Load(),
		Error:          p.nError.Load(),
		Expired:        p.nExpired.Load(),
		DeadLettered:   p.nDLQ.Load(),
		Retries:        p.run.nRetries.Load(),
		Panics:         p.run.nPanics.Load(),
		AbortedBatches: p.nAborted.Load(),

		UnknownRecipient: p.nUnknownRecipient.Load(),
	}
}

// Run joins the group and processes tasks until ctx is done. With
// Concurrency 1, each polled batch is handled with one goroutine per
// partition (records of a partition in order) and committed, results and
// offsets together, before the next poll; above 1, tasks are pipelined
// across polls (see the package doc). When ctx is done, the tasks in
// flight get DrainTimeout to finish;
// tasks still running then are not answered and the batch is aborted, to be
// consumed again by the next owner of its partitions. Run returns nil after a
// clean shutdown, otherwise the error that stopped it. Run may be called
// once.
func (p *Processor) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return errors.New("processor: Run called twice; build a new Processor with New")
	}
	hop, pl := p.hop, p.pl
	p.log.Info("processor starting", "topic", p.cfg.Topics.Tasks(string(p.cfg.Route)), "guarantee", p.cfg.Guarantee,
		"concurrency", p.cfg.Concurrency, "ordering", p.cfg.Ordering)
	// pending is written by process and read by end; the hop calls both on
	// its goroutine, one after the other.
	var pending tally
	process := func(ctx context.Context, b *kafka.Batch) error {
		var err error
		pending, err = p.processBatch(ctx, b)
		return err
	}
	if pl != nil {
		// Handlers outlive batches; a shutdown drains them (pipeline.drain)
		// and pl.stop cancels what is left once the hop has returned.
		base := context.WithoutCancel(ctx)
		defer pl.stop()
		process = func(bctx context.Context, b *kafka.Batch) error {
			return pl.process(ctx, base, bctx, b)
		}
	}
	end := func(committed bool) {
		if pl != nil {
			pending = pl.end(committed)
		}
		if committed {
			p.nOK.Add(pending.ok)
			p.nError.Add(pending.error)
			p.nExpired.Add(pending.expired)
			p.nDLQ.Add(pending.dlq)
		} else {
			p.nAborted.Add(1)
		}
		p.obs.end(committed)
		pending = tally{}
	}
	if err := hop.Run(ctx, process, end); err != nil {
		return fmt.Errorf("processor %s: %w", p.cfg.Group, err)
	}
	p.log.Info("processor stopped")
	return nil
}

// tally counts what one batch produced.
type tally struct{ ok, error, expired, dlq uint64 }

func (t *tally) add(o tally) {
	t.ok += o.ok
	t.error += o.error
	t.expired += o.expired
	t.dlq += o.dlq
}

// processBatch handles the partitions of b concurrently and returns when all
// of them are done. Any partition cut off by shutdown aborts the batch.
func (p *Processor) processBatch(ctx context.Context, b *kafka.Batch) (tally, error) {
	var parts []kgo.FetchTopicPartition
	b.Fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 {
			parts = append(parts, fp)
		}
	})
	tallies := make([]tally, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, fp := range parts {
		// Exits when the partition's records are done or the batch is cut off.
		wg.Go(func() { tallies[i], errs[i] = p.processPartition(ctx, b, fp.Records) })
	}
	wg.Wait()
	var sum tally
	for _, t := range tallies {
		sum.add(t)
	}
	if err := errors.Join(errs...); err != nil {
		return sum, err
	}
	if ctx.Err() != nil {
		// Handlers that ignore their context finished after the drain
		// timeout: there is no context left to commit the batch with.
		return sum, fmt.Errorf("batch finished after the drain timeout: %w", kafka.ErrAbort)
	}
	return sum, nil
}

// processPartition handles the records of one partition in order.
func (p *Processor) processPartition(ctx context.Context, b *kafka.Batch, recs []*kgo.Record) (tally, error) {
	var n tally
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("partition %s/%d cut off by shutdown at offset %d: %w", rec.Topic, rec.Partition, rec.Offset, kafka.ErrAbort)
		}
		o, err := p.handleRecord(ctx, rec)
		if err != nil {
			return n, err
		}
		p.emit(b, o)
		n.add(o.n)
	}
	return n, nil
}

// outcome is what handling one task record gives: a result or a dead
// letter, to produce with the batch.
type outcome struct {
	src *kgo.Record // the task record
	out *kgo.Record // the result or the dead letter
	res schemas.Result
	// reason and err say why src is dead-lettered; reason is empty for a
	// result.
	reason string
	err    error
	n      tally
}

// handleRecord decodes a task record and runs the handler on it. It does
// not produce anything: emit does, on the goroutine that owns the batch. An
// error (a shutdown past the drain timeout, wrapping kafka.ErrAbort, or a
// result that cannot be encoded) leaves the record unanswered.
func (p *Processor) handleRecord(ctx context.Context, rec *kgo.Record) (outcome, error) {
	o := outcome{src: rec}
	t, err := schemas.DecodeTask(rec.Value)
	if err != nil {
		reason := "malformed"
		if de, ok := errors.AsType[*schemas.DecodeError](err); ok {
			reason = de.Reason
		}
		return p.deadLetterOutcome(o, reason, err), nil
	}
	if t.PartID == "" {
		if known, ok := recipientsOf(rec); p.cfg.Recipient != "" && ok && !slices.Contains(known, string(p.cfg.Recipient)) {
			p.unknownRecipient(t, known)
			return o, nil // no result: the aggregator expects none from us
		}
		t.PartID = p.cfg.Recipient
	}
	if t.PartID == "" {
		return p.deadLetterOutcome(o, reasonNoPartID, fmt.Errorf("task %s has no part id and processor group %s no recipient", t.CorrelationID, p.cfg.Group)), nil
	}
	if t.Route == "" {
		t.Route = p.cfg.Route
	}
	res, err := p.run.run(ctx, t)
	if err != nil {
		return o, err
	}
	out, err := resultRecord(p.cfg.Topics.Results(), res)
	if err == nil && kafka.RecordSize(out) > MaxResultBytes {
		// Kafka would refuse the result: the part is an ERROR that says
		// so, and the request is answered without its payload.
		size := kafka.RecordSize(out)
		res.Status, res.Payload = schemas.ResultError, nil
		res.Error = fmt.Sprintf("%s: the result of %d bytes exceeds the %d bytes a result may take", ReasonResultTooLarge, size, MaxResultBytes)
		p.log.Warn("result too large; answering the part ERROR", "correlation_id", res.CorrelationID, "part_id", res.PartID, "bytes", size)
		out, err = resultRecord(p.cfg.Topics.Results(), res)
	}
	if err != nil {
		// Our own record failed to encode: a bug, not a bad input.
		// Stop rather than leave the aggregator waiting unawares.
		return o, err
	}
	o.out, o.res = out, res
	switch res.Status {
	case schemas.ResultOK:
		o.n.ok++
	case schemas.ResultError:
		o.n.error++
	case schemas.ResultExpired:
		o.n.expired++
	}
	return o, nil
}

// recipientsOf returns the recipients a broadcast task's header lists;
// false when it has none (a scatterer older than the header).
func recipientsOf(rec *kgo.Record) ([]string, bool) {
	for _, h := range rec.Headers {
		if h.Key == headerRecipients {
			return strings.Split(string(h.Value), ","), true
		}
	}
	return nil, false
}

// unknownRecipient counts a broadcast task whose route does not have this
// processor's Recipient, and says so once: such a processor (a misspelt
// --recipient, a recipient not yet in the scatterer's route table) would
// otherwise answer every task as a part no manifest lists, which the
// aggregator dead-letters. The task gets no result.
func (p *Processor) unknownRecipient(t schemas.Task, known []string) {
	p.nUnknownRecipient.Add(1)
	p.obs.unknownRecipient.Inc()
	if !p.warnedRecipient.Swap(true) {
		p.log.Warn("recipient unknown to the route: its broadcast tasks are skipped, no result written (logged once; counted in scattergather_processor_unknown_recipient_tasks_total)",
			"recipient", p.cfg.Recipient, "route_recipients", strings.Join(known, ","), "correlation_id", t.CorrelationID,
			"fix", "start the processor with one of the route's recipients, or add it to the route table the scatterer serves")
	}
}

func (p *Processor) deadLetterOutcome(o outcome, reason string, err error) outcome {
	o.reason, o.err = reason, err
	o.out = kafka.DeadLetter(p.cfg.Topics.DLQ(), o.src, "processor", reason, err)
	o.n.dlq++
	return o
}

// emit adds o's record to b and tells the observer.
func (p *Processor) emit(b *kafka.Batch, o outcome) {
	if o.out == nil {
		return // skipped (unknownRecipient)
	}
	if o.reason != "" {
		rec := o.src
		p.log.Warn("task dead-lettered", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "reason", o.reason, "err", o.err)
		p.obs.deadLetter(o.reason)
	} else {
		p.obs.result(o.src, o.res, o.out)
	}
	b.Produce(o.out)
}

// ReasonResultTooLarge begins the error of a part whose result was larger
// than MaxResultBytes.
const ReasonResultTooLarge = "result-too-large"

// MaxResultBytes is the largest result record a processor writes: what a
// record may take (kafkaconfig.MaxRecordBytes, 999,887 bytes) less 4 KiB, since
// the aggregator keeps each result in its changelog with the request's ids
// around it (an entry about the size of the result plus twice the
// correlation id and the part id), and that record must fit too.
const MaxResultBytes = kafkaconfig.MaxRecordBytes - 4<<10

// resultRecord encodes res for the results topic, keyed by correlation id so
// that a request's results and manifest share a partition.
func resultRecord(topic string, res schemas.Result) (*kgo.Record, error) {
	v, err := schemas.EncodeResult(res)
	if err != nil {
		return nil, fmt.Errorf("result %s part %s: %w", res.CorrelationID, res.PartID, err)
	}
	return &kgo.Record{
		Topic:   topic,
		Key:     []byte(res.CorrelationID),
		Value:   v,
		Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte(typeResult)}},
	}, nil
}
