package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/dlq"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func TestDLQHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"dlq", "--help"}, []string{"list", "show", "redrive"}},
		{[]string{"dlq", "list", "--help"}, []string{"--reason", "--role", "--source-topic", "--since", "--until", "--at", "--json", "--dlq-topic", "SG_SOURCE_TOPIC"}},
		{[]string{"dlq", "show", "--help"}, []string{"PARTITION/OFFSET", "--json", "--dlq-topic", "decoded"}},
		{[]string{"dlq", "redrive", "--help"}, []string{"--execute", "--all", "--reason", "--batch-size", "at most once", "dry run"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			var code int
			stdout, _ := captureOutput(t, func() { code = Main(t.Context(), tc.args, Commands(), &out, &errOut) })
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			help := out.String() + stdout
			for _, w := range tc.want {
				if !strings.Contains(help, w) {
					t.Errorf("help lacks %q:\n%s", w, help)
				}
			}
		})
	}
}

// TestDLQFlags checks what the filter flags resolve to and that a bad
// filter is an error naming its flag, before any broker is asked.
func TestDLQFlags(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	parse := func(args ...string) (dlqConfig, error) {
		var f dlqFlags
		fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
		f.register(fs, true)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.config(now)
	}
	cfg, err := parse("--topic-prefix", "x.", "--reason", "unknown-route,not-avro", "--source-topic", "x.tasks.*",
		"--since", "2h", "--until", "2026-05-01T11:30:00Z", "--at", "1/7", "--at", "0:3")
	if err != nil {
		t.Fatal(err)
	}
	want := dlq.Filter{Reasons: []string{"unknown-route", "not-avro"}, SourceTopics: []string{"x.tasks.*"},
		Since: now.Add(-2 * time.Hour), Until: now.Add(-30 * time.Minute), At: []dlq.Pos{{Partition: 1, Offset: 7}, {Partition: 0, Offset: 3}}}
	if cfg.topic != "x.dlq" || fmt.Sprint(cfg.filter) != fmt.Sprint(want) {
		t.Errorf("got %s %+v, want x.dlq %+v", cfg.topic, cfg.filter, want)
	}
	if cfg, _ := parse("--dlq-topic", "other"); cfg.topic != "other" {
		t.Errorf("--dlq-topic: %s", cfg.topic)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, "--since"},
		{[]string{"--until", "offset:3"}, "--until"},
		{[]string{"--at", "3"}, "--at"},
		{[]string{"--at", "-1/2"}, "--at"},
		{[]string{"--source-topic", "sg.[tasks"}, "pattern"},
		{[]string{"--since", "1h", "--until", "2h"}, "not before"},
		{[]string{"--progress", "bar"}, "--progress"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// TestDLQProgressLines checks the progress line of a long run: none in
// the first 5s (a short run prints none at all), then at most one every 5s,
// and the last one at the end.
func TestDLQProgressLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		f := dlqFlags{progress: "lines"}
		p := f.progressFunc(&buf, "redrove", "dead letters")
		p(100, 1000)
		time.Sleep(6 * time.Second)
		p(200, 1000)
		time.Sleep(time.Second)
		p(300, 1000) // 1s after the last line: held back
		time.Sleep(5 * time.Second)
		p(1000, 1000)
		want := "dlq: redrove 200/1000 dead letters (6s)\ndlq: redrove 1000/1000 dead letters (12s)\n"
		if buf.String() != want {
			t.Errorf("progress lines:\n%s\nwant:\n%s", buf.String(), want)
		}

		buf.Reset()
		p = f.progressFunc(&buf, "read", "records")
		p(10, 10)
		if buf.Len() != 0 {
			t.Errorf("a run under 5s printed %q", buf.String())
		}
		if (&dlqFlags{progress: "never"}).progressFunc(&buf, "read", "records") != nil {
			t.Error("--progress never still reports")
		}
	})
}

