package gateway

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// TestInflight: requests count until released or expired; above the limit
// acquire refuses; an expiry frees a slot exactly at its time, and a
// release before it stops the expiry from counting.
func TestInflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newInflight(2)
		now := time.Now()
		if !f.acquire("a", now.Add(time.Second), now) || !f.acquire("b", now.Add(3*time.Second), now) {
			t.Fatal("acquire under the limit refused")
		}
		if !f.full(now) || f.acquire("c", now.Add(time.Second), now) {
			t.Fatal("acquire above the limit accepted")
		}
		f.release("b")
		if f.full(now) {
			t.Fatal("full after a release")
		}
		if !f.acquire("c", now.Add(2*time.Second), now) {
			t.Fatal("acquire after a release refused")
		}

		time.Sleep(time.Second - time.Nanosecond)
		if n, exp := f.count(time.Now()); n != 2 || exp != 0 {
			t.Fatalf("just before a's expiry: %d counted, %d expired; want 2, 0", n, exp)
		}
		time.Sleep(time.Nanosecond)
		if n, exp := f.count(time.Now()); n != 1 || exp != 1 {
			t.Fatalf("at a's expiry: %d counted, %d expired; want 1, 1", n, exp)
		}
		// b was released before its expiry (3s): it does not count as
		// expired when its heap entry surfaces.
		time.Sleep(5 * time.Second)
		if n, exp := f.count(time.Now()); n != 0 || exp != 2 {
			t.Fatalf("after every expiry: %d counted, %d expired; want 0, 2 (a and c)", n, exp)
		}
		f.release("never-acquired")
	})
}

// TestInflightHeapBounded: released ids do not pile up in the expiry heap.
func TestInflightHeapBounded(t *testing.T) {
	f := newInflight(10)
	now := time.Now()
	for i := range 100_000 {
		id := schemas.CorrelationID(fmt.Sprint(i))
		if !f.acquire(id, now.Add(time.Hour), now) {
			t.Fatalf("acquire %d refused", i)
		}
		f.release(id)
	}
	if len(f.h) > 64+2 {
		t.Errorf("heap holds %d entries for %d in flight", len(f.h), len(f.m))
	}
}
