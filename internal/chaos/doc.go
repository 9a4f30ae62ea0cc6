// Package chaos is the fault-injection harness behind `scattergather
// chaos`: it runs the pipeline's roles as separate OS processes, loads them
// with requests, kills them with SIGKILL at random moments (restarting each
// with the same instance id, so that it fences its zombie), and then checks
// from the topics that every request got exactly one right reply.
//
// Usage:
//
//	h, err := chaos.New(chaos.Config{
//		Requests: 2000, Kills: 6, Guarantee: kafkaconfig.ExactlyOnce,
//		Brokers:  nil, // start `scattergather broker` (kfake) as a process of its own
//	})
//	if err != nil { ... }
//	rep, err := h.Run(ctx) // prints progress, then rep.Line() last
//	if err == nil && !rep.OK() { ... } // lost, wrong or (exactly-once) duplicated
//
// # Processes
//
// Config.Exe (default: this binary) is re-executed as `broker` (unless
// Config.Brokers names one), `scatterer`, `processor` (the sleep handler,
// Config.Processors of them) and `aggregator` (Config.Aggregators), each
// with --instance-id <role>-<n>, its output appended to <log dir>/<name>.log.
// Each child runs in a process group of its own and, on Linux, is killed by
// the kernel if the harness dies; every child has exited when Run returns,
// also when ctx is cancelled (SIGINT). A keeper goroutine per child restarts
// it when it exits on its own (counted as an unexpected exit, which fails the
// run) and carries out the schedule's signals. Config.Fences and
// Config.Kicks add faults done through the broker to a role left running
// (its transactional id initialised by the harness, its member removed
// from the group): the role must recover by itself.
//
// # The check
//
// A live observer reads results and replies with read_committed while the
// run goes on, noting when each record became visible, and samples the
// aggregator group's committed offsets. After the load, the drain and a
// SIGTERM to every role, the harness reads tasks, results and replies from
// the start and counts, per request: lost (no reply; or a part with no task
// or result), duplicated (replies beyond one; under exactly-once also any
// manifest, task or result committed twice) and wrong (a reply whose parts,
// status or merged payload do not match the committed results, or that marks
// a part MISSING when it was not: see whyMissing and docs/guarantees.md).
//
// # Broker faults
//
// The kfake broker is never killed unless Config.BrokerKills asks for it: a
// transaction open when the kfake process dies is not recovered the way
// Kafka recovers it (internal/embedded's regression test).
//
// On a real cluster run by scripts/kafka-local.sh (Config.Brokers and
// Config.KafkaLocal), Config.BrokerKills and Config.BrokerBounces kill or
// cleanly stop a random node at random moments of the load, one at a time,
// through the script (kill N, stop-node N, start-node N), which knows the
// nodes' pids, configs and data dirs; the harness checks first that the
// script's cluster is the one at Config.Brokers, and that one node down
// stops no write (brokers.go). Each fault is in Report.BrokerFaults.
package chaos
