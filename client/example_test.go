package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The Go client: Do sends a request and waits for its reply; Submit sends
// one and returns, Await waits for its reply later, so that several requests
// run at once. A pipeline that echoes every request on two shards
// (startEchoPipeline) answers them.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, topics, closeKafka := startKafka(ctx, "echo")
	defer closeKafka()
	stopPipeline := startEchoPipeline(ctx, kc, topics, "echo")
	defer stopPipeline()

	c, err := client.New(ctx, client.Config{Client: kc, Topics: topics})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Do: one request, one reply.
	reply, err := c.Do(ctx, "echo", []byte(`{"n":1}`), client.Options{Timeout: 5 * time.Second})
	switch {
	case errors.Is(err, client.ErrTimeout):
		log.Fatal("no reply by the timeout plus Config.Grace: is a role down?")
	case err != nil:
		log.Fatal(err)
	}
	printReply(reply)

	// Submit, then Await: the two requests are in flight together.
	var pending []*client.Pending
	for _, payload := range []string{`{"n":2}`, `{"n":3}`} {
		p, err := c.Submit(ctx, "echo", []byte(payload), client.Options{})
		if err != nil {
			log.Fatal(err)
		}
		pending = append(pending, p)
	}
	for _, p := range pending {
		reply, err := p.Await(ctx)
		if err != nil {
			log.Fatal(err)
		}
		printReply(reply)
	}
	// Output:
	// COMPLETE [{"n":1},{"n":1}]
	//   shard-0 OK
	//   shard-1 OK
	// COMPLETE [{"n":2},{"n":2}]
	//   shard-0 OK
	//   shard-1 OK
	// COMPLETE [{"n":3},{"n":3}]
	//   shard-0 OK
	//   shard-1 OK
}

// printReply prints a reply's status, its merged payload and every part. A
// reply that is not COMPLETE is PARTIAL (some parts OK) or FAILED (none):
// its payload merges the OK parts only, and its parts say what the others
// are (ERROR, EXPIRED, MISSING, SKIPPED).
func printReply(r schemas.Reply) {
	fmt.Println(r.Status, string(r.Payload))
	for _, p := range r.Parts {
		if p.Status == schemas.PartOK {
			fmt.Printf("  %s %s\n", p.PartID, p.Status)
		} else {
			fmt.Printf("  %s %s: %s\n", p.PartID, p.Status, p.Error)
		}
	}
}

// startKafka starts an in-process Kafka broker (kfake) and creates the
// pipeline's topics for routes, one partition each.
func startKafka(ctx context.Context, routes ...string) (kafkaconfig.Client, kafkaconfig.Topics, func()) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	kc := kafkaconfig.Client{Brokers: fake.ListenAddrs()}
	topics := kafkaconfig.Topics{Prefix: "sg."}
	layout := kafkaconfig.Layout{Partitions: 1, ResultPartitions: 1, ReplicationFactor: -1}
	if _, err := kafkaconfig.CreateTopics(ctx, kc, topics, layout, routes); err != nil {
		log.Fatal(err)
	}
	return kc, topics, fake.Close
}

// startEchoPipeline runs a scatterer that sends every request of route to
// two shards, a processor that answers each with the request's payload and
// an aggregator that collects the answers into a JSON array. The function it
// returns stops them.
func startEchoPipeline(ctx context.Context, kc kafkaconfig.Client, topics kafkaconfig.Topics, route schemas.Route) (stop func()) {
	role := kafkaconfig.Role{Client: kc, Topics: topics}
	s, err := scatterer.New(scatterer.Config{Role: role, Routes: []scatterer.Route{{Name: route, Mode: scatterer.Split, Fanout: 2}}})
	if err != nil {
		log.Fatal(err)
	}
	p, err := processor.New(processor.Config{Role: role, Route: route}, processor.Echo())
	if err != nil {
		log.Fatal(err)
	}
	a, err := aggregator.New(aggregator.Config{Role: role})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{s.Run, p.Run, a.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Print(err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
