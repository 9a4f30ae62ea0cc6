package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The events of GET /v1/requests/{id}/events, in the order they come:
// one manifest (when the request was scattered), a part per result as it
// arrives (duplicates dropped), then the reply, after which the stream
// ends. A stream that gets no reply by the deadline plus ReplyGrace ends
// with an error event; the deadline is the manifest's once it is seen (a
// request the gateway saw with no timeout, for a route it does not serve,
// has none before), and at most scatterer.DefaultMaxTimeout from the
// stream's start until then.
const (
	EventManifest = "manifest"
	EventPart     = "part"
	EventReply    = "reply"
	EventError    = "error"
)

// ManifestEvent is the data of a manifest event: the parts to expect.
type ManifestEvent struct {
	CorrelationID string    `json:"correlation_id"`
	Route         string    `json:"route"`
	Parts         []string  `json:"parts"`
	Deadline      time.Time `json:"deadline"`
	Policy        string    `json:"policy,omitempty"`
}

// PartEvent is the data of a part event: one processor's result. A JSON
// payload is embedded as is, any other is base64 in payload_base64.
type PartEvent struct {
	CorrelationID string          `json:"correlation_id"`
	PartID        string          `json:"part_id"`
	Status        string          `json:"status"` // OK, ERROR, EXPIRED
	Error         string          `json:"error,omitempty"`
	ProcessorID   string          `json:"processor_id,omitempty"`
	Attempt       int             `json:"attempt,omitempty"`
	Tries         int             `json:"tries,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
	FinishedAt    time.Time       `json:"finished_at,omitzero"`
}

const (
	// keepAliveEvery writes an SSE comment so proxies keep the stream open.
	keepAliveEvery = 15 * time.Second
	// partsAfterReply bounds how long a stream that has the reply keeps
	// reading results for the parts the reply says arrived.
	partsAfterReply = 2 * time.Second
	// clockSkew is how far before a request's submission time its results
	// partition is read, for clocks that disagree.
	clockSkew = 5 * time.Second
)

// sse writes Server-Sent Events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func (s sse) event(name, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	// An id from a record (a part id, a correlation id a Go client chose)
	// is not checked like the gateway's own: one with a line break would
	// end the field early and inject another, so it is left out; the data
	// carries it, escaped by JSON.
	if id != "" && !strings.ContainsAny(id, "\r\n") {
		_, err = fmt.Fprintf(s.w, "event: %s\nid: %s\ndata: %s\n\n", name, id, b)
	} else {
		_, err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, b)
	}
	s.f.Flush()
	return err
}

func (s sse) comment(text string) error {
	text = strings.NewReplacer("\r", " ", "\n", " ").Replace(text)
	_, err := fmt.Fprintf(s.w, ": %s\n\n", text)
	s.f.Flush()
	return err
}

// streamEvents is GET /v1/requests/{id}/events: progressive scatter-gather.
// It reads the one partition of the results topic that holds the request's
// records, from its submission on, with a Kafka client of its own, and
// takes the reply from the store.
func (g *Gateway) streamEvents(w http.ResponseWriter, r *http.Request) {
	if _, perr := parseQuery(r.URL.RawQuery, nil); perr != nil {
		perr.write(w)
		return
	}
	id := schemas.CorrelationID(r.PathValue("id"))
	snap, ok := g.store.get(id)
	if !ok {
		g.notKnown(w, id)
		return
	}
	f, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, CodeInternal, "this connection cannot stream")
		return
	}
	select {
	case g.streams <- struct{}{}:
		g.m.streams.Inc()
		defer func() {
			g.m.streams.Dec()
			<-g.streams
		}()
	default:
		g.unavailable(w, CodeTooManyStreams, "%d event streams are open, the maximum; poll /v1/requests/%s instead", g.cfg.MaxStreams, id)
		return
	}
	n, err := g.resultsPartitions(r.Context())
	if err != nil {
		g.unavailable(w, CodeBrokerUnavailable, "Kafka is unavailable: cannot find the results of %s: %v", id, err)
		return
	}
	from := snap.submittedAt
	if from.IsZero() && snap.reply != nil {
		from = snap.reply.SubmittedAt
	}
	topic := g.cfg.Topics.Results()
	part := partitionOf(id, n)
	start := kgo.NewOffset().AtStart()
	if !from.IsZero() {
		at, err := g.streamStart(r.Context(), topic, part, from.Add(-clockSkew))
		if err != nil {
			g.unavailable(w, CodeBrokerUnavailable, "Kafka is unavailable: cannot find the results of %s: %v", id, err)
			return
		}
		start = kgo.NewOffset().At(at)
	}
	cc := g.cfg.Client
	// No per-client metrics hooks: a client of one stream would add its
	// own series (client=N) to the registry for every stream ever opened.
	cc.NewHooks = nil
	cl, err := kafka.NewClient(cc,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: start}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "results reader: %v", err)
		return
	}
	defer cl.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set(HeaderCorrelationID, string(id))
	w.WriteHeader(http.StatusOK)
	out := sse{w: w, f: f}
	if err := out.comment("events of request " + string(id)); err != nil {
		return
	}
	g.follow(r.Context(), out, cl, id, snap)
}

// streamStart returns the offset of partition part of topic from which a
// stream reads the records of a request submitted at from: an offset at or
// before the first record stamped at or after from, committed or not.
//
// It lists the last stable offset first, then the first offset by time
// (read_uncommitted, so a manifest in an open transaction is found), and
// takes the last stable offset when nothing is stamped that late. In that
// order nothing is skipped: what was committed before the first listing
// and not found by the second is stamped earlier, and what is written
// after the second lies beyond the high watermark it searched, which is
// past the first listing's offset. franz-go's AfterMilli, used before,
// lists both at once: when the manifest's transaction committed between
// the two, the end offset it fell back on was already past the manifest,
// and the stream never showed it (TestEvents, 2 of 8 runs on kfake).
func (g *Gateway) streamStart(ctx context.Context, topic string, part int32, from time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, g.listTimeout)
	defer cancel()
	adm := kadm.NewClient(g.producer)
	stable, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list the end of %s: %w", topic, err)
	}
	end, ok := stable.Lookup(topic, part)
	if !ok {
		return 0, fmt.Errorf("list the end of %s: partition %d not listed", topic, part)
	}
	byTime, err := adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
	if err == nil {
		err = byTime.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list %s by time: %w", topic, err)
	}
	// Where nothing is stamped that late, kadm answers with the high
	// watermark of a listing after ours, never below our stable offset.
	if at, ok := byTime.Lookup(topic, part); ok && at.Offset >= 0 {
		return min(at.Offset, end.Offset), nil
	}
	return end.Offset, nil
}

// follow writes the events of id until the reply is written, the caller
// goes, the gateway shuts down, or the reply is overdue.
func (g *Gateway) follow(ctx context.Context, out sse, cl *kgo.Client, id schemas.CorrelationID, snap snapshot) {
	var (
		sentManifest bool
		seen         = map[schemas.PartID]bool{}
		replyAt      time.Time // when the stream first saw the reply
		lastWrite    = time.Now()
	)
	if snap.deadline.IsZero() {
		// A request seen on the topic with no timeout, for a route this
		// gateway does not know: its manifest will say (below); until then
		// the stream waits as long as the longest default timeout.
		snap.deadline = lastWrite.Add(scatterer.DefaultMaxTimeout)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.closing:
			out.event(EventError, "", ErrorBody{Error: "the gateway is shutting down; poll /v1/requests/" + string(id), Code: CodeBrokerUnavailable})
			return
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		cancel()
		var werr error
		fetches.EachRecord(func(rec *kgo.Record) {
			if werr != nil || string(rec.Key) != string(id) {
				return
			}
			kind, err := schemas.KindOf(rec.Value)
			if err != nil {
				return
			}
			switch kind {
			case schemas.KindManifest:
				if sentManifest {
					return
				}
				m, err := schemas.DecodeManifest(rec.Value)
				if err != nil {
					return
				}
				sentManifest = true
				if !m.Deadline.IsZero() {
					snap.deadline = m.Deadline // the scatterer's word
				}
				ev := ManifestEvent{CorrelationID: string(id), Route: string(m.Route), Deadline: m.Deadline, Policy: m.Policy, Parts: []string{}}
				for _, p := range m.Parts {
					ev.Parts = append(ev.Parts, string(p))
				}
				werr = out.event(EventManifest, "", ev)
			case schemas.KindResult:
				res, err := schemas.DecodeResult(rec.Value)
				if err != nil || seen[res.PartID] || lateFor(snap.reply, res.PartID) {
					return
				}
				seen[res.PartID] = true
				werr = out.event(EventPart, string(res.PartID), partEvent(res))
			}
			lastWrite = time.Now()
		})
		if werr != nil {
			return // the caller went away
		}
		if snap.reply == nil {
			select {
			case <-snap.done:
				if s, ok := g.store.get(id); ok && s.reply != nil {
					snap.reply, snap.view = s.reply, s.view
				}
			default:
			}
		}
		now := time.Now()
		if snap.reply != nil {
			if replyAt.IsZero() {
				replyAt = now
			}
			if arrivedAll(snap.reply, seen) || now.Sub(replyAt) > partsAfterReply {
				out.event(EventReply, string(id), json.RawMessage(snap.view))
				return
			}
		} else if !snap.deadline.IsZero() && now.After(snap.deadline.Add(g.cfg.ReplyGrace)) {
			// Look once more: the store keeps an evicted entry's waiters
			// only within its bounds.
			if s, ok := g.store.get(id); ok && s.reply != nil {
				snap.reply, snap.view = s.reply, s.view
				continue
			}
			out.event(EventError, "", ErrorBody{Code: "no-reply",
				Error: fmt.Sprintf("no reply by the deadline %s plus %s; the pipeline may be down", snap.deadline.Format(time.RFC3339Nano), g.cfg.ReplyGrace)})
			return
		}
		if now.Sub(lastWrite) > keepAliveEvery {
			if out.comment("keep-alive") != nil {
				return
			}
			lastWrite = now
		}
	}
}

// lateFor reports whether a result for part came after reply was made:
// reply lists it without a result (MISSING, SKIPPED). A stream opened after
// the reply shows the parts the reply accounts for, not results that came
// too late to count.
func lateFor(reply *schemas.Reply, part schemas.PartID) bool {
	if reply == nil {
		return false
	}
	for _, p := range reply.Parts {
		if p.PartID == part {
			return !arrived(p.Status)
		}
	}
	return true
}

func arrived(s schemas.PartStatus) bool {
	switch s {
	case schemas.PartOK, schemas.PartError, schemas.PartExpired:
		return true
	}
	return false
}

// arrivedAll reports whether every part that reply says had a result has
// been sent as a part event.
func arrivedAll(reply *schemas.Reply, seen map[schemas.PartID]bool) bool {
	for _, p := range reply.Parts {
		if arrived(p.Status) && !seen[p.PartID] {
			return false
		}
	}
	return true
}

func partEvent(r schemas.Result) PartEvent {
	ev := PartEvent{CorrelationID: string(r.CorrelationID), PartID: string(r.PartID), Status: string(r.Status), Error: r.Error,
		ProcessorID: r.ProcessorID, Attempt: r.Attempt, Tries: r.Tries, FinishedAt: r.FinishedAt}
	if len(r.Payload) > 0 {
		if json.Valid(r.Payload) {
			ev.Payload = r.Payload
		} else {
			ev.PayloadBase64 = r.Payload
		}
	}
	return ev
}
