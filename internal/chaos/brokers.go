package chaos

// Crashes and clean restarts of the nodes of a real Kafka cluster, the one
// scripts/kafka-local.sh runs at Config.Brokers. The script is the one
// source of truth about the cluster (its pid files, configs and data dirs):
// the harness only calls `env`, `kill N`, `stop-node N` and `start-node N`.
// One broker fault at a time: a second node down while the first is still
// out of the ISRs would stop every write (min.insync.replicas 2 of 3), an
// outage rather than a failover.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// BrokerFault is one node of the local cluster killed (SIGKILL) or stopped
// cleanly (SIGTERM), then started again.
type BrokerFault struct {
	Node   int
	Signal string // "SIGKILL" or "SIGTERM"
	At     time.Duration
	Pause  time.Duration // between the node's exit and its restart
	// Restart is how long start-node took to have the node answer again;
	// Healed how long after that every partition of the run's topics and
	// of the transaction and offsets topics had all its replicas in sync
	// again (-1: not within healBound); Rebalanced how long moving the
	// leaders back to their preferred replicas took, a settle time after
	// that (Moved partitions were not; -1: not within healBound).
	Restart, Healed, Rebalanced time.Duration
	Moved                       int
	// Flowing is how long after the move every partition of results and
	// replies had shown a record again (-1: the load was over first).
	Flowing time.Duration
	// Settle is how long the fault lasted after that (Config.BrokerSettle;
	// the same wait comes before the leaders move back too).
	Settle time.Duration
	// Stopped: the signal was delivered and the node went down; Err says
	// what went wrong (the node may then still be down).
	Stopped bool
	Err     error
	// When is the moment the signal was sent, Restarted the moment the
	// node was started again, Settled the end of the fault (zero: not
	// reached). Stall is the longest time a partition of results or
	// replies showed no new record (as Report.LongestStall) that ended
	// between When and Restarted: what the node's death cost. ReturnStall
	// is the same between Restarted and Settled: what its return cost
	// (the restart, the catch-up, its leaders moving back). StallAt and
	// ReturnStallAt say which partition and when.
	When, Restarted, Settled time.Time
	Stall, ReturnStall       time.Duration
	StallAt, ReturnStallAt   string
}

// healBound bounds the wait for a restarted node to be back in every ISR.
const healBound = 2 * time.Minute

// localCluster runs scripts/kafka-local.sh for the cluster at cfg.Brokers.
type localCluster struct {
	script string
	home   string // SG_KAFKA_HOME for the script; empty: the environment's
	nodes  int    // node ids are 1..nodes, as the script numbers them
}

// openLocalCluster asks the script which cluster it runs and checks that it
// is the one at brokers: the harness must never kill the nodes of another
// cluster than the one it loads.
func openLocalCluster(ctx context.Context, script, home string, brokers []string) (*localCluster, error) {
	c := &localCluster{script: script, home: home}
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("broker faults need scripts/kafka-local.sh (--kafka-local): %w", err)
	}
	out, err := c.do(ctx, "env")
	if err != nil {
		return nil, fmt.Errorf("broker faults: no cluster of %s is running (SG_KAFKA_HOME %q): %w", script, c.home, err)
	}
	var theirs []string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "KAFKA_BROKERS="); ok {
			theirs = strings.Split(strings.TrimSpace(v), ",")
		}
	}
	for _, b := range brokers {
		if !slices.Contains(theirs, strings.TrimSpace(b)) {
			return nil, fmt.Errorf("broker faults: %s is not a node of the cluster %s runs (SG_KAFKA_HOME %q: %s); start the cluster with it, or set --kafka-home",
				b, script, c.home, strings.Join(theirs, ","))
		}
	}
	c.nodes = len(theirs)
	return c, nil
}

