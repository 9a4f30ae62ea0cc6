// Package scatterer turns each request into the tasks of its route plus a
// manifest that tells the aggregator what to gather.
//
// A Scatterer consumes the requests topic in a consumer group. For every
// request it looks up the route by name, splits the request (split mode: a
// different task per part to one pool of identical processors, keyed by
// part; broadcast mode: one task that every recipient group reads), and
// writes the tasks to tasks.<route> and a Manifest to results, keyed by the
// correlation id so that it lands where the request's results land. Under
// exactly-once the tasks, the manifest and the request's offset commit in one
// transaction, so a crash never leaves a request half scattered.
//
// A request that cannot be scattered goes to the dead-letter topic with its
// reason; if it has a correlation id, its requester also gets a FAILED reply
// naming the reason, so no caller waits for a timeout. The reasons:
// not-avro, unknown-schema, wrong-schema, malformed (undecodable, from
// schemas.DecodeError: the FAILED reply goes to the default replies topic
// when the record's key is a valid correlation id, see ValidCorrelationID),
// no-correlation-id, unknown-route, invalid-reply-to (not under the replies
// topic), unknown-reply-topic (no such topic: the reply goes to the default
// replies topic), payload-too-large (Config.MaxPayloadBytes),
// invalid-timeout (negative or above the route's MaxTimeout),
// invalid-submitted-at (more than MaxClockSkew ahead of the scatterer's
// clock), invalid-fanout, split-failed, task-too-large and
// manifest-too-large (a record that Kafka would refuse, over
// kafkaconfig.MaxRecordBytes).
//
// Usage:
//
//	s, err := scatterer.New(scatterer.Config{
//		Role: kafkaconfig.Role{
//			Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:9092"}},
//			Topics: kafkaconfig.Topics{Prefix: "sg."},
//		},
//		Routes: []scatterer.Route{{Name: "search", Mode: scatterer.Split, Fanout: 8}},
//	})
//	if err != nil { ... }
//	err = s.Run(ctx) // until ctx is done
package scatterer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// DefaultMaxPayloadBytes caps a request's payload unless configured.
const DefaultMaxPayloadBytes = 1 << 20

// MaxClockSkew is how far a request's submitted_at may lie ahead of the
// scatterer's clock: a requester's clock may run somewhat fast, but a
// request from further in the future is rejected (invalid-submitted-at)
// rather than given a deadline that far ahead, which the aggregator could
// not even keep (its changelog holds times up to year 294247).
const MaxClockSkew = time.Hour

// Config configures a Scatterer.
type Config struct {
	// Role is how to reach Kafka, the topics, and the rest every role
	// shares. Group defaults to Topics.Prefix + "scatterer".
	kafkaconfig.Role
	// Routes are the routes the scatterer knows; at least one. Their zero
	// fields take the defaults of [Route].
	Routes []Route
	// MaxPayloadBytes caps a request's payload; default 1 MiB.
	MaxPayloadBytes int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// setDefaults returns c with its empty fields filled in, sharing nothing
// the caller could see change: Routes is a new slice.
func (c Config) setDefaults() Config {
	c.Role = c.Role.WithDefaults("scatterer")
	routes := make([]Route, len(c.Routes))
	for i, r := range c.Routes {
		routes[i] = r.withDefaults()
	}
	c.Routes = routes
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem with c at once; a zero field that takes a
// default is not a problem. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if err := c.Role.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("routes: none configured"))
	}
	seen := map[schemas.Route]bool{}
	for _, r := range c.Routes {
		if err := r.withDefaults().Validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("route %s: configured twice", r.Name))
		}
		seen[r.Name] = true
	}
	if c.MaxPayloadBytes < 0 {
		errs = append(errs, fmt.Errorf("max payload bytes: %d is negative", c.MaxPayloadBytes))
	}
	return errors.Join(errs...)
}

