package dlq

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// EntryJSON is an Entry as `dlq list --json` and `dlq show --json` write it.
type EntryJSON struct {
	Topic           string    `json:"dlq_topic"`
	Partition       int32     `json:"dlq_partition"`
	Offset          int64     `json:"dlq_offset"`
	Time            time.Time `json:"time"`
	SourceTopic     string    `json:"source_topic"`
	SourcePartition int32     `json:"source_partition"`
	SourceOffset    int64     `json:"source_offset"`
	Role            string    `json:"role"`
	Reason          string    `json:"reason"`
	Error           string    `json:"error"`
	Size            int       `json:"size"`
	Truncated       bool      `json:"truncated,omitempty"`
	Key             string    `json:"key"`
	// RedrivenTo is "topic/partition/offset" once redriven.
	RedrivenTo string    `json:"redriven_to,omitempty"`
	RedrivenAt time.Time `json:"redriven_at,omitzero"`
	// Headers and Value only in `dlq show --json`.
	Headers map[string]string `json:"headers,omitempty"`
	Value   *Value            `json:"value,omitempty"`
}

// JSON returns e as EntryJSON; full adds its headers and decoded value.
func (e *Entry) JSON(topic string, full bool) EntryJSON {
	j := EntryJSON{Topic: topic, Partition: e.At.Partition, Offset: e.At.Offset, Time: e.Time.UTC(),
		SourceTopic: e.SourceTopic, SourcePartition: e.SourcePartition, SourceOffset: e.SourceOffset,
		Role: e.Role, Reason: e.Reason, Error: e.Error, Size: e.Size, Truncated: e.Truncated, Key: string(e.Record.Key)}
	if e.Redriven != nil {
		j.RedrivenTo, j.RedrivenAt = e.Redriven.String(), e.Redriven.Time.UTC()
	}
	if full {
		j.Headers = map[string]string{}
		for _, h := range e.Record.Headers {
			j.Headers[h.Key] = string(h.Value)
		}
		v := Describe(e)
		j.Value = &v
	}
	return j
}

// PrintList writes entries as a table, one line each:
//
//	DLQ   TIME                      SOURCE               ROLE       REASON         SIZE  REDRIVEN
//	0/3   2026-12-06T18:40:01.123Z  sg.requests/1/57     scatterer  unknown-route  87    -
func PrintList(w io.Writer, entries []*Entry) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "DLQ\tTIME\tSOURCE\tROLE\tREASON\tSIZE\tREDRIVEN")
	for _, e := range entries {
		redriven := "-"
		if e.Redriven != nil {
			redriven = e.Redriven.String()
		}
		size := fmt.Sprint(e.Size)
		if e.Truncated {
			size += " (stand-in)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At, e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
			e.Source(), e.Role, e.Reason, size, redriven)
	}
	return tw.Flush()
}

// WriteJSONLines writes entries as JSON, one object (EntryJSON) a line.
func WriteJSONLines(w io.Writer, topic string, entries []*Entry) error {
	enc := json.NewEncoder(w)
	for _, e := range entries {
		if err := enc.Encode(e.JSON(topic, false)); err != nil {
			return err
		}
	}
	return nil
}