// TestDLQCommands produces real dead letters by feeding a running pipeline
// bad input, then lists them with filters, shows them, redrives one whose
// cause was fixed (its reply topic created) in a dry run (nothing written),
// for real (it reaches the requests topic with its key and headers and is
// answered) and again (nothing written the second time).
func TestDLQCommands(t *testing.T) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	cc := kafkaconfig.Client{Brokers: c.Brokers, ClientID: "dlq-test"}
	startStack(t, stack.Config{
		Client: cc, Topics: topics, Guarantee: kafkaconfig.ExactlyOnce,
		Layout:     kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1},
		Routes:     mustRoutes(t, `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"45s","max_timeout":"1m"}]}`),
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
	})
	raw := c.Client(t)
	produce := func(topic, key string, value []byte, headers ...kgo.RecordHeader) {
		t.Helper()
		if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Headers: headers}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	request := func(id, route, replyTo string) []byte {
		b, err := schemas.EncodeRequest(schemas.Request{CorrelationID: schemas.CorrelationID(id), Route: schemas.Route(route),
			Payload: []byte(`{"q":"` + id + `"}`), ReplyTo: replyTo, SubmittedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	lateTopic := topics.Replies() + ".late"
	produce(topics.Requests(), "g1", []byte("\x00\x01garbage"))
	produce(topics.Requests(), "nr", request("nr", "nope", ""))
	produce(topics.Requests(), "late", request("late", "echo", lateTopic), kgo.RecordHeader{Key: "trace", Value: []byte("abc")})
	produce(topics.Tasks("echo"), "shard-0", []byte("not a task"))

	// The roles dead-letter all four.
	var entries []*dlq.Entry
	waitFor(t, 30*time.Second, "4 dead letters", func() bool {
		l, err := dlq.Scan(t.Context(), cc, topics.DLQ(), dlq.Filter{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		entries = l.Entries
		return len(entries) >= 4
	})
	at := map[string]dlq.Pos{}
	for _, e := range entries {
		at[e.Reason] = e.At
	}
	brokers := strings.Join(c.Brokers, ",")
	cmd := func(args ...string) (int, string, string) {
		t.Helper()
		var code int
		var errOut bytes.Buffer
		stdout, stderr := captureOutput(t, func() {
			code = Main(t.Context(), append(args, "--brokers", brokers, "--topic-prefix", c.Prefix, "--kafka-log-level", "none"),
				Commands(), io.Discard, &errOut)
		})
		t.Logf("%v: exit %d\n%s%s%s", args, code, stdout, stderr, errOut.String())
		return code, stdout, stderr + errOut.String()
	}

	// list: every dead letter, then filtered.
	code, out, _ := cmd("dlq", "list")
	if code != 0 {
		t.Fatalf("list: exit %d", code)
	}
	for _, w := range []string{"not-avro", "unknown-route", "unknown-reply-topic", topics.Requests() + "/", topics.Tasks("echo") + "/", "scatterer", "processor", "4 of 4 dead letters"} {
		if !strings.Contains(out, w) {
			t.Errorf("list lacks %q", w)
		}
	}
	for _, tc := range []struct {
		args    []string
		reasons []string
	}{
		{[]string{"--reason", "unknown-route"}, []string{"unknown-route"}},
		{[]string{"--role", "processor"}, []string{"not-avro"}},
		{[]string{"--source-topic", c.Prefix + "tasks.*"}, []string{"not-avro"}},
		{[]string{"--source-topic", topics.Requests(), "--reason", "not-avro,unknown-reply-topic"}, []string{"not-avro", "unknown-reply-topic"}},
		{[]string{"--since", "10m"}, []string{"not-avro", "unknown-route", "unknown-reply-topic", "not-avro"}},
		{[]string{"--until", "10m"}, nil},
		{[]string{"--at", at["unknown-route"].String()}, []string{"unknown-route"}},
	} {
		code, out, _ := cmd(append([]string{"dlq", "list", "--json"}, tc.args...)...)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var j dlq.EntryJSON
			if err := json.Unmarshal([]byte(line), &j); err != nil {
				t.Fatalf("list %v: line %q: %v", tc.args, line, err)
			}
			got = append(got, j.Reason)
		}
		if code != 0 || len(got) != len(tc.reasons) || !sameSet(got, tc.reasons) {
			t.Errorf("list %v: exit %d, reasons %v, want %v", tc.args, code, got, tc.reasons)
		}
	}

	// show: a request decoded with its headers; an undecodable record as text.
	code, out, _ = cmd("dlq", "show", at["unknown-reply-topic"].String())
	for _, w := range []string{"value: request", `"CorrelationID": "late"`, `"ReplyTo": "` + lateTopic + `"`, `"Payload": {`,
		"trace: abc", "sg-dlq-reason: unknown-reply-topic", "sg-dlq-role: scatterer", "redriven: no"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("show: exit %d, lacks %q", code, w)
		}
	}
	var notAvro dlq.Pos
	for _, e := range entries {
		if e.Reason == "not-avro" && e.Role == "scatterer" {
			notAvro = e.At
		}
	}
	code, out, _ = cmd("dlq", "show", notAvro.String(), "--json")
	var shown dlq.EntryJSON
	if err := json.Unmarshal([]byte(out), &shown); code != 0 || err != nil || shown.Value == nil ||
		shown.Value.Kind != schemas.KindRequest || shown.Value.DecodeError == "" || !strings.Contains(shown.Value.Hex, "67 61 72 62") ||
		shown.Headers[kafka.HeaderDLQReason] != "not-avro" || shown.Key != "g1" {
		t.Errorf("show --json of the not-avro request: exit %d, %v, %+v %+v", code, err, shown, shown.Value)
	}
	if code, _, stderr := cmd("dlq", "show", "0/999999"); code != 1 || !strings.Contains(stderr, "no dead letter at 0/999999") {
		t.Errorf("show of no dead letter: exit %d, %s", code, stderr)
	}

	// Fix the cause: create the reply topic, and let the scatterer's cache
	// of missing topics (2s) forget it was missing.
	adm := kadm.NewClient(raw)
	if _, err := adm.CreateTopic(t.Context(), 1, -1, nil, lateTopic); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)

	ends := func() string {
		t.Helper()
		var s []string
		for _, tp := range []string{topics.Requests(), topics.DLQ()} {
			o, err := adm.ListEndOffsets(t.Context(), tp)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			o.Each(func(lo kadm.ListedOffset) { n += lo.Offset })
			s = append(s, fmt.Sprintf("%s:%d", tp, n))
		}
		return strings.Join(s, " ")
	}
	before := ends()
	code, out, _ = cmd("dlq", "redrive", "--reason", "unknown-reply-topic")
	if code != 0 || !strings.Contains(out, "would redrive 1 of 1") || !strings.Contains(out, "nothing written") || ends() != before {
		t.Errorf("dry run: exit %d, ends %s → %s", code, before, ends())
	}
	code, out, _ = cmd("dlq", "redrive", "--reason", "unknown-reply-topic", "--execute")
	if code != 0 || !strings.Contains(out, "redrove 1 of 1") {
		t.Errorf("redrive: exit %d", code)
	}
	// The request is on the requests topic again, with its key and its
	// own headers and none of the dead letter's, and is answered.
	var redriven []*kgo.Record
	waitFor(t, 30*time.Second, "the redriven request on "+topics.Requests(), func() bool {
		redriven = readKey(t, c, topics.Requests(), "late")
		return len(redriven) == 2
	})
	last := redriven[len(redriven)-1]
	if kafka.Header(last, "trace") != "abc" || slices.ContainsFunc(last.Headers, func(h kgo.RecordHeader) bool { return strings.HasPrefix(h.Key, "sg-dlq-") }) {
		t.Errorf("redriven request's headers: %v", last.Headers)
	}
	waitFor(t, 45*time.Second, "the reply of the redriven request on "+lateTopic, func() bool {
		for _, r := range readKey(t, c, lateTopic, "late") {
			if rp, err := schemas.DecodeReply(r.Value); err == nil && rp.Status == schemas.ReplyComplete {
				return true
			}
		}
		return false
	})

	// Again: the marker says it was redriven; nothing is written.
	before = ends()
	code, out, _ = cmd("dlq", "redrive", "--reason", "unknown-reply-topic", "--execute")
	if code != 0 || !strings.Contains(out, "redrove 0 of 1") || !strings.Contains(out, "1 already redriven") || ends() != before {
		t.Errorf("second redrive: exit %d, ends %s → %s", code, before, ends())
	}
	if n := len(readKey(t, c, topics.Requests(), "late")); n != 2 {
		t.Errorf("%d records keyed late on %s after the second redrive, want 2", n, topics.Requests())
	}
	// list marks it and does not list the marker.
	code, out, _ = cmd("dlq", "list", "--reason", "unknown-reply-topic", "--json")
	var j dlq.EntryJSON
	if err := json.Unmarshal([]byte(out), &j); code != 0 || err != nil || !strings.HasPrefix(j.RedrivenTo, topics.Requests()+"/") {
		t.Errorf("list after redrive: exit %d %v %+v", code, err, j)
	}
	if code, out, _ := cmd("dlq", "list"); code != 0 || !strings.Contains(out, "4 of 4 dead letters") || !strings.Contains(out, "(1 of them redriven)") {
		t.Errorf("list after redrive: exit %d", code)
	}

	// Errors that name the problem.
	if code, _, stderr := cmd("dlq", "list", "--dlq-topic", c.Name("nope")); code != 1 || !strings.Contains(stderr, "does not exist") || !strings.Contains(stderr, "scattergather topics") {
		t.Errorf("missing DLQ topic: exit %d, %s", code, stderr)
	}
	if code, _, stderr := cmd("dlq", "redrive"); code != 1 || !strings.Contains(stderr, "--all") {
		t.Errorf("redrive without a filter: exit %d, %s", code, stderr)
	}
	if code, _, stderr := cmd("dlq", "list", "--since", "soon"); code != 1 || !strings.Contains(stderr, "--since") {
		t.Errorf("bad --since: exit %d, %s", code, stderr)
	}
	if code, _, stderr := cmd("dlq", "purge"); code != 1 || !strings.Contains(stderr, "want list, show or redrive") {
		t.Errorf("unknown subcommand: exit %d, %s", code, stderr)
	}
}

// TestDLQRedriveRecordErrors writes dead letters with the roles' own code
// (kafka.DeadLetter, DeadLetterOutput) and redrives them all: a stand-in
// and one whose source topic is gone are reported, a second dead letter of
// the same source record is skipped, the others go back;
// a redrive that stalled with its transaction open is fenced (its commit
// fails) and its transaction aborted, so no record is written twice.
func TestDLQRedriveRecordErrors(t *testing.T) {
	c := testkafka.New(t)
	dlqTopic, src, gone := c.Name("dlq"), c.Name("src"), c.Name("gone")
	raw := c.Client(t)
	adm := kadm.NewClient(raw)
	for _, tp := range []struct {
		name string
		n    int32
	}{{dlqTopic, 2}, {src, 1}} {
		if _, err := adm.CreateTopic(t.Context(), tp.n, -1, nil, tp.name); err != nil {
			t.Fatal(err)
		}
	}
	consumed := func(topic string, offset int64, key string, value []byte) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: 0, Offset: offset, Key: []byte(key), Value: value,
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(key)}}}
	}
	dls := []*kgo.Record{
		kafka.DeadLetter(dlqTopic, consumed(src, 1, "k1", []byte("one")), "processor", "not-avro", fmt.Errorf("bad")),
		kafka.DeadLetter(dlqTopic, consumed(gone, 2, "k2", []byte("two")), "processor", "not-avro", fmt.Errorf("bad")),
		kafka.DeadLetter(dlqTopic, consumed(src, 3, "k3", bytes.Repeat([]byte("x"), 1_200_000)), "scatterer", "payload-too-large", fmt.Errorf("big")),
		kafka.DeadLetterOutput(dlqTopic, &kgo.Record{Topic: src, Key: []byte("k4"), Value: []byte("four")}, "aggregator", kafka.ReasonUnknownTopic, fmt.Errorf("gone")),
		// k1 again: an at-least-once role consumed it again after a crash.
		kafka.DeadLetter(dlqTopic, consumed(src, 1, "k1", []byte("one")), "processor", "not-avro", fmt.Errorf("bad")),
	}
	if kafka.Header(dls[2], kafka.HeaderDLQTruncated) != "true" {
		t.Fatal("the 1.2 MB dead letter is not a stand-in")
	}
	for _, r := range dls {
		r.Partition = 0
	}
	p := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := p.ProduceSync(t.Context(), dls...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A redrive that stalled (a GC pause, a network partition) with k1 and
	// its marker written in a transaction it has not committed yet.
	crashed := c.Client(t, kgo.TransactionalID(dlq.TransactionalID(dlqTopic)), kgo.TransactionTimeout(time.Minute),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := crashed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := crashed.ProduceSync(t.Context(),
		&kgo.Record{Topic: src, Key: []byte("k1"), Value: []byte("one")},
		&kgo.Record{Topic: dlqTopic, Partition: 1, Value: []byte{}, Headers: []kgo.RecordHeader{{Key: kafka.HeaderDLQRedriven, Value: []byte("0/0")}}},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}

	brokers := strings.Join(c.Brokers, ",")
	cmd := func(args ...string) (int, string) {
		t.Helper()
		var code int
		var errOut bytes.Buffer
		stdout, stderr := captureOutput(t, func() {
			code = Main(t.Context(), append(args, "--brokers", brokers, "--dlq-topic", dlqTopic, "--kafka-log-level", "none", "--transaction-timeout", "5s"),
				Commands(), io.Discard, &errOut)
		})
		t.Logf("%v: exit %d\n%s%s%s", args, code, stdout, stderr, errOut.String())
		return code, stdout + stderr + errOut.String()
	}
	code, out := cmd("dlq", "redrive", "--all", "--execute")
	// The crashed redrive was fenced: it can commit nothing now.
	if err := crashed.EndTransaction(t.Context(), kgo.TryCommit); err == nil {
		t.Error("the crashed redrive committed its transaction after another redrive started")
	}
	for _, w := range []string{"redrove 2 of 5", "2 could not be, 1 duplicates skipped", "skipped 0/4: a duplicate of 0/0", "source topic " + gone + " no longer exists", "a stand-in", "2 of 4 dead letters could not be redriven"} {
		if code != 1 || !strings.Contains(out, w) {
			t.Errorf("redrive: exit %d, lacks %q", code, w)
		}
	}
	got := map[string]int{}
	for _, r := range readAll(t, c, src) {
		got[string(r.Key)]++
		for _, h := range r.Headers {
			if strings.HasPrefix(h.Key, "sg-dlq-") {
				t.Errorf("%s keeps header %s", r.Key, h.Key)
			}
		}
		if string(r.Key) == "k1" && kafka.Header(r, "h") != "k1" {
			t.Errorf("k1 lost its header: %v", r.Headers)
		}
	}
	if got["k1"] != 1 || got["k4"] != 1 || len(got) != 2 {
		t.Errorf("records on the source topic by key: %v, want k1 and k4 once each (the crashed redrive's k1 aborted)", got)
	}
	// The duplicate alone: its record went back through 0/0.
	if code, out := cmd("dlq", "redrive", "--at", "0/4", "--execute"); code != 0 || !strings.Contains(out, "redrove 0 of 1") || !strings.Contains(out, "skipped 0/4: a duplicate of 0/0") {
		t.Errorf("redrive of the duplicate alone: exit %d", code)
	}
	code, out = cmd("dlq", "redrive", "--all", "--execute")
	if !strings.Contains(out, "redrove 0 of 5") || !strings.Contains(out, "2 already redriven") || !strings.Contains(out, "1 duplicates skipped") || len(readAll(t, c, src)) != 2 {
		t.Errorf("second redrive: exit %d, %d records on the source topic", code, len(readAll(t, c, src)))
	}
}

// startStack runs a pipeline until the test ends and waits until every role
// holds its assignment.
func startStack(t *testing.T, cfg stack.Config) {
	t.Helper()
	st, err := stack.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	// Runs the pipeline until the cleanup below stops and waits for it.
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30s")
		}
	})
	waitFor(t, 30*time.Second, "the pipeline ready", func() bool {
		for _, c := range st.Checks() {
			if c.Ready() != nil {
				return false
			}
		}
		return true
	})
}

