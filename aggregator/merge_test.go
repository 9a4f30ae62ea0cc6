package aggregator

import (
	"strings"
	"testing"

	"github.com/scattergather/scattergather/schemas"
)

func parts(payloads ...string) []Part {
	ps := make([]Part, len(payloads))
	for i, p := range payloads {
		ps[i] = Part{ID: schemas.PartID("p" + string(rune('0'+i))), Payload: []byte(p)}
	}
	return ps
}

type mergeCase struct {
	name  string
	parts []Part
	want  string
	err   string // substring of the error; "" for none
}

func runMerges(t *testing.T, merge Merge, tests []mergeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := merge(tt.parts)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %s, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestCollect(t *testing.T) {
	runMerges(t, Collect(), []mergeCase{
		{name: "no parts", want: `[]`},
		{name: "JSON values in part order", parts: parts(`{"n": 1}`, ` [2, 3] `, `"s"`, `4.5`, `null`), want: `[{"n":1},[2,3],"s",4.5,null]`},
		{name: "non-JSON embedded as strings", parts: parts(`hello`, `{"broken"`, ``), want: `["hello","{\"broken\"",""]`},
		{name: "invalid UTF-8 is replaced", parts: parts("a\xffb"), want: `["a\ufffdb"]`},
	})
}

func TestTopK(t *testing.T) {
	byScore, err := TopK("score", 3, "id")
	if err != nil {
		t.Fatal(err)
	}
	runMerges(t, byScore, []mergeCase{
		{
			name:  "highest scores across parts",
			parts: parts(`[{"id":"a","score":1},{"id":"b","score":9}]`, `[{"id":"c","score":5}, {"id":"d","score":7}]`),
			want:  `[{"id":"b","score":9},{"id":"d","score":7},{"id":"c","score":5}]`,
		},
		{
			name:  "ties broken by the tiebreak field ascending",
			parts: parts(`[{"id":"z","score":2},{"id":"m","score":2}]`, `[{"id":"a","score":2},{"id":"q","score":1}]`),
			want:  `[{"id":"a","score":2},{"id":"m","score":2},{"id":"z","score":2}]`,
		},
		{
			name:  "k larger than the input keeps everything",
			parts: parts(`[{"id":"a","score":1.5}]`, `[]`),
			want:  `[{"id":"a","score":1.5}]`,
		},
		{name: "no parts", want: `[]`},
		{name: "bad JSON", parts: parts(`[{"id":"a",`), err: "topk: part p0"},
		{name: "an object, not an array", parts: parts(`{"id":"a","score":1}`), err: "topk: part p0: payload is not a JSON array"},
		{name: "an array of non-objects", parts: parts(`[1,2]`), err: "topk: part p0: item 0 is not a JSON object"},
		{name: "missing score", parts: parts(`[{"id":"a"}]`), err: `topk: part p0: an object has no field "score"`},
		{name: "non-numeric score", parts: parts(`[{"id":"a","score":"high"}]`), err: `topk: part p0: field "score" is "high", not a number`},
		{name: "non-string tiebreak", parts: parts(`[{"id":1,"score":1}]`), err: `topk: part p0: field "id" is 1, not a string`},
	})

	noTie, err := TopK("score", 2, "")
	if err != nil {
		t.Fatal(err)
	}
	runMerges(t, noTie, []mergeCase{{
		name:  "without a tiebreak ties keep part order",
		parts: parts(`[{"n":"x","score":1}]`, `[{"n":"a","score":1},{"n":"b","score":1}]`),
		want:  `[{"n":"x","score":1},{"n":"a","score":1}]`,
	}})

	for _, bad := range []struct {
		field string
		k     int
		err   string
	}{
		{"", 1, "topk: score field is empty"},
		{"s", 0, "topk: k is 0, want at least 1"},
		{"", -1, "topk: score field is empty\ntopk: k is -1, want at least 1"},
	} {
		if _, err := TopK(bad.field, bad.k, ""); err == nil || err.Error() != bad.err {
			t.Errorf("TopK(%q, %d): %v, want %q", bad.field, bad.k, err, bad.err)
		}
	}
}

func TestBest(t *testing.T) {
	cheapest, err := Best("price", false)
	if err != nil {
		t.Fatal(err)
	}
	quotes := parts(`{"provider":"a","price":12.5}`, `[{"provider":"b","price":9},{"provider":"c","price":30}]`, `{"provider":"d","price":9}`)
	runMerges(t, cheapest, []mergeCase{
		{name: "min across objects and arrays, first on a tie", parts: quotes, want: `{"best":{"provider":"b","price":9},"part":"p1","candidates":4}`},
		{name: "one candidate", parts: parts(` { "price" : 1 } `), want: `{"best":{"price":1},"part":"p0","candidates":1}`},
		{name: "no candidates", parts: parts(`[]`), err: "best: no candidates in 1 parts"},
		{name: "missing field", parts: parts(`{"cost":1}`), err: `best: part p0: an object has no field "price"`},
		{name: "bad JSON", parts: parts(`{"price":`), err: "best: part p0: item 0 is not a JSON object"},
		{name: "not an object", parts: parts(`42`), err: "best: part p0: item 0 is not a JSON object"},
	})

	dearest, err := Best("price", true)
	if err != nil {
		t.Fatal(err)
	}
	runMerges(t, dearest, []mergeCase{
		{name: "max", parts: quotes, want: `{"best":{"provider":"c","price":30},"part":"p1","candidates":4}`},
	})

	if _, err := Best("", true); err == nil {
		t.Error("Best with an empty field: no error")
	}
}