// do runs the script with args and returns its output; an error carries
// the output's last lines.
func (c *localCluster) do(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = os.Environ()
	if c.home != "" {
		cmd.Env = append(cmd.Env, "SG_KAFKA_HOME="+c.home)
	}
	// A group of its own, so that Ctrl-C reaches only the harness; the node
	// the script starts runs on after the script exits (nohup).
	cmd.SysProcAttr = sysProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if err != nil {
		lines := strings.Split(s, "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		return s, fmt.Errorf("%s %s: %w: %s", c.script, strings.Join(args, " "), err, strings.Join(lines, " | "))
	}
	return s, nil
}

// outageRisks lists why a node down would stop writes to the run's topics
// or the transaction and offsets topics: a cluster of one node, or a topic
// whose replication factor does not exceed its min.insync.replicas.
func outageRisks(ctx context.Context, adm *kadm.Client, nodes int, topics []string) ([]string, error) {
	if nodes < 2 {
		return []string{fmt.Sprintf("the cluster has %d node", nodes)}, nil
	}
	names := append(slices.Clone(topics), "__consumer_offsets", "__transaction_state")
	var (
		existing []string
		rf       = map[string]int{}
	)
	// A topic just created may be unknown to the broker asked for a moment.
	for try := 0; ; try++ {
		details, err := adm.ListTopicsWithInternal(ctx, names...)
		if err != nil {
			return nil, fmt.Errorf("list topics: %w", err)
		}
		existing = existing[:0]
		missing := 0
		for _, d := range details.Sorted() {
			switch {
			case d.Err == nil:
				existing = append(existing, d.Topic)
				rf[d.Topic] = d.Partitions.NumReplicas()
			case slices.Contains(topics, d.Topic):
				missing++
			}
			// The offsets or transaction topic may not be created yet.
		}
		if missing == 0 {
			break
		}
		if try == 50 {
			return nil, fmt.Errorf("%d of the run's topics are still unknown to the broker 10s after their creation", missing)
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	// A node that has not yet applied the topics' creation from the
	// controller's log answers UNKNOWN_TOPIC_OR_PARTITION (seen on a
	// cluster started a minute before, under load): ask again for 10s.
	var rcs kadm.ResourceConfigs
	for try := 0; ; try++ {
		var err error
		rcs, err = adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return nil, fmt.Errorf("describe topic configs: %w", err)
		}
		unknown := slices.ContainsFunc(rcs, func(rc kadm.ResourceConfig) bool {
			return errors.Is(rc.Err, kerr.UnknownTopicOrPartition)
		})
		if !unknown || try == 50 {
			break
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	var risks []string
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe %s: %w", rc.Name, rc.Err)
		}
		minISR := 1
		for _, cv := range rc.Configs {
			if cv.Key == "min.insync.replicas" && cv.Value != nil {
				fmt.Sscan(*cv.Value, &minISR)
			}
		}
		if rf[rc.Name]-minISR < 1 {
			risks = append(risks, fmt.Sprintf("%s has replication factor %d and min.insync.replicas %d", rc.Name, rf[rc.Name], minISR))
		}
	}
	slices.Sort(risks)
	return risks, nil
}

// brokerEvent is one fault of the broker schedule.
type brokerEvent struct {
	at    time.Duration // from the start of the load
	node  int
	sig   syscall.Signal // SIGKILL: a crash; SIGTERM: a clean restart
	pause time.Duration
}

// brokerSchedule spreads cfg.BrokerKills crashes and cfg.BrokerBounces
// clean restarts over [10%, 70%] of the load, one per equal slot, at a
// random point of it, each on a random node; it leaves the rest of the load
// for the last restart and its catch-up. rng is the harness's, after the
// role schedule was drawn, so a seed gives the same roles' schedule with or
// without broker faults.
func brokerSchedule(cfg Config, rng *rand.Rand, nodes int) []brokerEvent {
	var evs []brokerEvent
	for range cfg.BrokerKills {
		evs = append(evs, brokerEvent{sig: syscall.SIGKILL})
	}
	for range cfg.BrokerBounces {
		evs = append(evs, brokerEvent{sig: syscall.SIGTERM})
	}
	if len(evs) == 0 {
		return nil
	}
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	load := time.Duration(float64(cfg.Requests) / cfg.Rate * float64(time.Second))
	lo, slot := load/10, load*6/10/time.Duration(len(evs))
	for i := range evs {
		evs[i].at = lo + slot*time.Duration(i) + time.Duration(rng.Int64N(int64(slot)+1))
		evs[i].node = 1 + rng.IntN(nodes)
		evs[i].pause = cfg.BrokerPauseMin + time.Duration(rng.Int64N(int64(cfg.BrokerPauseMax-cfg.BrokerPauseMin)+1))
	}
	return evs
}

// brokerFaults carries out a broker schedule, one fault at a time, on a
// goroutine of its own (see start).
type brokerFaults struct {
	s       *session
	cluster *localCluster
	topics  []string      // the run's, whose ISRs must heal after a restart
	settle  time.Duration // Config.BrokerSettle

	kills, bounces atomic.Int64 // done so far, for the progress lines
	wg             sync.WaitGroup
	faults         []BrokerFault   // written by the goroutine; read after wait
	sent           <-chan struct{} // closed once the load is all sent (start)
}

// start carries out evs relative to start on a goroutine that exits once
// the last fault's node is back, or ctx ends (after a best-effort restart
// of a node it left down). sent is closed when the load is all sent.
func (b *brokerFaults) start(ctx context.Context, start time.Time, evs []brokerEvent, sent <-chan struct{}) {
	b.sent = sent
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for _, ev := range evs {
			if !sleepCtx(ctx, time.Until(start.Add(ev.at))) {
				return
			}
			b.faults = append(b.faults, b.do(ctx, ev, time.Since(start)))
		}
	}()
}

// wait waits for the goroutine of start and returns the faults it caused.
func (b *brokerFaults) wait() []BrokerFault {
	b.wg.Wait()
	return b.faults
}

// do causes one fault: the node stops (kill or stop-node), stays down for
// the pause, starts again (start-node waits until it answers), and the
// partitions it holds catch up.
func (b *brokerFaults) do(ctx context.Context, ev brokerEvent, at time.Duration) BrokerFault {
	say := b.s.h.say
	f := BrokerFault{Node: ev.node, Signal: "SIGKILL", At: at, Pause: ev.pause, Healed: -1, Rebalanced: -1, Flowing: -1}
	verb := "kill"
	if ev.sig == syscall.SIGTERM {
		f.Signal, verb = "SIGTERM", "stop-node"
	}
	node := fmt.Sprint(ev.node)
	// Every fault starts from a balanced cluster (the first one too: a
	// run before may have left leaders elsewhere); a cluster that will
	// not balance delays the fault by 30s at most.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := restoreLeaders(lctx, b.s.adm, b.topics); err != nil && ctx.Err() == nil {
		say("broker: leaders not all on their preferred replicas before the fault: %v", err)
	}
	cancel()
	f.When = time.Now()
	out, err := b.cluster.do(ctx, verb, node)
	if err != nil {
		f.Err = err
		say("broker fault: %v", err)
		return f
	}
	f.Stopped = true
	if ev.sig == syscall.SIGKILL {
		b.kills.Add(1)
	} else {
		b.bounces.Add(1)
	}
	say("broker: %s; starting it again in %s", lastLine(out), ev.pause.Round(time.Millisecond))
	paused := sleepCtx(ctx, ev.pause)
	sctx := ctx
	if !paused {
		// Interrupted: bring the node back anyway, so that the cluster is
		// left as it was found.
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		say("broker: interrupted; starting node %d again before exiting", ev.node)
	}
	t0 := time.Now()
	f.Restarted = t0
	out, err = b.cluster.do(sctx, "start-node", node)
	f.Restart = time.Since(t0)
	if err != nil {
		f.Err = err
		say("broker fault: %v", err)
		return f
	}
	if !paused {
		return f
	}
	t0 = time.Now()
	hctx, cancel := context.WithTimeout(ctx, healBound)
	defer cancel()
	if err := waitInSync(hctx, b.s.adm, b.topics); err != nil {
		say("broker: %s; not every replica in sync %s later: %v", lastLine(out), healBound, err)
		return f
	}
	f.Healed = time.Since(t0)
	// A restarted node leads nothing until its partitions' leaders are
	// moved back to it, which Kafka does by itself only every
	// leader.imbalance.check.interval.seconds (300s by default). Until
	// then the next fault would move more than its own node's leaders, so
	// the harness moves them back, as an operator would, and the move
	// counts as part of this fault: after the settle time, as an
	// operator would wait for the node to run a little (on a 2-core box
	// 5s did not make the move cheaper: 1-6s of stall either way), and
	// then the settle time once more, so that what the move costs ends
	// before the next fault.
	sleepCtx(ctx, b.settle)
	t0 = time.Now()
	moved, err := restoreLeaders(hctx, b.s.adm, b.topics)
	if err != nil {
		say("broker: %s; every replica in sync %s later; leaders not back on their preferred replicas %s after %s more: %v",
			lastLine(out), f.Healed.Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond), b.settle, err)
		return f
	}
	f.Rebalanced, f.Moved = time.Since(t0), moved
	// The move stalls partitions of its own: 2.8-5.3s on this box in
	// session 17, longer than the settle time, so that the next fault
	// struck before that stall had ended and the two costs added up. The
	// fault lasts until every partition of results and replies has shown
	// a record since the move (while load is offered), then the settle
	// time.
	t0 = time.Now()
	flowing := "the load is over"
	f.Flowing = b.waitFlowing(ctx, t0)
	if f.Flowing >= 0 {
		flowing = "every partition flowing again " + f.Flowing.Round(100*time.Millisecond).String() + " later"
	}
	say("broker: %s; every replica in sync %s later, %d leaders back on their preferred replicas %s after %s more, %s; settling for %s",
		lastLine(out), f.Healed.Round(100*time.Millisecond), moved, f.Rebalanced.Round(100*time.Millisecond), b.settle, flowing, b.settle)
	t0 = time.Now()
	sleepCtx(ctx, b.settle)
	f.Settle, f.Settled = time.Since(t0), time.Now()
	return f
}

