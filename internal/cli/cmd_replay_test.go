package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/replay"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

func TestReplayAndGroupsHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"replay", "--help"}, []string{"--from", "--to", "--route", "--rate", "--dry-run", "--run-id", "--target-prefix", "SG_RUN_ID", "replay compare"}},
		{[]string{"replay", "compare", "--help"}, []string{"--run", "--json", "--ignore-field", "--max-changed", "--report", "SG_MAX_CHANGED"}},
		{[]string{"groups", "reset", "--help"}, []string{"--group", "--topic", "--to", "--execute", "live members"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			var code int
			// Subcommands print their help on the process's stdout.
			stdout := captureStdout(t, func() { code = Main(t.Context(), tc.args, Commands(), &out, &errOut) })
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

// captureStdout returns what fn writes to os.Stdout.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stdout
	os.Stdout = w
	done := make(chan string)
	// Drains the pipe until fn's writes end.
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	defer func() { os.Stdout = orig }()
	fn()
	w.Close()
	return <-done
}

// TestReplayCommands runs replay, replay compare and groups reset through
// Main against a broker and checks what they did.
func TestReplayCommands(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	shadow := kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}
	cc := kafkaconfig.Client{Brokers: c.Brokers}
	layout := kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}
	for _, tp := range []kafkaconfig.Topics{source, shadow} {
		if err := stack.EnsureTopics(t.Context(), cc, tp, layout, []string{"echo"}); err != nil {
			t.Fatal(err)
		}
	}
	cl := c.Client(t)
	const n = 100
	for i := range n {
		var timeout time.Duration // none: the route's
		if i == 7 {
			timeout = 12 * time.Second
		}
		v, err := schemas.EncodeRequest(schemas.Request{CorrelationID: schemas.CorrelationID(fmt.Sprint("o-", i)), Route: "echo",
			Payload: []byte(`{}`), SubmittedAt: time.Now(), Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: source.Requests(), Key: []byte(fmt.Sprint("o-", i)), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	brokers := strings.Join(c.Brokers, ",")
	main := func(args ...string) int {
		t.Helper()
		var out, errOut bytes.Buffer
		code := Main(t.Context(), append(args, "--brokers", brokers, "--kafka-log-level", "none"), Commands(), &out, &errOut)
		t.Logf("%v: exit %d %s", args[:2], code, errOut.String())
		return code
	}

	if code := main("replay", "--dry-run", "--topic-prefix", source.Prefix); code != 1 {
		t.Errorf("dry run without --from: exit %d, want 1", code)
	}
	if code := main("replay", "--dry-run", "--from", "earliest", "--topic-prefix", source.Prefix, "--target-prefix", shadow.Prefix); code != 0 {
		t.Errorf("dry run: exit %d", code)
	}
	if code := main("replay", "--from", "earliest", "--topic-prefix", source.Prefix, "--target-prefix", shadow.Prefix,
		"--run-id", "cli-1", "--progress", "never", "--rate", "1000/s"); code != 0 {
		t.Fatalf("replay: exit %d", code)
	}
	st, err := replay.LoadRun(t.Context(), cc, shadow, "cli-1")
	if err != nil || !st.Done || st.Submitted != n {
		t.Fatalf("run cli-1 after the command: %v %+v", err, st)
	}
	// The suggested compare waits for the longest timeout replayed (12s)
	// plus 5s.
	if st.LongestTimeoutMS != 12_000 {
		t.Errorf("longest timeout %dms, want 12000", st.LongestTimeoutMS)
	}

	// No pipeline answers: every replay reply is missing.
	report := filepath.Join(t.TempDir(), "report.json")
	if code := main("replay", "compare", "--run", "cli-1", "--topic-prefix", source.Prefix, "--target-prefix", shadow.Prefix,
		"--max-missing", "0", "--report", report); code != 3 {
		t.Errorf("compare with missing replies and --max-missing 0: exit %d, want 3", code)
	}
	var rep replay.Report
	if b, err := os.ReadFile(report); err != nil || json.Unmarshal(b, &rep) != nil || rep.Counts[replay.MissingReplay] != n {
		t.Errorf("report: %v %+v", err, rep.Counts)
	}
	if code := main("replay", "compare", "--run", "cli-1", "--topic-prefix", source.Prefix, "--target-prefix", shadow.Prefix, "--max-changed", "0"); code != 0 {
		t.Errorf("compare without changes and no missing limit: exit %d, want 0", code)
	}
	if code := main("replay", "compare", "--topic-prefix", source.Prefix); code != 1 {
		t.Errorf("compare without --run: exit %d, want 1", code)
	}

	// groups reset: a dry run changes nothing, --execute commits.
	adm := kadm.NewClient(cl)
	group := c.Name("g")
	var end kadm.Offsets
	for p := range int32(2) {
		end.AddOffset(source.Requests(), p, 50, -1)
	}
	if err := adm.CommitAllOffsets(t.Context(), group, end); err != nil {
		t.Fatal(err)
	}
	offsets := func() string {
		r, err := adm.FetchOffsets(t.Context(), group)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		r.Each(func(o kadm.OffsetResponse) { s = append(s, fmt.Sprintf("%d:%d", o.Partition, o.At)) })
		slices.Sort(s)
		return strings.Join(s, " ")
	}
	before := offsets()
	if code := main("groups", "reset", "--group", group, "--topic", source.Requests(), "--to", "offset:10"); code != 0 || offsets() != before {
		t.Errorf("dry run: exit %d, offsets %s → %s", code, before, offsets())
	}
	if code := main("groups", "reset", "--group", group, "--topic", source.Requests(), "--to", "offset:10", "--execute"); code != 0 || !strings.Contains(offsets(), "0:10") {
		t.Errorf("execute: exit %d, offsets %s", code, offsets())
	}
	if code := main("groups", "nope", "--group", group); code != 1 {
		t.Errorf("unknown subcommand: exit %d, want 1", code)
	}
	if code := main("groups", "reset", "--topic", source.Requests()); code != 1 {
		t.Errorf("reset without --group and --to: exit %d, want 1", code)
	}
}