func mustRoutes(t *testing.T, js string) *routes.Table {
	t.Helper()
	tb, err := routes.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// waitFor polls ok every 100ms until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readAll returns every committed record of topic now.
func readAll(t *testing.T, c *testkafka.Cluster, topic string) []*kgo.Record {
	t.Helper()
	l, err := dlq.Scan(t.Context(), kafkaconfig.Client{Brokers: c.Brokers}, topic, dlq.Filter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []*kgo.Record
	for _, e := range l.Entries {
		out = append(out, e.Record)
	}
	return out
}

// readKey returns the committed records of topic keyed key.
func readKey(t *testing.T, c *testkafka.Cluster, topic, key string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for _, r := range readAll(t, c, topic) {
		if string(r.Key) == key {
			out = append(out, r)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// captureOutput returns what fn writes to os.Stdout and os.Stderr.
func captureOutput(t *testing.T, fn func()) (stdout, stderr string) {
	t.Helper()
	var errText string
	stdout = captureStdout(t, func() {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		orig := os.Stderr
		os.Stderr = w
		done := make(chan string)
		// Drains the pipe until fn's writes end.
		go func() {
			b, _ := io.ReadAll(r)
			done <- string(b)
		}()
		defer func() { os.Stderr = orig }()
		fn()
		w.Close()
		errText = <-done
	})
	return stdout, errText
}