// flowBound bounds the wait for the partitions to flow again after the
// leaders moved back: a partition that stays stalled longer is a fault
// of its own, which the report shows, and the run goes on.
const flowBound = 30 * time.Second

// waitFlowing waits until every partition of results and replies has
// shown a record since t (observer.flowingSince), and returns how long
// after t that was. It returns -1 if the load is all sent first (no
// records need come then) or ctx ends, and flowBound if it passes.
func (b *brokerFaults) waitFlowing(ctx context.Context, t time.Time) time.Duration {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	bound := time.NewTimer(flowBound)
	defer bound.Stop()
	for {
		if ok, _ := b.s.obs.flowingSince(t); ok {
			return time.Since(t)
		}
		select {
		case <-ctx.Done():
			return -1
		case <-b.sent:
			return -1
		case <-bound.C:
			_, waiting := b.s.obs.flowingSince(t)
			b.s.h.say("broker: %s has shown no record for %s since the leaders moved back; going on", waiting, flowBound)
			return flowBound
		case <-tick.C:
		}
	}
}

// restoreLeaders has every partition of topics, __consumer_offsets and
// __transaction_state led by its preferred replica (the first of its
// replicas) again, electing it where it is not, and returns how many were
// not at first.
func restoreLeaders(ctx context.Context, adm *kadm.Client, topics []string) (int, error) {
	first := -1
	for {
		off, why, err := partitionsWhere(ctx, adm, topics, func(p kadm.PartitionDetail) string {
			if len(p.Replicas) > 0 && p.Leader != p.Replicas[0] {
				return fmt.Sprintf("led by %d, preferred %d", p.Leader, p.Replicas[0])
			}
			return ""
		})
		if err == nil {
			if first < 0 {
				first = len(why)
			}
			if len(why) == 0 {
				return first, nil
			}
			// Best effort: the next listing says whether it took.
			_, err = adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, off)
		}
		if err := pollWait(ctx, err, why); err != nil {
			return max(first, 0), err
		}
	}
}

