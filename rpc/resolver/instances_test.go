package resolver

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/resolver"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/rpc/balancer"
)

func inst(id string, health zrpcpb.Health, zone string) *zrpcpb.Instance {
	return &zrpcpb.Instance{Id: id, Service: "echo.rpc", Address: "10.0.0." + id + ":9000", Health: health, Zone: zone}
}

func put(in *zrpcpb.Instance) *zrpcpb.Event {
	return &zrpcpb.Event{Type: zrpcpb.Event_PUT, Instance: in}
}

func del(in *zrpcpb.Instance) *zrpcpb.Event {
	return &zrpcpb.Event{Type: zrpcpb.Event_DELETE, Instance: in}
}

func snapshot(evs ...*zrpcpb.Event) *zrpcpb.WatchResponse {
	return &zrpcpb.WatchResponse{Snapshot: true, Events: evs}
}

func events(evs ...*zrpcpb.Event) *zrpcpb.WatchResponse {
	return &zrpcpb.WatchResponse{Events: evs}
}

// addrsOf returns the Addr of each address, in order.
func addrsOf(addrs []resolver.Address) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.Addr)
	}
	return out
}

func TestInstanceSetApply(t *testing.T) {
	const (
		pass = zrpcpb.Health_PASSING
		crit = zrpcpb.Health_CRITICAL
		warn = zrpcpb.Health_WARNING
	)
	tests := []struct {
		name  string
		resps []*zrpcpb.WatchResponse
		sel   selection
		want  []string
	}{
		{
			name:  "snapshot sets the list",
			resps: []*zrpcpb.WatchResponse{snapshot(put(inst("1", pass, "")), put(inst("2", pass, "")))},
			want:  []string{"10.0.0.1:9000", "10.0.0.2:9000"},
		},
		{
			name: "snapshot replaces everything known",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", pass, "")), put(inst("2", pass, ""))),
				snapshot(put(inst("3", pass, ""))),
			},
			want: []string{"10.0.0.3:9000"},
		},
		{
			name: "empty snapshot empties the list",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", pass, ""))),
				snapshot(),
			},
			want: nil,
		},
		{
			name: "put adds",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", pass, ""))),
				events(put(inst("2", pass, ""))),
			},
			want: []string{"10.0.0.1:9000", "10.0.0.2:9000"},
		},
		{
			name: "put updates health",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", pass, "")), put(inst("2", pass, ""))),
				events(put(inst("1", crit, ""))),
			},
			want: []string{"10.0.0.2:9000"},
		},
		{
			name: "put makes an instance passing again",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", crit, ""))),
				events(put(inst("1", pass, ""))),
			},
			want: []string{"10.0.0.1:9000"},
		},
		{
			name: "delete removes",
			resps: []*zrpcpb.WatchResponse{
				snapshot(put(inst("1", pass, "")), put(inst("2", pass, ""))),
				events(del(inst("2", pass, ""))),
			},
			want: []string{"10.0.0.1:9000"},
		},
		{
			name: "events apply in order",
			resps: []*zrpcpb.WatchResponse{
				snapshot(),
				events(put(inst("1", pass, "")), del(inst("1", pass, "")), put(inst("2", pass, ""))),
			},
			want: []string{"10.0.0.2:9000"},
		},
		{
			name: "only passing instances are routable",
			resps: []*zrpcpb.WatchResponse{snapshot(
				put(inst("1", pass, "")), put(inst("2", crit, "")),
				put(inst("3", warn, "")), put(inst("4", zrpcpb.Health_HEALTH_UNSPECIFIED, "")),
			)},
			want: []string{"10.0.0.1:9000"},
		},
		{
			name:  "filter drops instances",
			resps: []*zrpcpb.WatchResponse{snapshot(put(inst("1", pass, "a")), put(inst("2", pass, "b")))},
			sel:   selection{filter: func(in *zrpcpb.Instance) bool { return in.GetZone() == "b" }},
			want:  []string{"10.0.0.2:9000"},
		},
		{
			name:  "preferred zone wins when it has passing instances",
			resps: []*zrpcpb.WatchResponse{snapshot(put(inst("1", pass, "a")), put(inst("2", pass, "b")), put(inst("3", pass, "b")))},
			sel:   selection{preferZone: "b"},
			want:  []string{"10.0.0.2:9000", "10.0.0.3:9000"},
		},
		{
			name:  "preferred zone falls back to all when it has none passing",
			resps: []*zrpcpb.WatchResponse{snapshot(put(inst("1", pass, "a")), put(inst("2", crit, "b")), put(inst("3", pass, "c")))},
			sel:   selection{preferZone: "b"},
			want:  []string{"10.0.0.1:9000", "10.0.0.3:9000"},
		},
		{
			name:  "preferred zone applies after the filter",
			resps: []*zrpcpb.WatchResponse{snapshot(put(inst("1", pass, "a")), put(inst("2", pass, "b")), put(inst("3", pass, "c")))},
			sel: selection{
				filter:     func(in *zrpcpb.Instance) bool { return in.GetZone() != "b" },
				preferZone: "b",
			},
			want: []string{"10.0.0.1:9000", "10.0.0.3:9000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newInstanceSet()
			for _, r := range tt.resps {
				s.apply(r)
			}
			if got := addrsOf(s.addresses(tt.sel)); !slices.Equal(got, tt.want) {
				t.Fatalf("addresses = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInstanceAddressCarriesAttributes(t *testing.T) {
	in := &zrpcpb.Instance{
		Id: "1", Address: "10.0.0.1:9000", Health: zrpcpb.Health_PASSING,
		Weight: 7, Zone: "z1", Version: "v2", Tags: []string{"canary", "blue"},
		Metadata: map[string]string{"shard": "3"},
	}
	s := newInstanceSet()
	s.apply(snapshot(put(in)))
	addrs := s.addresses(selection{})
	if len(addrs) != 1 {
		t.Fatalf("got %d addresses, want 1", len(addrs))
	}
	got := balancer.AttributesOf(addrs[0])
	if got.Weight != 7 || got.Zone != "z1" || got.Version != "v2" ||
		!slices.Equal(got.Tags, in.Tags) || !maps.Equal(got.Metadata, in.Metadata) {
		t.Fatalf("attributes = %+v, want those of %v", got, in)
	}
}

func TestFilters(t *testing.T) {
	in := &zrpcpb.Instance{Version: "v2", Tags: []string{"canary", "blue"}}
	tests := []struct {
		name   string
		filter Filter
		want   bool
	}{
		{"version listed", VersionFilter("v1", "v2"), true},
		{"version not listed", VersionFilter("v1"), false},
		{"no versions", VersionFilter(), false},
		{"all tags present", TagFilter("blue", "canary"), true},
		{"one tag missing", TagFilter("blue", "green"), false},
		{"no tags required", TagFilter(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter(in); got != tt.want {
				t.Fatalf("filter(%v) = %v, want %v", in, got, tt.want)
			}
		})
	}
}

func TestWithFilterCombines(t *testing.T) {
	var o options
	WithFilter(VersionFilter("v2"))(&o)
	WithFilter(TagFilter("canary"))(&o)
	for _, tt := range []struct {
		in   *zrpcpb.Instance
		want bool
	}{
		{&zrpcpb.Instance{Version: "v2", Tags: []string{"canary"}}, true},
		{&zrpcpb.Instance{Version: "v1", Tags: []string{"canary"}}, false},
		{&zrpcpb.Instance{Version: "v2"}, false},
	} {
		if got := o.filter(tt.in); got != tt.want {
			t.Errorf("filter(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRetryDelayBounds(t *testing.T) {
	for n := range 40 {
		if d := retryDelay(n); d < watchRetryMin || d > watchRetryMax {
			t.Fatalf("retryDelay(%d) = %s, want within [%s, %s]", n, d, watchRetryMin, watchRetryMax)
		}
	}
}

func TestParseDirect(t *testing.T) {
	tests := []struct {
		list    string
		want    []string
		wantErr string // substring of the error; "" means no error
	}{
		{list: "127.0.0.1:9001,127.0.0.1:9002", want: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		{list: "[::1]:9001", want: []string{"[::1]:9001"}},
		{list: "", wantErr: "no addresses"},
		{list: "127.0.0.1:9001,bogus", wantErr: `"bogus"`},
		{list: ":9001", wantErr: `":9001"`},
		{list: "h:0", wantErr: `"h:0"`},
		{list: "h:70000", wantErr: `"h:70000"`},
		{list: "h:x", wantErr: `"h:x"`},
	}
	for _, tt := range tests {
		t.Run(tt.list, func(t *testing.T) {
			addrs, err := parseDirect(tt.list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseDirect(%q) error = %v, want one containing %s", tt.list, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDirect(%q): %v", tt.list, err)
			}
			if got := addrsOf(addrs); !slices.Equal(got, tt.want) {
				t.Fatalf("parseDirect(%q) = %v, want %v", tt.list, got, tt.want)
			}
		})
	}
}

func TestUnroutableSaysWhy(t *testing.T) {
	s := newInstanceSet()
	if got, want := s.unroutable("user.rpc", selection{}), "the registry has no instance of user.rpc"; got != want {
		t.Errorf("empty set: %q, want %q", got, want)
	}
	down := inst("u1", zrpcpb.Health_CRITICAL, "")
	down.HealthOutput = "gRPC health check of 10.0.0.5:9000 failed: Unavailable: connection refused"
	s.apply(snapshot(put(down)))
	if got, want := s.unroutable("user.rpc", selection{}),
		"the one instance of user.rpc is not routable: u1 critical (gRPC health check of 10.0.0.5:9000 failed: Unavailable: connection refused)"; got != want {
		t.Errorf("one critical instance: %q, want %q", got, want)
	}
	s.apply(events(put(inst("u2", zrpcpb.Health_PASSING, "eu")), put(inst("u3", zrpcpb.Health_WARNING, "")),
		put(inst("u4", zrpcpb.Health_CRITICAL, ""))))
	onlyUS := selection{filter: func(in *zrpcpb.Instance) bool { return in.GetZone() == "us" }}
	got := s.unroutable("user.rpc", onlyUS)
	want := "none of the 4 instances of user.rpc is routable: u1 critical (gRPC health check of 10.0.0.5:9000 failed: Unavailable: connection refused); " +
		"u2 left out by this client's filter; u3 warning; 1 more"
	if got != want {
		t.Errorf("four instances:\n%q\nwant\n%q", got, want)
	}
}
