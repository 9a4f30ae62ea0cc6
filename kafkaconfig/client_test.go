package kafkaconfig_test

import (
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClientFollowsFailoverQuickly checks the two client settings that
// bound how long a role keeps writing to a broker the controller has
// fenced: metadata refreshes a failure triggers are at most 100ms apart,
// and the retries of a failed request start at 100ms and stay under 500ms
// (franz-go's defaults, 5s for
// both, made a 3s broker fencing cost 8-15s; docs/guarantees.md).
// A caller's own Opts still win.
func TestClientFollowsFailoverQuickly(t *testing.T) {
	cl, err := kgo.NewClient(kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.MetadataMinAge); got != 100*time.Millisecond {
		t.Errorf("MetadataMinAge %v, want 100ms", got)
	}
	backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
	if !ok {
		t.Fatalf("RetryBackoffFn is %T", cl.OptValue(kgo.RetryBackoffFn))
	}
	for fails := 0; fails <= 30; fails++ {
		d := backoff(fails)
		if d <= 0 || d > 500*time.Millisecond {
			t.Errorf("backoff after %d failures: %v, want (0, 500ms]", fails, d)
		}
		if fails <= 1 && d > 120*time.Millisecond {
			t.Errorf("backoff after %d failures: %v, want about 100ms", fails, d)
		}
		if fails >= 4 && d < 400*time.Millisecond {
			t.Errorf("backoff after %d failures: %v, want about 500ms", fails, d)
		}
	}

	own, err := kgo.NewClient(kafkaconfig.Client{
		Brokers: []string{"127.0.0.1:1"},
		Opts:    []kgo.Opt{kgo.MetadataMinAge(300 * time.Millisecond)},
	}.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if got := own.OptValue(kgo.MetadataMinAge); got != 300*time.Millisecond {
		t.Errorf("a caller's MetadataMinAge: %v, want 300ms", got)
	}
}
