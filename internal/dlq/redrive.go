package dlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// Defaults of RedriveConfig.
const (
	DefaultBatchSize          = 100
	DefaultTransactionTimeout = 10 * time.Second
)

// TransactionalID is the transactional id of every redrive of dlqTopic:
// one per DLQ topic, so that two redrives of it fence each other.
func TransactionalID(dlqTopic string) string { return "scattergather-dlq-redrive." + dlqTopic }

// RedriveConfig configures Redrive.
type RedriveConfig struct {
	Client kafkaconfig.Client
	// Topic is the dead-letter topic (required).
	Topic string
	// Filter selects the dead letters to redrive.
	Filter Filter
	// Execute writes; without it Redrive only plans (a dry run) and writes
	// nothing.
	Execute bool
	// BatchSize is the most dead letters per transaction; default
	// DefaultBatchSize.
	BatchSize int
	// TransactionTimeout of the redrive's producer; default
	// DefaultTransactionTimeout.
	TransactionTimeout time.Duration
	// ScanProgress, if set, is Scan's progress while it reads the DLQ.
	ScanProgress func(read, total int64)
	// Progress, if set, is called before the first batch and after each.
	Progress func(RedriveProgress)
	// Logger; nil discards.
	Logger *slog.Logger
}

// RedriveProgress is how far a redrive has come.
type RedriveProgress struct {
	Done, Total int // dead letters handled (redriven or failed) of those to redrive
	Redriven    int
	Failed      int
}

// RecordError is why one dead letter could not be redriven.
type RecordError struct {
	Entry *Entry
	Err   error
}

func (e *RecordError) Error() string { return fmt.Sprintf("dead letter %s: %v", e.Entry.At, e.Err) }

func (e *RecordError) Unwrap() error { return e.Err }

// RedriveResult is what Redrive did, or would do in a dry run.
type RedriveResult struct {
	Topic string
	// Selected are the dead letters the filter selected.
	Selected int
	// Already were redriven before (they have a marker) and are skipped.
	Already []*Entry
	// Planned are the dead letters to redrive (a dry run), or that were
	// tried; Redriven those written back (Entry.Redriven set).
	Planned  []*Entry
	Redriven []*Entry
	// Duplicates are dead letters of the same source record as another
	// selected one (Of), skipped: the record goes back once.
	Duplicates []*Duplicate
	// Failed are the dead letters that cannot be redriven, and why; the
	// others went on.
	Failed []*RecordError
}

// Duplicate is a dead letter skipped because the dead letter at Of stands
// for the same source record.
type Duplicate struct {
	Entry  *Entry
	Of     Pos
	Source Source
}

func (c RedriveConfig) withDefaults() (RedriveConfig, error) {
	var errs []error
	if c.Topic == "" {
		errs = append(errs, errors.New("dead-letter topic: none given"))
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	} else if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("batch size %d: want at least 1", c.BatchSize))
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = DefaultTransactionTimeout
	} else if c.TransactionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("transaction timeout %s: want at least 1s", c.TransactionTimeout))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	errs = append(errs, c.Filter.Validate(), c.Client.Validate())
	return c, errors.Join(errs...)
}

// Redrive writes the dead letters cfg.Filter selects back to their source
// topics, with their key and their headers less the sg-dlq-* ones, skipping
// those redriven before; see the package doc for why each is written at
// most once. Without cfg.Execute it writes nothing and returns the plan.
//
// A dead letter that cannot be redriven (a stand-in, a source topic that no
// longer exists, a record Kafka refuses) is a RecordError in the result and
// the others go on. An error that is not about one record (the DLQ topic
// missing, the producer fenced by another redrive, ctx ending) stops
// Redrive; the batches committed until then stay redriven.
func Redrive(ctx context.Context, cfg RedriveConfig) (*RedriveResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.MetadataMinAge(time.Second)}
	if cfg.Execute {
		opts = append(opts, kgo.TransactionalID(TransactionalID(cfg.Topic)), kgo.TransactionTimeout(cfg.TransactionTimeout))
	}
	cl, err := kafka.NewClient(cfg.Client, opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if cfg.Execute {
		// Fence first, then read the markers: once our producer id is
		// initialised no other redrive of the topic can commit, and the
		// transaction it had open is aborted.
		if _, _, err := cl.ProducerID(ctx); err != nil {
			return nil, fmt.Errorf("redrive %s: fence other redrives: %w", cfg.Topic, err)
		}
	}
	log, err := Scan(ctx, cfg.Client, cfg.Topic, cfg.Filter, cfg.ScanProgress)
	if err != nil {
		return nil, err
	}
	res := &RedriveResult{Topic: cfg.Topic, Selected: len(log.Entries)}
	res.Planned, res.Already, res.Duplicates = plan(log)
	todo, failed := check(ctx, kadm.NewClient(cl), res.Planned)
	res.Failed = failed
	if !cfg.Execute {
		return res, nil
	}
	r := &redriver{cfg: cfg, cl: cl, res: res, total: len(res.Planned)}
	r.report()
	for len(todo) > 0 {
		n := min(cfg.BatchSize, len(todo))
		if err := r.batch(ctx, todo[:n]); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("redrive %s interrupted after %d redriven (run the same command again for the rest): %w", cfg.Topic, len(res.Redriven), err)
			}
			return res, err
		}
		todo = todo[n:]
		r.report()
	}
	return res, nil
}

