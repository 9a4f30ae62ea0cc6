package aggregator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/schemas"
)

// ContentType is the content type of every reply's payload.
const ContentType = "application/json"

// Limits of Reply.Error's summary of the parts that are not OK.
const (
	summaryParts    = 10  // parts named; the rest are counted
	summaryErrRunes = 100 // runes of each part's error text
)

// buildReply builds the reply to open request r, completed at now (Unix
// nanoseconds). Parts without a result are MISSING when the deadline
// completes the request and SKIPPED when the policy does.
//
// Status: FAILED when no part is OK or the merge fails; COMPLETE when every
// part is OK or SKIPPED (the policy did not need it); PARTIAL otherwise.
// When not COMPLETE, Reply.Error says which parts are not OK and why, e.g.
//
//	2 of 8 parts not OK: shard-3 MISSING, shard-5 ERROR (connection refused)
//
// and starts with "merge: ..." when the merge failed.
func buildReply(r *request, now int64, atDeadline bool) schemas.Reply {
	mf := &r.plan.mf
	submitted := nanos(mf.SubmittedAt)
	outcomes := make([]schemas.PartOutcome, len(r.slots))
	var ok []Part
	if r.ok > 0 {
		ok = make([]Part, 0, r.ok)
	}
	notOK := 0
	for i, s := range r.slots {
		o := schemas.PartOutcome{PartID: mf.Parts[i]}
		switch s.status {
		case "":
			o.Status = schemas.PartSkipped
			if atDeadline {
				o.Status = schemas.PartMissing
				notOK++
			}
			outcomes[i] = o
			continue
		case schemas.ResultOK:
			o.Status = schemas.PartOK
			ok = append(ok, Part{ID: o.PartID, Payload: s.payload})
		case schemas.ResultExpired:
			o.Status = schemas.PartExpired
			notOK++
		default:
			o.Status = schemas.PartError
			notOK++
		}
		o.Error = s.err
		o.ProcessorID = s.processor
		o.Attempt = s.attempt
		if submitted != 0 && s.arrived > submitted {
			o.Latency = time.Duration(s.arrived - submitted)
		}
		outcomes[i] = o
	}

	reply := schemas.Reply{
		CorrelationID: r.id,
		Route:         mf.Route,
		ContentType:   ContentType,
		Parts:         outcomes,
		SubmittedAt:   mf.SubmittedAt,
		CompletedAt:   time.Unix(0, now).UTC(),
		ReplayOf:      mf.ReplayOf,
	}
	switch {
	case len(ok) == 0:
		reply.Status = schemas.ReplyFailed
	case notOK == 0:
		reply.Status = schemas.ReplyComplete
	default:
		reply.Status = schemas.ReplyPartial
	}
	if notOK > 0 {
		reply.Error = summary(outcomes, notOK)
	}
	if len(ok) > 0 {
		payload, err := runMerge(r.plan.merge, ok)
		if err != nil {
			reply.Status = schemas.ReplyFailed
			reply.Error = joinNonEmpty("; ", "merge: "+err.Error(), reply.Error)
		} else {
			reply.Payload = payload
		}
	}
	return reply
}

// runMerge calls merge, turning a panic into an error: a user's merge must
// not take the aggregator down.
func runMerge(merge Merge, parts []Part) (payload []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return merge(parts)
}

// summary names the parts that are not OK.
func summary(outcomes []schemas.PartOutcome, notOK int) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(notOK))
	b.WriteString(" of ")
	b.WriteString(strconv.Itoa(len(outcomes)))
	b.WriteString(" parts not OK: ")
	named := 0
	for _, o := range outcomes {
		if o.Status == schemas.PartOK || o.Status == schemas.PartSkipped {
			continue
		}
		if named == summaryParts {
			b.WriteString(", and ")
			b.WriteString(strconv.Itoa(notOK - named))
			b.WriteString(" more")
			break
		}
		if named > 0 {
			b.WriteString(", ")
		}
		named++
		b.WriteString(string(o.PartID))
		b.WriteByte(' ')
		b.WriteString(string(o.Status))
		if o.Error != "" {
			b.WriteString(" (")
			b.WriteString(truncate(o.Error, summaryErrRunes))
			b.WriteByte(')')
		}
	}
	return b.String()
}

func truncate(s string, runes int) string {
	if utf8.RuneCountInString(s) <= runes {
		return s
	}
	n := 0
	for i := range s {
		if n == runes {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

func joinNonEmpty(sep string, ss ...string) string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, sep)
}