// Stats counts what a Scatterer did. Read it with Scatterer.Stats.
type Stats struct {
	Requests      int64 // requests scattered
	Tasks         int64 // task records produced
	Rejected      int64 // requests dead-lettered
	FailedReplies int64 // FAILED replies sent for rejected requests
}

type counters struct {
	requests, tasks, rejected, failedReplies atomic.Int64
}

// Scatterer consumes requests and writes tasks and manifests.
type Scatterer struct {
	cfg    Config
	routes map[schemas.Route]Route
	hop    *kafka.Hop
	n      counters
	obs    *observer        // metrics and spans; used on Run's goroutine
	topics kafka.TopicCache // which reply-to topics exist
	ran    atomic.Bool      // Run was called
}

// New validates cfg and builds the Scatterer's client; Run joins the group.
func New(cfg Config) (*Scatterer, error) {
	cfg = cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scatterer config: %w", err)
	}
	cfg.Logger = cfg.Logger.With("role", "scatterer")
	s := &Scatterer{cfg: cfg, routes: map[schemas.Route]Route{}}
	for _, r := range cfg.Routes {
		s.routes[r.Name] = r
	}
	hop, err := kafka.NewHop(kafka.HopConfig{
		Client:          cfg.Client,
		Group:           cfg.Group,
		Topics:          []string{cfg.Topics.Requests()},
		Guarantee:       cfg.Guarantee,
		TransactionalID: cfg.Group + "-" + cfg.InstanceID,
		InstanceID:      cfg.InstanceID,
		DeadLetters:     cfg.Topics.DLQ(),
		CommitInterval:  max(cfg.OffsetCommitInterval, 0),
		TransactionGap:  cfg.TransactionGap,
		SessionTimeout:  cfg.SessionTimeout,
		Role:            "scatterer",
		TracerProvider:  cfg.TracerProvider,
		Metrics:         cfg.Metrics,
		Logger:          cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("scatterer: %w", err)
	}
	s.hop = hop
	if s.obs, err = newObserver(&s.cfg, s.routes); err != nil {
		return nil, fmt.Errorf("scatterer metrics: %w", err)
	}
	return s, nil
}

// Stats returns the counters so far. Safe for concurrent use.
func (s *Scatterer) Stats() Stats {
	return Stats{
		Requests:      s.n.requests.Load(),
		Tasks:         s.n.tasks.Load(),
		Rejected:      s.n.rejected.Load(),
		FailedReplies: s.n.failedReplies.Load(),
	}
}

// Client returns the Kafka client, for metrics.
func (s *Scatterer) Client() *kgo.Client { return s.hop.Client() }

// Run scatters requests until ctx is done, then finishes the batch in flight
// and leaves the group. Run may be called once.
func (s *Scatterer) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("scatterer: Run called twice; build a new Scatterer with New")
	}
	s.cfg.Logger.Info("scatterer running", "group", s.cfg.Group, "topic", s.cfg.Topics.Requests(), "routes", len(s.routes), "guarantee", s.cfg.Guarantee)
	err := s.hop.Run(ctx, s.process, s.obs.end)
	s.cfg.Logger.Info("scatterer stopped", "group", s.cfg.Group)
	return err
}

func (s *Scatterer) process(ctx context.Context, b *kafka.Batch) error {
	var errs []error
	b.Fetches.EachRecord(func(rec *kgo.Record) {
		out, err := s.scatter(ctx, rec)
		if err != nil {
			errs = append(errs, err)
			return
		}
		s.obs.scattered(rec, out)
		for _, r := range out {
			b.Produce(r)
		}
	})
	return errors.Join(errs...)
}

// Rejection is why a request could not be scattered. Reason is a short code
// for the dead-letter header and metrics.
type Rejection struct {
	Reason string
	Err    error
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Err.Error() }
func (r *Rejection) Unwrap() error { return r.Err }