// plan splits the selected entries into those to redrive, those redriven
// before, and duplicates: dead letters of a source record that another
// dead letter stands for already. At-least-once roles write a record's dead
// letter again when they consume the record again after a crash; the record
// goes back through the one redriven before (selected or not), else the
// first selected in DLQ order.
func plan(l *Log) (todo, already []*Entry, dups []*Duplicate) {
	first := map[Source]*Entry{}
	for _, e := range l.Entries {
		if e.Redriven != nil {
			already = append(already, e)
			continue
		}
		src, ok := e.source()
		if !ok {
			todo = append(todo, e)
			continue
		}
		if at, ok := l.RedrivenSource(src); ok {
			dups = append(dups, &Duplicate{Entry: e, Of: at, Source: src})
			continue
		}
		if f := first[src]; f != nil {
			dups = append(dups, &Duplicate{Entry: e, Of: f.At, Source: src})
			continue
		}
		first[src] = e
		todo = append(todo, e)
	}
	return todo, already, dups
}

// check returns the entries that can be redriven, and a RecordError for
// each that cannot: a stand-in, one without a source topic, one whose
// source topic does not exist, one too large to write.
func check(ctx context.Context, adm *kadm.Client, entries []*Entry) ([]*Entry, []*RecordError) {
	var topics []string
	seen := map[string]bool{}
	for _, e := range entries {
		if e.SourceTopic != "" && !seen[e.SourceTopic] {
			seen[e.SourceTopic] = true
			topics = append(topics, e.SourceTopic)
		}
	}
	exists := map[string]error{}
	if len(topics) > 0 {
		td, err := adm.ListTopics(ctx, topics...)
		for _, t := range topics {
			switch d, ok := td[t]; {
			case err != nil:
				exists[t] = fmt.Errorf("look up source topic %s: %w", t, err)
			case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
				exists[t] = fmt.Errorf("source topic %s no longer exists (create it, e.g. with 'scattergather topics', to redrive this record)", t)
			case d.Err != nil:
				exists[t] = fmt.Errorf("source topic %s: %w", t, d.Err)
			}
		}
	}
	var ok []*Entry
	var failed []*RecordError
	for _, e := range entries {
		var err error
		switch {
		case e.Truncated:
			err = fmt.Errorf("a stand-in for a record of %d bytes, too large for the dead-letter topic: it holds only the first %d bytes; the original is at %s", e.Size, kafka.StandInBytes, e.Source())
		case e.SourceTopic == "":
			err = fmt.Errorf("no %s header: not a dead letter of this pipeline", kafka.HeaderDLQTopic)
		case exists[e.SourceTopic] != nil:
			err = exists[e.SourceTopic]
		case !kafka.Fits(redriven(e)):
			err = fmt.Errorf("%d bytes: too large to write back (at most %d)", kafka.RecordSize(redriven(e)), kafka.MaxRecordBytes)
		}
		if err != nil {
			failed = append(failed, &RecordError{Entry: e, Err: err})
			continue
		}
		ok = append(ok, e)
	}
	return ok, failed
}

// redriven is the record that redriving e writes: e's key, value and
// headers less the sg-dlq-* ones, to its source topic.
func redriven(e *Entry) *kgo.Record {
	var headers []kgo.RecordHeader
	for _, h := range e.Record.Headers {
		if !strings.HasPrefix(h.Key, "sg-dlq-") {
			headers = append(headers, h)
		}
	}
	return &kgo.Record{Topic: e.SourceTopic, Key: e.Record.Key, Value: e.Record.Value, Headers: headers}
}

