package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

func benchID(i int) schemas.CorrelationID {
	return schemas.CorrelationID(fmt.Sprintf("%08x-4b1e-9c2d-8f3a-%012x", i, i*7919))
}

func benchParts(n int) []schemas.PartID {
	ps := make([]schemas.PartID, n)
	for i := range ps {
		ps[i] = schemas.PartID(fmt.Sprintf("shard-%d", i))
	}
	return ps
}

// BenchmarkAddPart measures adding one OK result to an open request that it
// does not complete: the map lookup, the part lookup, the undo log and the
// slot; with changelog, also the batch's changelog record for the part (the
// key and the entry encoded into the batch's buffer, the kgo.Record and
// Batch.ProduceState), as Run does before the batch commits. Avro decoding
// and producing to Kafka are not included. Batches of the given size
// commit.
func BenchmarkAddPart(b *testing.B) {
	const (
		requests = 1024
		nParts   = 16
		added    = nParts - 1 // never complete
	)
	for _, changelog := range []bool{false, true} {
		for _, batch := range []int{1, 500} {
			b.Run(fmt.Sprintf("changelog=%t/batch=%d", changelog, batch), func(b *testing.B) {
				m := newMachine(time.Minute, func(schemas.Route) Merge { return Collect() })
				a := &Aggregator{cfg: Config{Role: kafkaconfig.Role{Topics: kafkaconfig.Topics{Prefix: "sg."}}}, m: m}
				ps := m.assign(0)
				now := epoch
				partIDs := benchParts(nParts)
				results := make([]schemas.Result, 0, requests*added)
				for part := range added {
					for r := range requests {
						results = append(results, schemas.Result{
							CorrelationID: benchID(r), PartID: partIDs[part], Status: schemas.ResultOK,
							Payload: []byte(`{"hits":[1,2,3]}`), ProcessorID: "proc-1", Attempt: 1,
						})
					}
				}
				for r := range requests {
					m.manifest(ps, now, schemas.Manifest{CorrelationID: benchID(r), Parts: partIDs, Deadline: now.Add(time.Hour), Policy: "all"}, nil)
				}
				m.commit()
				commit := func() {
					if changelog {
						if err := m.changelog(); err != nil {
							b.Fatal(err)
						}
						a.produceChangelog(&kafka.Batch{})
					}
					m.commit()
				}
				src := &kgo.Record{}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					j := i % len(results)
					if j == 0 && i > 0 {
						b.StopTimer()
						commit()
						for _, r := range ps.reqs {
							clear(r.slots)
							r.got, r.ok = 0, 0
						}
						b.StartTimer()
					}
					m.result(ps, now, results[j], src)
					if (i+1)%batch == 0 {
						commit()
					}
				}
				b.StopTimer()
				if len(m.out) != 0 {
					b.Fatalf("%d records produced; no request should complete", len(m.out))
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "results/s")
			})
		}
	}
}

// BenchmarkComplete measures one whole request: its manifest, one OK result
// per part, the completion with the Collect merge and, its deadline and a
// late window later, forgetting it. Reply encoding is not included (see the encode case).
func BenchmarkComplete(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		for _, encode := range []bool{false, true} {
			name := fmt.Sprintf("parts=%d", n)
			if encode {
				name += "/encode"
			}
			b.Run(name, func(b *testing.B) {
				m := newMachine(time.Millisecond, func(schemas.Route) Merge { return Collect() })
				ps := m.assign(0)
				partIDs := benchParts(n)
				payload := []byte(`{"hits":[1,2,3]}`)
				src := &kgo.Record{}
				now := epoch
				ids := make([]schemas.CorrelationID, 1024)
				for i := range ids {
					ids[i] = benchID(i)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					id := ids[i%len(ids)]
					m.manifest(ps, now, schemas.Manifest{CorrelationID: id, Route: "r", Parts: partIDs, Deadline: now.Add(time.Millisecond), Policy: "all", SubmittedAt: now}, src)
					for _, p := range partIDs {
						m.result(ps, now, schemas.Result{CorrelationID: id, PartID: p, Status: schemas.ResultOK, Payload: payload, Attempt: 1}, src)
					}
					if len(m.out) != 1 || m.out[0].reply.Status != schemas.ReplyComplete {
						b.Fatalf("outputs: %+v", m.out)
					}
					if encode {
						if _, err := schemas.EncodeReply(m.out[0].reply); err != nil {
							b.Fatal(err)
						}
					}
					m.out = m.out[:0]
					// A done request is remembered until its deadline
					// plus the late window (1ms each here).
					now = now.Add(2 * time.Millisecond)
					m.tick(now) // forgets the request
					m.commit()
				}
				b.StopTimer()
				if len(ps.reqs) > 1 {
					b.Fatalf("%d requests remembered", len(ps.reqs))
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
			})
		}
	}
}
