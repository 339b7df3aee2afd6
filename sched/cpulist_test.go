package sched

import (
	"reflect"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	got, err := ParseCPUList("1-3,5,2")
	if err != nil || !reflect.DeepEqual(got, []int{1, 2, 3, 5}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "3-1", "x", "-1", "1,,a"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