// marker is the record that says e was redriven to r.
func marker(topic string, e *Entry, r *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: topic, Value: []byte{}, Headers: []kgo.RecordHeader{
		{Key: kafka.HeaderDLQRedriven, Value: []byte(e.At.String())},
		{Key: kafka.HeaderDLQRedrivenTo, Value: []byte(r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))},
	}}
}

// redriver writes the batches of one Redrive.
type redriver struct {
	cfg   RedriveConfig
	cl    *kgo.Client
	res   *RedriveResult
	total int
}

func (r *redriver) report() {
	if r.cfg.Progress != nil {
		r.cfg.Progress(RedriveProgress{Done: len(r.res.Redriven) + len(r.res.Failed), Total: r.total,
			Redriven: len(r.res.Redriven), Failed: len(r.res.Failed)})
	}
}

// maxRounds bounds how often a batch is tried again without the records
// Kafka refused for good.
const maxRounds = 3

// batch redrives entries in one transaction: their records first, then,
// once their offsets are known, a marker for each. A record Kafka refuses
// for good (rejected, in internal/kafka's sense) aborts the transaction,
// becomes a RecordError, and the batch is written again without it.
func (r *redriver) batch(ctx context.Context, entries []*Entry) error {
	// Finish the transaction in flight rather than leave it open when ctx
	// ends; the transaction timeout bounds it.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.TransactionTimeout)
	defer cancel()
	for round := 0; len(entries) > 0; round++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("redrive %s: begin transaction: %w", r.cfg.Topic, err)
		}
		recs := make([]*kgo.Record, len(entries))
		for i, e := range entries {
			recs[i] = redriven(e)
		}
		errs := produceAll(dctx, r.cl, recs)
		var refused map[int]error
		var other error
		for i, err := range errs {
			if err == nil {
				continue
			}
			if _, ok := kafka.RejectedReason(err); ok && round < maxRounds {
				if refused == nil {
					refused = map[int]error{}
				}
				refused[i] = err
			} else if other == nil {
				other = fmt.Errorf("write dead letter %s to %s: %w", entries[i].At, recs[i].Topic, err)
			}
		}
		var markers []*kgo.Record
		if other == nil && refused == nil {
			markers = make([]*kgo.Record, len(entries))
			for i, e := range entries {
				markers[i] = marker(r.cfg.Topic, e, recs[i])
			}
			for _, err := range produceAll(dctx, r.cl, markers) {
				if err != nil && other == nil {
					other = fmt.Errorf("write redrive markers to %s: %w", r.cfg.Topic, err)
				}
			}
		}
		if other != nil || refused != nil {
			if err := r.abort(dctx); err != nil {
				return errors.Join(other, err)
			}
			if other != nil {
				return other
			}
			var next []*Entry
			for i, e := range entries {
				if err, ok := refused[i]; ok {
					r.res.Failed = append(r.res.Failed, &RecordError{Entry: e, Err: fmt.Errorf("refused by %s: %w", recs[i].Topic, err)})
					r.cfg.Logger.Warn("dead letter refused by its source topic", "dlq", e.At.String(), "topic", recs[i].Topic, "err", err)
					continue
				}
				next = append(next, e)
			}
			entries = next
			continue
		}
		if err := r.cl.EndTransaction(dctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("redrive %s: commit a batch of %d (run again: a dead letter whose batch committed has its marker and is skipped): %w", r.cfg.Topic, len(entries), err)
		}
		for i, e := range entries {
			e.Redriven = &RedriveMark{Topic: recs[i].Topic, Partition: recs[i].Partition, Offset: recs[i].Offset,
				Time: markers[i].Timestamp, Marker: Pos{markers[i].Partition, markers[i].Offset}}
			r.res.Redriven = append(r.res.Redriven, e)
		}
		return nil
	}
	return nil
}

// abort aborts the transaction of one attempt at a batch.
func (r *redriver) abort(ctx context.Context) error {
	if err := r.cl.AbortBufferedRecords(ctx); err != nil {
		return fmt.Errorf("redrive %s: abort: %w", r.cfg.Topic, err)
	}
	if err := r.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("redrive %s: abort: %w", r.cfg.Topic, err)
	}
	return nil
}

// produceAll writes recs and waits for each; it returns each one's error.
func produceAll(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) []error {
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	wg.Add(len(recs))
	for i, rec := range recs {
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	return errs
}
