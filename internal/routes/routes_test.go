package routes

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; empty for success
	}{
		{"demo-like", `{"routes":[{"name":"search","mode":"split","fanout":8,"timeout":"2s","merge":{"kind":"topk","field":"score","k":10,"tiebreak":"id"}},
			{"name":"quotes","mode":"broadcast","recipients":["a","b"],"timeout":1500,"merge":{"kind":"best","field":"rate","order":"max"}}]}`, ""},
		{"json-array split", `{"routes":[{"name":"items","mode":"split","split":"json-array"}]}`, ""},
		{"unknown field", `{"routes":[{"name":"x","mode":"split","fanout":1,"fanuot":2}]}`, "unknown field"},
		{"no routes", `{"routes":[]}`, "no routes"},
		{"duplicate", `{"routes":[{"name":"x","mode":"split","fanout":1},{"name":"x","mode":"split","fanout":1}]}`, "listed twice"},
		{"bad duration", `{"routes":[{"name":"x","mode":"split","fanout":1,"timeout":"soon"}]}`, "duration"},
		{"bad mode", `{"routes":[{"name":"x","mode":"gather"}]}`, "mode"},
		{"bad merge", `{"routes":[{"name":"x","mode":"split","fanout":1,"merge":{"kind":"avg"}}]}`, "merge kind"},
		{"topk without field", `{"routes":[{"name":"x","mode":"split","fanout":1,"merge":{"kind":"topk"}}]}`, "field is required"},
		{"bad split", `{"routes":[{"name":"x","mode":"split","fanout":1,"split":"halves"}]}`, "split"},
		{"bad policy", `{"routes":[{"name":"x","mode":"split","fanout":2,"policy":"quorum:9"}]}`, "quorum"},
		{"trailing", `{"routes":[{"name":"x","mode":"split","fanout":1}]} {}`, "trailing"},
		{"not json", `routes: []`, "route table"},
		{"every problem at once", `{"routes":[{"name":"a b","mode":"split","fanout":0}]}`, "fanout 0"},
		{"hedged", `{"routes":[{"name":"x","mode":"split","fanout":16,"hedge_percentile":95,"hedge_delay":"50ms","hedge_min_delay":"5ms","hedge_min_samples":20,"hedge_budget":0.1}]}`, ""},
		{"hedge on broadcast", `{"routes":[{"name":"x","mode":"broadcast","recipients":["a"],"hedge_delay":"50ms"}]}`, "hedging is for split routes"},
		{"hedge without a delay", `{"routes":[{"name":"x","mode":"split","fanout":2,"hedge_budget":0.1}]}`, "set a delay, a percentile or both"},
		{"hedge percentile", `{"routes":[{"name":"x","mode":"split","fanout":2,"hedge_percentile":100}]}`, "hedge percentile"},
		{"hedge budget", `{"routes":[{"name":"x","mode":"split","fanout":2,"hedge_delay":"1ms","hedge_budget":2}]}`, "hedge budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := Parse([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if _, err := tb.ScattererRoutes(); err != nil {
					t.Fatal(err)
				}
				if _, err := tb.Merges(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestHedgeSettings(t *testing.T) {
	tb, err := Parse([]byte(`{"routes":[{"name":"x","mode":"split","fanout":4,"hedge_percentile":95,"hedge_delay":"50ms"},
		{"name":"y","mode":"split","fanout":4}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tb.ScattererRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Hedge == nil || rs[0].Hedge.Percentile != 95 || rs[0].Hedge.Delay != 50*time.Millisecond {
		t.Fatalf("route x hedge %+v", rs[0].Hedge)
	}
	// The header carries the defaults the route left out.
	if got, want := rs[0].Hedge.String(), "delay=50ms;percentile=95;min-delay=10ms;min-samples=100;budget=0.05"; got != want {
		t.Fatalf("hedge header %q, want %q", got, want)
	}
	if rs[1].Hedge != nil {
		t.Fatalf("route y hedges: %+v", rs[1].Hedge)
	}
}

func TestDemoRoutesValid(t *testing.T) {
	d := Demo()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	r, ok := d.Find("quotes")
	if !ok || r.Mode != "broadcast" || len(r.Recipients) != 3 || time.Duration(r.Timeout) != time.Second {
		t.Fatalf("quotes route %+v", r)
	}
	if got := strings.Join(d.Names(), ","); got != "search,quotes,echo" {
		t.Errorf("names %s", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"routes":[{"name":"search","mode":"split","fanout":8,"timeout":"2s","merge":{"kind":"topk","field":"score","k":10}}]}`))
	f.Add([]byte(`{"routes":[{"name":"q","mode":"broadcast","recipients":["a"],"merge":{"kind":"best","field":"rate"}}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := Parse(b)
		if err != nil {
			return
		}
		// A table that parses must build for every role.
		if _, err := tb.ScattererRoutes(); err != nil {
			t.Fatalf("parsed table does not build scatterer routes: %v", err)
		}
		if _, err := tb.Merges(); err != nil {
			t.Fatalf("parsed table does not build merges: %v", err)
		}
	})
}

func TestCheckRecipient(t *testing.T) {
	quotes, _ := Demo().Find("quotes")
	echo, _ := Demo().Find("echo")
	tests := []struct {
		route     Route
		recipient string
		want      string // in the error; empty: no error
	}{
		{quotes, "acme", ""},
		{quotes, "acmee", `recipient "acmee" is unknown to route quotes, whose recipients are acme, globex, initech`},
		{quotes, "", "route quotes broadcasts to acme, globex, initech"},
		{echo, "", ""},
		{echo, "acme", "route echo is a split route and has no recipients"},
	}
	for _, tt := range tests {
		t.Run(tt.route.Name+"/"+tt.recipient, func(t *testing.T) {
			err := tt.route.CheckRecipient(tt.recipient)
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckRecipient(%q) = %v, want %q", tt.recipient, err, tt.want)
			}
		})
	}
}

// TestRoutesDocExample: the example of docs/routes.md parses and
// validates, and the doc's field table names every field of a route.
func TestRoutesDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/routes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```json\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/routes.md has no json block")
	}
	if _, err := Parse([]byte(example)); err != nil {
		t.Fatalf("the example of docs/routes.md: %v", err)
	}
	rt := reflect.TypeFor[Route]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "hedge_min_delay" || name == "hedge_min_samples" {
			name = "`" + name + "`" // described in hedge_percentile's row
		} else {
			name = "| `" + name + "` |"
		}
		if !strings.Contains(string(doc), name) {
			t.Errorf("docs/routes.md does not describe the field %s", name)
		}
	}
}

// TestParseErrorPosition: a JSON error names its line and column.
func TestParseErrorPosition(t *testing.T) {
	_, err := Parse([]byte("{\"routes\": [\n  {\"name\": \"x\", \"mode\": \"split\", \"fanout\": \"8\"}\n]}"))
	if err == nil || !strings.Contains(err.Error(), "at line 2, column") {
		t.Fatalf("err %v, want the line and column", err)
	}
	_, err = Parse([]byte("{\"routes\": [\n  {\"name\": \"x\",,}\n]}"))
	if err == nil || !strings.Contains(err.Error(), "at line 2, column 16") {
		t.Fatalf("err %v, want line 2, column 16", err)
	}
}
