package demo

import (
	"bytes"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// TestDemo plays the demo (what `make run` does) and checks its verdicts:
// every search merged equal to a direct search, every quote PARTIAL naming
// the slow provider.
func TestDemo(t *testing.T) {
	c := testkafka.New(t)
	var out bytes.Buffer
	sum, err := Run(t.Context(), Config{
		Client:   kafkaconfig.Client{Brokers: c.Brokers},
		Topics:   kafkaconfig.Topics{Prefix: c.Prefix},
		Out:      &out,
		Searches: 24,
		Quotes:   3,
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests != 27 || sum.Complete != 24 || sum.Partial != 3 || sum.Wrong != 0 {
		t.Fatalf("summary %s, want 24 complete searches and 3 partial quotes", sum)
	}
	if !strings.Contains(out.String(), "initech") || !strings.Contains(out.String(), "demo: requests=27") {
		t.Errorf("output lacks the quotes or the summary line:\n%s", out.String())
	}
}
