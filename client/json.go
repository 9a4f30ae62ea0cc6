package client

import (
	"encoding/json"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// ReplyView is the JSON form of a reply, as the CLI and the gateway print it.
// A JSON payload is embedded as is; any other payload is a base64 string in
// payload_base64.
type ReplyView struct {
	CorrelationID string          `json:"correlation_id"`
	Route         string          `json:"route"`
	Status        string          `json:"status"`
	Error         string          `json:"error,omitempty"`
	ContentType   string          `json:"content_type,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
	Parts         []PartView      `json:"parts"`
	SubmittedAt   time.Time       `json:"submitted_at"`
	CompletedAt   time.Time       `json:"completed_at"`
	DurationMS    int64           `json:"duration_ms"`
	ReplayOf      string          `json:"replay_of,omitempty"`
}

// PartView is one part marker of a ReplyView.
type PartView struct {
	PartID      string `json:"part_id"`
	Status      string `json:"status"`
	Error       string `json:"error,omitempty"`
	ProcessorID string `json:"processor_id,omitempty"`
	Attempt     int    `json:"attempt,omitempty"`
	LatencyMS   int64  `json:"latency_ms"`
}

// View returns the JSON view of r.
func View(r schemas.Reply) ReplyView {
	v := ReplyView{
		CorrelationID: string(r.CorrelationID),
		Route:         string(r.Route),
		Status:        string(r.Status),
		Error:         r.Error,
		ContentType:   r.ContentType,
		Parts:         make([]PartView, len(r.Parts)),
		SubmittedAt:   r.SubmittedAt,
		CompletedAt:   r.CompletedAt,
		DurationMS:    r.CompletedAt.Sub(r.SubmittedAt).Milliseconds(),
	}
	if len(r.Payload) > 0 {
		if json.Valid(r.Payload) {
			v.Payload = r.Payload
		} else {
			v.PayloadBase64 = r.Payload
		}
	}
	if r.ReplayOf != nil {
		v.ReplayOf = string(*r.ReplayOf)
	}
	for i, p := range r.Parts {
		v.Parts[i] = PartView{PartID: string(p.PartID), Status: string(p.Status), Error: p.Error,
			ProcessorID: p.ProcessorID, Attempt: p.Attempt, LatencyMS: p.Latency.Milliseconds()}
	}
	return v
}