// waitInSync waits until every partition of topics, __consumer_offsets and
// __transaction_state has all its replicas in its ISR.
func waitInSync(ctx context.Context, adm *kadm.Client, topics []string) error {
	for {
		_, why, err := partitionsWhere(ctx, adm, topics, func(p kadm.PartitionDetail) string {
			if len(p.ISR) < len(p.Replicas) {
				return fmt.Sprintf("isr %v of %v", p.ISR, p.Replicas)
			}
			return ""
		})
		if err == nil && len(why) == 0 {
			return nil
		}
		if err := pollWait(ctx, err, why); err != nil {
			return err
		}
	}
}

// partitionsWhere lists the partitions of topics, __consumer_offsets and
// __transaction_state for which bad says what is wrong: as a set, and as
// "topic-partition what" lines.
func partitionsWhere(ctx context.Context, adm *kadm.Client, topics []string, bad func(kadm.PartitionDetail) string) (kadm.TopicsSet, []string, error) {
	details, err := adm.ListTopicsWithInternal(ctx, append(slices.Clone(topics), "__consumer_offsets", "__transaction_state")...)
	if err != nil {
		return nil, nil, err
	}
	set := kadm.TopicsSet{}
	var why []string
	for _, d := range details.Sorted() {
		if d.Err != nil {
			continue
		}
		for _, p := range d.Partitions.Sorted() {
			if w := bad(p); w != "" {
				set.Add(d.Topic, p.Partition)
				why = append(why, fmt.Sprintf("%s-%d %s", d.Topic, p.Partition, w))
			}
		}
	}
	return set, why, nil
}

// pollWait waits before the next poll of partitionsWhere; when ctx ends
// first it returns why, with the last error and an example partition.
func pollWait(ctx context.Context, err error, why []string) error {
	select {
	case <-ctx.Done():
		if len(why) > 0 {
			err = errors.Join(err, fmt.Errorf("%d partitions, e.g. %s", len(why), why[0]))
		}
		return errors.Join(err, ctx.Err())
	case <-time.After(250 * time.Millisecond):
		return nil
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimPrefix(s, "kafka-local: ")
}

// runTopics lists the run's topics.
func runTopics(t kafkaconfig.Topics) []string {
	return []string{t.Requests(), t.Tasks(string(Route)), t.Results(), t.Replies(), t.State(), t.DLQ()}
}
