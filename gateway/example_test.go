package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
)

// The HTTP gateway in front of a pipeline that echoes every request on two
// shards (startEchoPipeline). It takes the scatterer's route table, so that
// it refuses unknown routes and out-of-range timeouts before they reach
// Kafka. A POST with ?wait= answers with the reply when it comes in time.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, topics, closeKafka := startKafka(ctx, "echo")
	defer closeKafka()
	routes := []scatterer.Route{{Name: "echo", Mode: scatterer.Split, Fanout: 2}}
	stopPipeline := startEchoPipeline(ctx, kc, topics, routes)
	defer stopPipeline()

	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port
	if err != nil {
		log.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Client: kc, Topics: topics, Routes: routes, Listener: ln})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }() // until ctx ends

	url := "http://" + ln.Addr().String() + "/v1/routes/echo/requests?wait=5s"
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"hello":"world"}`))
	if err != nil {
		log.Fatal(err)
	}
	var reply client.ReplyView
	err = json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.StatusCode, resp.Header.Get(gateway.HeaderReplyStatus))
	fmt.Println(string(reply.Payload))
	for _, p := range reply.Parts {
		fmt.Println(p.PartID, p.Status)
	}

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 200 COMPLETE
	// [{"hello":"world"},{"hello":"world"}]
	// shard-0 OK
	// shard-1 OK
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

// startEchoPipeline runs a scatterer for routes, a processor per route that
// answers each part with the request's payload, and an aggregator that
// collects the answers into a JSON array. The function it returns stops
// them.
func startEchoPipeline(ctx context.Context, kc kafkaconfig.Client, topics kafkaconfig.Topics, routes []scatterer.Route) (stop func()) {
	role := kafkaconfig.Role{Client: kc, Topics: topics}
	s, err := scatterer.New(scatterer.Config{Role: role, Routes: routes})
	if err != nil {
		log.Fatal(err)
	}
	a, err := aggregator.New(aggregator.Config{Role: role})
	if err != nil {
		log.Fatal(err)
	}
	runs := []func(context.Context) error{s.Run, a.Run}
	for _, r := range routes {
		p, err := processor.New(processor.Config{Role: role, Route: r.Name}, processor.Echo())
		if err != nil {
			log.Fatal(err)
		}
		runs = append(runs, p.Run)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Print(err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
