package chaos

import (
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// TestSendIsAnOpenLoop: a submit held up (the requests partition between
// leaders after a broker crash) does not hold back the requests due after
// it, so the load is offered at the rate whatever the pipeline does. The
// harness submitted one request at a time, and the 3-node broker-kill runs
// took up to 206s to send what 100s should have: after each stall it sent
// as fast as one produce after the other allowed, and never caught up.
func TestSendIsAnOpenLoop(t *testing.T) {
	c := testkafka.NewKfake(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	c.CreateTopic(t, "requests", 1, nil)
	c.CreateTopic(t, "replies", 1, nil)
	const slow = 300 * time.Millisecond // every produce
	c.Fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		time.Sleep(slow)
		return nil, nil, false
	})
	cl, err := client.New(t.Context(), client.Config{Client: kafkaconfig.Client{Brokers: c.Brokers}, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	const n, rate = 10, 50 // the last due 180ms after the start
	s := &session{
		h:         &Harness{cfg: Config{Requests: n, Rate: rate, Timeout: time.Second, Fanout: 2, Out: io.Discard}, start: time.Now()},
		submitted: map[schemas.CorrelationID]submission{},
	}
	start := time.Now()
	s.send(t.Context(), cl, start) // returns once every submit has
	took := time.Since(start)
	s.awaitWG.Wait() // no pipeline: each await gives up after its timeout and grace

	if len(s.ids) != n || s.subErrs != 0 {
		t.Fatalf("%d submitted, %d failed; want %d and 0", len(s.ids), s.subErrs, n)
	}
	var last time.Duration
	for _, id := range s.ids {
		last = max(last, s.submitted[id].at.Sub(start))
	}
	// One at a time, the last would start after 9 produces, 2.7s; in an
	// open loop at its due time, 180ms, and return a produce or two later.
	if last > time.Second || took > 2*time.Second {
		t.Errorf("the last of %d requests due within 180ms was submitted %s after the start, all returned after %s: submits wait for each other",
			n, last.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	if s.timeouts != n {
		t.Errorf("%d awaits gave up, want all %d (no pipeline answers)", s.timeouts, n)
	}
}
