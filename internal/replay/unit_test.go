package replay

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

func TestParseBound(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want Bound
		err  string
	}{
		{in: "earliest", want: Bound{Kind: Earliest}},
		{in: "start", want: Bound{Kind: Earliest}},
		{in: "latest", want: Bound{Kind: Latest}},
		{in: "NOW", want: Bound{Kind: Latest}},
		{in: "2026-05-01T12:00:00Z", want: Bound{Kind: AtTime, Time: at}},
		{in: "2026-05-01T14:00:00.5+02:00", want: Bound{Kind: AtTime, Time: at.Add(500 * time.Millisecond)}},
		{in: "2h", want: Bound{Kind: Ago, Ago: 2 * time.Hour}},
		{in: "90m ago", want: Bound{Kind: Ago, Ago: 90 * time.Minute}},
		{in: "1d", want: Bound{Kind: Ago, Ago: 24 * time.Hour}},
		{in: "2d12h", want: Bound{Kind: Ago, Ago: 60 * time.Hour}},
		{in: "offset:42", want: Bound{Kind: AtOffset, Offset: 42}},
		{in: "offset 7", want: Bound{Kind: AtOffset, Offset: 7}},
		{in: "offset=0", want: Bound{Kind: AtOffset}},
		{in: "", err: "empty"},
		{in: "offset:-1", err: "whole number"},
		{in: "offset:x", err: "whole number"},
		{in: "-2h", err: "positive"},
		{in: "yesterday", err: "RFC3339"},
		{in: "2026-05-01", err: "RFC3339"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBound(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseBound(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got.Kind != tc.want.Kind || !got.Time.Equal(tc.want.Time) || got.Ago != tc.want.Ago || got.Offset != tc.want.Offset {
				t.Fatalf("ParseBound(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			// String round-trips.
			again, err := ParseBound(got.String())
			if err != nil || again.String() != got.String() {
				t.Errorf("round trip of %q: %q, %v", got.String(), again.String(), err)
			}
		})
	}
}

func TestJSONDiff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   string
		ignore []string
		want   []string // nil: equal
		notOK  bool
	}{
		{name: "key order and spacing", a: `{"a":1,"b":[1,2]}`, b: ` { "b" : [1, 2], "a" : 1 } `},
		{name: "number spelling", a: `{"a":1.0,"b":1e2}`, b: `{"a":1,"b":100}`},
		{name: "changed value", a: `{"a":1,"b":{"c":"x"}}`, b: `{"a":1,"b":{"c":"y"}}`, want: []string{"$.b.c"}},
		{name: "missing key", a: `{"a":1,"b":2}`, b: `{"a":1}`, want: []string{"$.b"}},
		{name: "type change", a: `{"a":"1"}`, b: `{"a":1}`, want: []string{"$.a"}},
		{name: "array length", a: `[1,2,3]`, b: `[1,2]`, want: []string{"$ (length 3 → 2)"}},
		{name: "array element", a: `[{"id":1},{"id":2}]`, b: `[{"id":1},{"id":3}]`, want: []string{"$[1].id"}},
		{name: "ignored field", a: `{"a":1,"took":5}`, b: `{"a":1,"took":9}`, ignore: []string{"took"}},
		{name: "ignored in every element", a: `[{"id":1,"at":1},{"id":2,"at":2}]`, b: `[{"id":1,"at":7},{"id":2,"at":8}]`, ignore: []string{"at"}},
		{name: "ignored nested through arrays", a: `{"hits":[{"s":{"v":1,"t":1}}]}`, b: `{"hits":[{"s":{"v":1,"t":2}}]}`, ignore: []string{"hits.s.t"}},
		{name: "ignored field only", a: `{"a":1,"t":1}`, b: `{"a":2,"t":2}`, ignore: []string{"t"}, want: []string{"$.a"}},
		{name: "null vs missing", a: `{"a":null}`, b: `{}`, want: []string{"$.a"}},
		{name: "not json", a: `{"a":1}`, b: `not json`, notOK: true},
		{name: "trailing data", a: `{"a":1} {"b":2}`, b: `{"a":1}`, notOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ignore []FieldPath
			for _, s := range tc.ignore {
				p, err := ParseFieldPath(s)
				if err != nil {
					t.Fatal(err)
				}
				ignore = append(ignore, p)
			}
			got, ok := JSONDiff([]byte(tc.a), []byte(tc.b), ignore, 10)
			if ok == tc.notOK {
				t.Fatalf("ok = %v, want %v", ok, !tc.notOK)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("JSONDiff = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseFieldPath("a..b"); err == nil {
		t.Error("ParseFieldPath(a..b): no error")
	}
	// The limit caps the paths reported.
	if got, _ := JSONDiff([]byte(`[1,2,3,4]`), []byte(`[5,6,7,8]`), nil, 2); len(got) != 2 {
		t.Errorf("limit 2: %q", got)
	}
}

func TestFormatProgress(t *testing.T) {
	for _, tc := range []struct {
		p    Progress
		want []string
	}{
		{Progress{Total: 10_000, Advanced: 5_000, Submitted: 4_990, Skipped: 3, Rate: 1234.4, ETA: 4*time.Second + 400*time.Millisecond},
			[]string{"[==============>             ]", " 50%", "5,000/10,000 offsets", "4,990 sent", "3 skipped", "1,234/s", "ETA 4s"}},
		{Progress{Total: 10, Advanced: 10, Submitted: 10, Done: true}, []string{"[============================]", "100%", "done"}},
		{Progress{Total: 0, ETA: -1}, []string{"100%", "ETA ?"}},
		{Progress{Total: 10, Advanced: 20, ETA: -1}, []string{"100%"}},
	} {
		got := FormatProgress(tc.p)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("FormatProgress(%+v) = %q, want %q in it", tc.p, got, w)
			}
		}
	}
}

func TestBarThrottles(t *testing.T) {
	now := time.Unix(0, 0)
	var out strings.Builder
	b := &Bar{W: &out, TTY: false, Now: func() time.Time { return now }}
	b.Update(Progress{Total: 100, Advanced: 1, ETA: -1})
	now = now.Add(time.Second)
	b.Update(Progress{Total: 100, Advanced: 2, ETA: -1}) // held back: within 5s
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines after two updates within 5s, want 1: %q", n, out.String())
	}
	b.Finish() // draws the held-back update
	if !strings.Contains(out.String(), "2/100") {
		t.Errorf("Finish did not draw the last update: %q", out.String())
	}
	b.Update(Progress{Total: 100, Advanced: 100, Done: true})
	if !strings.Contains(out.String(), "done") {
		t.Errorf("a done update is always drawn: %q", out.String())
	}
}

func TestConfigValidate(t *testing.T) {
	from, to := &Bound{Kind: AtTime, Time: time.Unix(100, 0)}, &Bound{Kind: AtTime, Time: time.Unix(50, 0)}
	cfg := Config{RunID: "bad id", Rate: -1, BatchSize: -1, TransactionTimeout: time.Millisecond, From: from, To: to, Routes: []schemas.Route{"a b"}}
	err := cfg.Validate()
	for _, want := range []string{"brokers", "run id", "rate", "batch size", "transaction timeout", "before from", "route name"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
	ok := Config{}
	ok.Client.Brokers = []string{"x:9092"}
	if err := ok.Validate(); err != nil || ok.Target != ok.Source || ValidRunID(ok.RunID) != nil || ok.BatchSize != DefaultBatchSize {
		t.Errorf("defaults: %v %+v", err, ok)
	}
}