func reject(reason string, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// scatter returns the records for one consumed request: its tasks and
// manifest, or its dead letter and FAILED reply. Only an encoding failure of
// our own records is an error.
func (s *Scatterer) scatter(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	req, err := schemas.DecodeRequest(rec.Value)
	if err != nil {
		reason := "malformed"
		var de *schemas.DecodeError
		if errors.As(err, &de) {
			reason = de.Reason
		}
		// The key of a request is its correlation id: its caller gets a
		// FAILED reply on the default replies topic (its own reply topic
		// is in the value that did not decode).
		if id := schemas.CorrelationID(rec.Key); ValidCorrelationID(id) {
			req = schemas.Request{CorrelationID: id}
		}
		return s.rejected(req, rec, &Rejection{Reason: reason, Err: err})
	}
	p, rej := s.Plan(req)
	if rej == nil {
		rej = s.checkReplyTo(ctx, req)
	}
	if rej != nil {
		return s.rejected(req, rec, rej)
	}
	out, err := s.records(p)
	if err != nil {
		return nil, err
	}
	if rej := tooLarge(out); rej != nil {
		return s.rejected(req, rec, rej)
	}
	s.n.requests.Add(1)
	s.n.tasks.Add(int64(len(p.Tasks)))
	return out, nil
}

// rejected returns the dead letter of the request in rec and, when it has a
// correlation id, its FAILED reply.
func (s *Scatterer) rejected(req schemas.Request, rec *kgo.Record, rej *Rejection) ([]*kgo.Record, error) {
	s.n.rejected.Add(1)
	out := []*kgo.Record{kafka.DeadLetter(s.cfg.Topics.DLQ(), rec, "scatterer", rej.Reason, rej)}
	if req.CorrelationID != "" {
		reply, err := s.failedReply(req, rej)
		if err != nil {
			return nil, err
		}
		s.n.failedReplies.Add(1)
		out = append(out, reply)
	}
	s.cfg.Logger.Warn("request rejected", "correlation_id", req.CorrelationID, "route", req.Route, "reason", rej.Reason, "err", rej.Err)
	return out, nil
}

// checkReplyTo refuses a request whose reply_to topic does not exist: its
// reply could not be written, and its caller would wait for a timeout. A
// lookup that fails lets the request through; the aggregator dead-letters
// the reply if the topic is still missing then.
func (s *Scatterer) checkReplyTo(ctx context.Context, req schemas.Request) *Rejection {
	if req.ReplyTo == "" || req.ReplyTo == s.cfg.Topics.Replies() {
		return nil
	}
	exists, err := s.topics.Exists(ctx, s.hop.Client(), req.ReplyTo)
	if err != nil {
		s.cfg.Logger.Warn("reply-to topic lookup failed; accepting the request", "correlation_id", req.CorrelationID, "topic", req.ReplyTo, "err", err)
		return nil
	}
	if !exists {
		return reject("unknown-reply-topic", "reply-to topic %q does not exist", req.ReplyTo)
	}
	return nil
}

// tooLarge refuses a request one of whose records Kafka would refuse.
func tooLarge(out []*kgo.Record) *Rejection {
	for _, r := range out {
		if kafka.Fits(r) {
			continue
		}
		what := "task"
		if kafka.Header(r, HeaderType) == "manifest" {
			what = "manifest"
		}
		return reject(what+"-too-large", "%s record of %d bytes for %s exceeds the %d bytes a record may take", what, kafka.RecordSize(r), r.Topic, kafkaconfig.MaxRecordBytes)
	}
	return nil
}

// ValidCorrelationID reports whether id is 1 to 128 of A-Z a-z 0-9 . _ : -,
// the ids the client and the gateway make and accept.
func ValidCorrelationID(id schemas.CorrelationID) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Plan is what one request scatters into.
type Plan struct {
	Route    Route
	Tasks    []schemas.Task
	Manifest schemas.Manifest
}

// Plan validates req against its route and splits it, without producing
// anything. A nil *Rejection means the plan is good.
func (s *Scatterer) Plan(req schemas.Request) (Plan, *Rejection) {
	if req.CorrelationID == "" {
		return Plan{}, reject("no-correlation-id", "request has no correlation id")
	}
	r, ok := s.routes[req.Route]
	if !ok {
		return Plan{}, reject("unknown-route", "route %q is not configured", req.Route)
	}
	if req.ReplyTo != "" && !strings.HasPrefix(req.ReplyTo, s.cfg.Topics.Replies()) {
		return Plan{}, reject("invalid-reply-to", "reply-to topic %q must start with %q", req.ReplyTo, s.cfg.Topics.Replies())
	}
	if len(req.Payload) > s.cfg.MaxPayloadBytes {
		return Plan{}, reject("payload-too-large", "payload of %d bytes exceeds the limit of %d", len(req.Payload), s.cfg.MaxPayloadBytes)
	}
	timeout := r.Timeout
	switch {
	case req.Timeout < 0:
		return Plan{}, reject("invalid-timeout", "timeout %s is negative", req.Timeout)
	case req.Timeout > r.MaxTimeout:
		return Plan{}, reject("invalid-timeout", "timeout %s exceeds route %s's maximum of %s", req.Timeout, r.Name, r.MaxTimeout)
	case req.Timeout > 0:
		timeout = req.Timeout
	}
	now := s.cfg.Now()
	submitted := req.SubmittedAt
	if submitted.After(now.Add(MaxClockSkew)) {
		return Plan{}, reject("invalid-submitted-at", "submitted at %s, more than %s after the scatterer's clock (%s)",
			submitted.UTC().Format(time.RFC3339Nano), MaxClockSkew, now.UTC().Format(time.RFC3339Nano))
	}
	if submitted.IsZero() || submitted.Unix() <= 0 {
		submitted = now
	}
	deadline := submitted.Add(timeout)

	var parts []Part
	switch r.Mode {
	case Split:
		fanout := r.Fanout
		if req.Fanout != nil {
			fanout = *req.Fanout
		}
		if fanout < 1 || fanout > r.MaxFanout {
			return Plan{}, reject("invalid-fanout", "fan-out %d is outside 1..%d for route %s", fanout, r.MaxFanout, r.Name)
		}
		var err error
		parts, err = r.Split(req, fanout)
		if err != nil {
			return Plan{}, reject("split-failed", "route %s: %v", r.Name, err)
		}
		if len(parts) == 0 || len(parts) > r.MaxFanout {
			return Plan{}, reject("invalid-fanout", "split gave %d parts, want 1..%d for route %s", len(parts), r.MaxFanout, r.Name)
		}
		if err := uniqueParts(parts); err != nil {
			return Plan{}, reject("split-failed", "route %s: %v", r.Name, err)
		}
	case Broadcast:
		if req.Fanout != nil && *req.Fanout != len(r.Recipients) {
			return Plan{}, reject("invalid-fanout", "fan-out %d: broadcast route %s always has its %d recipients", *req.Fanout, r.Name, len(r.Recipients))
		}
		// One task, read by every recipient's group; each answers as itself.
		parts = []Part{{ID: "", Payload: req.Payload}}
	}

	p := Plan{Route: r}
	contentType := req.ContentType
	if contentType == "" {
		contentType = "application/json"
	}
	partCount := len(parts)
	if r.Mode == Broadcast {
		partCount = len(r.Recipients)
	}
	for _, part := range parts {
		p.Tasks = append(p.Tasks, schemas.Task{
			CorrelationID: req.CorrelationID,
			PartID:        part.ID,
			PartCount:     partCount,
			Route:         r.Name,
			Payload:       part.Payload,
			ContentType:   contentType,
			Deadline:      deadline,
			Attempt:       1,
			SubmittedAt:   submitted,
			Headers:       req.Headers,
		})
	}
	expected := make([]schemas.PartID, 0, partCount)
	if r.Mode == Broadcast {
		expected = append(expected, r.Recipients...)
	} else {
		for _, part := range parts {
			expected = append(expected, part.ID)
		}
	}
	p.Manifest = schemas.Manifest{
		CorrelationID: req.CorrelationID,
		Route:         r.Name,
		Parts:         expected,
		Deadline:      deadline,
		Policy:        r.Policy,
		SubmittedAt:   submitted,
		ReplyTo:       req.ReplyTo,
		Headers:       req.Headers,
		ReplayOf:      req.ReplayOf,
	}
	return p, nil
}

func uniqueParts(parts []Part) error {
	seen := make(map[schemas.PartID]bool, len(parts))
	for _, p := range parts {
		if p.ID == "" {
			return errors.New("split gave a part without an id")
		}
		if seen[p.ID] {
			return fmt.Errorf("split gave part id %q twice", p.ID)
		}
		seen[p.ID] = true
	}
	return nil
}

// Record headers that say what a record is, for tools that do not decode Avro.
const HeaderType = "sg-type"

// HeaderRecipients, on a broadcast task, lists the route's recipients,
// comma separated, so that a processor started as a recipient the route
// does not have can tell (and say so) rather than answer as a part the
// aggregator does not expect.
const HeaderRecipients = "sg-recipients"

func (s *Scatterer) records(p Plan) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(p.Tasks)+1)
	topic := s.cfg.Topics.Tasks(string(p.Route.Name))
	var recipients []byte
	if p.Route.Mode == Broadcast {
		for i, r := range p.Route.Recipients {
			if i > 0 {
				recipients = append(recipients, ',')
			}
			recipients = append(recipients, r...)
		}
	}
	for _, t := range p.Tasks {
		v, err := schemas.EncodeTask(t)
		if err != nil {
			return nil, fmt.Errorf("scatter %s: %w", t.CorrelationID, err)
		}
		// Split tasks are keyed by shard for data locality; a broadcast task
		// is keyed by its request to spread the load.
		key := []byte(t.PartID)
		if t.PartID == "" {
			key = []byte(t.CorrelationID)
		}
		headers := []kgo.RecordHeader{{Key: HeaderType, Value: []byte("task")}}
		if recipients != nil {
			headers = append(headers, kgo.RecordHeader{Key: HeaderRecipients, Value: recipients})
		}
		out = append(out, &kgo.Record{Topic: topic, Key: key, Value: v, Headers: headers})
	}
	v, err := schemas.EncodeManifest(p.Manifest)
	if err != nil {
		return nil, fmt.Errorf("scatter %s: %w", p.Manifest.CorrelationID, err)
	}
	out = append(out, &kgo.Record{Topic: s.cfg.Topics.Results(), Key: []byte(p.Manifest.CorrelationID), Value: v,
		Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte("manifest")}}})
	if p.Route.Hedge != nil && p.Route.Mode == Split {
		// After the manifest, on its partition: the aggregator has opened
		// the request when the templates come.
		hr, err := s.hedgeRecords(p)
		if err != nil {
			return nil, fmt.Errorf("scatter %s: %w", p.Manifest.CorrelationID, err)
		}
		out = append(out, hr...)
	}
	return out, nil
}

func (s *Scatterer) failedReply(req schemas.Request, rej *Rejection) (*kgo.Record, error) {
	now := s.cfg.Now()
	submitted := req.SubmittedAt
	if submitted.IsZero() {
		submitted = now
	}
	v, err := schemas.EncodeReply(schemas.Reply{
		CorrelationID: req.CorrelationID,
		Route:         req.Route,
		Status:        schemas.ReplyFailed,
		ContentType:   "application/json",
		Error:         "rejected by scatterer: " + rej.Error(),
		SubmittedAt:   submitted,
		CompletedAt:   now,
		ReplayOf:      req.ReplayOf,
	})
	if err != nil {
		return nil, fmt.Errorf("failed reply %s: %w", req.CorrelationID, err)
	}
	topic := req.ReplyTo
	if rej.Reason == "invalid-reply-to" || rej.Reason == "unknown-reply-topic" || topic == "" {
		topic = s.cfg.Topics.Replies()
	}
	return &kgo.Record{Topic: topic, Key: []byte(req.CorrelationID), Value: v,
		Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte("reply")}}}, nil
}
