package dlq

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

func TestParsePos(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Pos
		ok   bool
	}{
		{"0/12", Pos{0, 12}, true},
		{"3:7", Pos{3, 7}, true},
		{"1@0", Pos{1, 0}, true},
		{"12", Pos{}, false},
		{"a/1", Pos{}, false},
		{"1/-1", Pos{}, false},
		{"", Pos{}, false},
	} {
		got, err := ParsePos(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePos(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != strings.NewReplacer(":", "/", "@", "/").Replace(tc.in) {
			t.Errorf("%v.String() = %s", got, got)
		}
	}
}

// deadLetter is a dead letter as the roles write it (kafka.DeadLetter), as
// read back from partition 0 at offset.
func deadLetter(offset int64, src *kgo.Record, role, reason string, ts time.Time) *Entry {
	r := kafka.DeadLetter("sg.dlq", src, role, reason, errors.New(reason))
	r.Partition, r.Offset, r.Timestamp = 0, offset, ts
	return newEntry(r)
}

func TestFilter(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	req := &kgo.Record{Topic: "sg.requests", Partition: 2, Offset: 40, Key: []byte("k"), Value: []byte("v")}
	task := &kgo.Record{Topic: "sg.tasks.search", Partition: 1, Offset: 7, Key: []byte("shard-1"), Value: []byte("vv")}
	a := deadLetter(0, req, "scatterer", "unknown-route", t0)
	b := deadLetter(1, task, "processor", "not-avro", t0.Add(time.Hour))
	if a.SourceTopic != "sg.requests" || a.SourcePartition != 2 || a.SourceOffset != 40 || a.Size != 1 || a.Source() != "sg.requests/2/40" {
		t.Errorf("entry read from headers: %+v", a)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want string // of a and b, which match
	}{
		{"zero", Filter{}, "ab"},
		{"reason", Filter{Reasons: []string{"not-avro", "x"}}, "b"},
		{"role", Filter{Roles: []string{"scatterer"}}, "a"},
		{"exact topic", Filter{SourceTopics: []string{"sg.requests"}}, "a"},
		{"pattern", Filter{SourceTopics: []string{"sg.tasks.*"}}, "b"},
		{"since inclusive", Filter{Since: t0.Add(time.Hour)}, "b"},
		{"until exclusive", Filter{Until: t0.Add(time.Hour)}, "a"},
		{"at", Filter{At: []Pos{{0, 1}}}, "b"},
		{"all kinds must match", Filter{Reasons: []string{"unknown-route"}, Roles: []string{"processor"}}, ""},
	} {
		got := ""
		if tc.f.Match(a) {
			got += "a"
		}
		if tc.f.Match(b) {
			got += "b"
		}
		if got != tc.want {
			t.Errorf("%s: matches %q, want %q", tc.name, got, tc.want)
		}
	}
	if err := (Filter{SourceTopics: []string{"["}, Since: t0, Until: t0}).Validate(); err == nil || !strings.Contains(err.Error(), "pattern") || !strings.Contains(err.Error(), "not before") {
		t.Errorf("Validate: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	now := time.Now()
	reqV, _ := schemas.EncodeRequest(schemas.Request{CorrelationID: "c1", Route: "search", Payload: []byte(`{"q":1}`), Timeout: 1500 * time.Millisecond, SubmittedAt: now})
	resV, _ := schemas.EncodeResult(schemas.Result{CorrelationID: "c1", PartID: "shard-0", Route: "search", Status: schemas.ResultOK, Payload: []byte{0xff, 0}, StartedAt: now, FinishedAt: now, Deadline: now})
	for _, tc := range []struct {
		name  string
		src   *kgo.Record
		kind  schemas.Kind
		want  []string // in Decoded, or in Text/Hex
		fails bool
	}{
		{"request", &kgo.Record{Topic: "sg.requests", Value: reqV}, schemas.KindRequest, []string{`"CorrelationID": "c1"`, `"Timeout": "1.5s"`, `"q": 1`}, false},
		{"result with binary payload", &kgo.Record{Topic: "sg.results", Value: resV}, schemas.KindResult, []string{`"Payload": "base64:/wA="`, `"Status": "OK"`}, false},
		{"truncated request", &kgo.Record{Topic: "sg.requests", Value: reqV[:len(reqV)-4]}, schemas.KindRequest, []string{"00000000  c3 01"}, true},
		{"text on a tasks topic", &kgo.Record{Topic: "sg.tasks.echo", Value: []byte("hello")}, schemas.KindTask, []string{"hello"}, true},
		{"Confluent wire format", &kgo.Record{Topic: "sg.replies", Value: []byte{0, 0, 0, 0, 7, 2}}, schemas.KindReply, []string{"00 00 00 00 07 02"}, true},
		{"by sg-type", &kgo.Record{Topic: "other", Value: []byte{1, 2}, Headers: []kgo.RecordHeader{{Key: "sg-type", Value: []byte("reply")}}}, schemas.KindReply, []string{"01 02"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Describe(deadLetter(0, tc.src, "r", "x", now))
			if v.Kind != tc.kind || (v.DecodeError != "") != tc.fails {
				t.Errorf("kind %q error %q", v.Kind, v.DecodeError)
			}
			if tc.name == "Confluent wire format" && !strings.Contains(v.DecodeError, "schema id 7: pass --schema-registry") {
				t.Errorf("decode error %q does not point to --schema-registry", v.DecodeError)
			}
			got := string(v.Decoded) + v.Text + v.Hex
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestRedrivenRecord checks what a redrive writes: the key, value and the
// record's own headers, without the dead letter's, to the source topic.
func TestRedrivenRecord(t *testing.T) {
	src := &kgo.Record{Topic: "sg.requests", Key: []byte("k"), Value: []byte("v"),
		Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("1")}, {Key: "sg-dlq-reason", Value: []byte("older")}}}
	e := deadLetter(5, src, "scatterer", "unknown-route", time.Now())
	r := redriven(e)
	if r.Topic != "sg.requests" || string(r.Key) != "k" || string(r.Value) != "v" || len(r.Headers) != 1 || r.Headers[0].Key != "trace" {
		t.Errorf("redriven: %+v", r)
	}
	r.Partition, r.Offset = 3, 9
	m := marker("sg.dlq", e, r)
	if kafka.Header(m, kafka.HeaderDLQRedriven) != "0/5" || kafka.Header(m, kafka.HeaderDLQRedrivenTo) != "sg.requests/3/9" || m.Value == nil {
		t.Errorf("marker: %+v", m)
	}
	// A log folds the marker into the dead letter it names.
	m.Partition, m.Offset = 1, 0
	l := &Log{}
	l.add(m)
	l.add(e.Record)
	l.fold()
	if len(l.Entries) != 1 || l.Markers != 1 || l.Entries[0].Redriven == nil || l.Entries[0].Redriven.String() != "sg.requests/3/9" || l.Entries[0].Redriven.Marker != (Pos{1, 0}) {
		t.Errorf("folded: %+v", l.Entries[0])
	}
	// A stand-in cannot go back.
	big := &kgo.Record{Topic: "sg.requests", Value: bytes.Repeat([]byte("x"), kafka.MaxRecordBytes)}
	if s := deadLetter(6, big, "scatterer", "payload-too-large", time.Now()); !s.Truncated || s.Size != kafka.MaxRecordBytes {
		t.Errorf("stand-in: truncated %v size %d", s.Truncated, s.Size)
	}
}
