package schemas

import "time"

// CorrelationID identifies one request and everything produced for it.
type CorrelationID string

// PartID names one part of a scattered request: a shard in split mode, a
// recipient in broadcast mode.
type PartID string

// Route names a configured way of scattering a request.
type Route string

// Request is a client's request to scatter Payload along Route.
type Request struct {
	CorrelationID CorrelationID
	Route         Route
	Payload       []byte
	ContentType   string
	// Timeout is relative to SubmittedAt; zero takes the route's default.
	Timeout time.Duration
	// Fanout is the number of parts wanted on a split route; nil takes the
	// route's default.
	Fanout      *int
	ReplyTo     string
	Headers     map[string]string
	SubmittedAt time.Time
	ReplayOf    *CorrelationID
	ReplayRun   *string
}

// Task is one part of a scattered request, as a processor receives it.
type Task struct {
	CorrelationID CorrelationID
	// PartID is the shard of a split task; empty on a broadcast task, where
	// each recipient answers as its own part.
	PartID      PartID
	PartCount   int
	Route       Route
	Payload     []byte
	ContentType string
	Deadline    time.Time
	// Attempt is 1 for the first issue of the task and higher for re-issues.
	Attempt     int
	SubmittedAt time.Time
	Headers     map[string]string
}

// Manifest tells the aggregator which parts to gather for a request and until
// when.
type Manifest struct {
	CorrelationID CorrelationID
	Route         Route
	Parts         []PartID
	Deadline      time.Time
	Policy        string
	SubmittedAt   time.Time
	ReplyTo       string
	Headers       map[string]string
	ReplayOf      *CorrelationID
}

// ResultStatus is a processor's verdict on one task.
type ResultStatus string

// The result statuses.
const (
	ResultOK      ResultStatus = "OK"
	ResultError   ResultStatus = "ERROR"
	ResultExpired ResultStatus = "EXPIRED"
)

// Result is a processor's answer for one part.
type Result struct {
	CorrelationID CorrelationID
	PartID        PartID
	Route         Route
	Status        ResultStatus
	Payload       []byte
	Error         string
	ProcessorID   string
	Attempt       int
	Tries         int
	StartedAt     time.Time
	FinishedAt    time.Time
	// Deadline is the task's deadline.
	Deadline time.Time
}

// ReplyStatus says how whole a reply is.
type ReplyStatus string

// The reply statuses.
const (
	// ReplyComplete: every expected part is OK.
	ReplyComplete ReplyStatus = "COMPLETE"
	// ReplyPartial: some parts are OK, others are not; see the part markers.
	ReplyPartial ReplyStatus = "PARTIAL"
	// ReplyFailed: no part is OK, or the request was rejected.
	ReplyFailed ReplyStatus = "FAILED"
)

// PartStatus marks one expected part in a reply.
type PartStatus string

// The part statuses.
const (
	PartOK      PartStatus = "OK"
	PartError   PartStatus = "ERROR"
	PartExpired PartStatus = "EXPIRED"
	// PartMissing: no result came before the deadline.
	PartMissing PartStatus = "MISSING"
	// PartSkipped: the completion policy was met before this part was needed.
	PartSkipped PartStatus = "SKIPPED"
)

// PartOutcome is one expected part's entry in a reply.
type PartOutcome struct {
	PartID      PartID
	Status      PartStatus
	Error       string
	ProcessorID string
	Attempt     int
	// Latency runs from the request's submission to the result's arrival at
	// the aggregator; zero when no result came.
	Latency time.Duration
}

// Reply is the one answer to a request.
type Reply struct {
	CorrelationID CorrelationID
	Route         Route
	Status        ReplyStatus
	Payload       []byte
	ContentType   string
	Error         string
	Parts         []PartOutcome
	SubmittedAt   time.Time
	CompletedAt   time.Time
	ReplayOf      *CorrelationID
}

// Part returns the outcome of part id and whether the reply lists it.
func (r *Reply) Part(id PartID) (PartOutcome, bool) {
	for _, p := range r.Parts {
		if p.PartID == id {
			return p, true
		}
	}
	return PartOutcome{}, false
}
