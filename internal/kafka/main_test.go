package kafka_test

import (
	"testing"

	"github.com/scattergather/scattergather/internal/testkafka"
)

func TestMain(m *testing.M) { testkafka.Main(m) }
