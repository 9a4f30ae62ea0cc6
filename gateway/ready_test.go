package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// adminServer serves checks on /readyz, as the gateway command's admin
// port does, until the test ends; it returns the base URL.
func adminServer(t *testing.T, checks ...metrics.Check) string {
	t.Helper()
	srv, err := metrics.NewServer(metrics.ServerConfig{Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

// readyz returns the status and body of GET url/readyz.
func readyz(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := httpClient.Get(url + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// waitReadyz polls url/readyz until it answers status with a body that
// contains says, for at most within; it returns how long that took.
func waitReadyz(t *testing.T, url string, status int, says string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		code, body := readyz(t, url)
		if code == status && strings.Contains(body, says) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("/readyz still %d %q after %s; want %d saying %q", code, body, within, status, says)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadyzFollowsTheBroker: the admin port's /readyz turns 503 within a
// few seconds of the broker going away (here: kfake closed, the port
// refusing connections), naming the reason, and 200 again once a broker
// answers on the same address (kfake restarted on the port with its data
// directory); the gateway then takes requests again. The default ping
// settings are used. kfake only: the test stops the broker itself.
func TestReadyzFollowsTheBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	start := func() *kfake.Cluster {
		t.Helper()
		for i := 0; ; i++ {
			fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(testkafka.KfakeConfigs()),
				kfake.Ports(port), kfake.DataDir(dir))
			if err == nil {
				t.Cleanup(fake.Close)
				return fake
			}
			if i == 50 { // the port may be held a moment after Close
				t.Fatalf("start kfake on port %d: %v", port, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fake := start()
	table, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cc: kafkaconfig.Client{Brokers: fake.ListenAddrs(), ClientID: "gateway-test"}, topics: kafkaconfig.Topics{Prefix: "t.readyz."}, table: table}
	if err := stack.EnsureTopics(t.Context(), e.cc, e.topics, layout, table.Names()); err != nil {
		t.Fatalf("topics: %v", err)
	}
	s := e.startGateway(t, nil)
	admin := adminServer(t, metrics.Check{Name: "gateway", Ready: s.Ready})
	waitReadyz(t, admin, http.StatusOK, "ready", 20*time.Second)

	fake.Close()
	took := waitReadyz(t, admin, http.StatusServiceUnavailable, "Kafka unreachable", 5*time.Second)
	t.Logf("503 %s after the broker stopped", took)

	start()
	took = waitReadyz(t, admin, http.StatusOK, "ready", 15*time.Second)
	t.Logf("200 %s after the broker came back", took)
	res := post(t, s.url+"/v1/routes/echo/requests", `{"after":"restart"}`)
	wantStatus(t, res, http.StatusAccepted)
}

// TestReadyNamesMissingTopics: a gateway started before its topics exist
// is not ready, and says which topics are missing; it is ready once they
// are created.
func TestReadyNamesMissingTopics(t *testing.T) {
	c := testkafka.New(t)
	table, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cluster: c, cc: kafkaconfig.Client{Brokers: c.Brokers, ClientID: "gateway-test"}, topics: kafkaconfig.Topics{Prefix: c.Prefix}, table: table}
	s := e.startGateway(t, nil)
	admin := adminServer(t, metrics.Check{Name: "gateway", Ready: s.Ready})
	waitReadyz(t, admin, http.StatusServiceUnavailable, "topics do not exist: "+e.topics.Requests()+", "+e.topics.Replies(), 10*time.Second)
	if err := stack.EnsureTopics(t.Context(), e.cc, e.topics, layout, table.Names()); err != nil {
		t.Fatalf("topics: %v", err)
	}
	waitReadyz(t, admin, http.StatusOK, "ready", 20*time.Second)
}
