package methodtable

import (
	"fmt"
	"testing"
)

// TestTableSharesOneValuePastMax: the first Max methods get a value each,
// labelled with their name; every method after them shares Other's; a
// method seen before keeps its own.
func TestTableSharesOneValuePastMax(t *testing.T) {
	var tab Table[*string]
	made := 0
	get := func(method string) string {
		return *tab.Get(method, func(label string) *string { made++; return &label })
	}
	for i := range Max {
		if got := get(fmt.Sprintf("/svc/M%d", i)); got != fmt.Sprintf("/svc/M%d", i) {
			t.Fatalf("method %d labelled %q", i, got)
		}
	}
	for _, m := range []string{"/stranger/A", "/stranger/B", "/stranger/C"} {
		if got := get(m); got != Other {
			t.Fatalf("%s past %d methods labelled %q, want %q", m, Max, got, Other)
		}
	}
	if got := get("/svc/M0"); got != "/svc/M0" {
		t.Fatalf("a method seen before, after the table filled, labelled %q", got)
	}
	if made != Max+1 || tab.Len() != Max+1 {
		t.Fatalf("%d values made, %d held; want %d", made, tab.Len(), Max+1)
	}
}
