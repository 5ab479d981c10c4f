package storage

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "models/v3.bin", "a-b_c.d+e/f", strings.Repeat("x", MaxNameLen)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "a/../b", "./a", "/a", "a/", "a//b", "a b", "ä", "a\x00", "a\\b", strings.Repeat("x", MaxNameLen+1)} {
		err := ValidateName(bad)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func members(alive, dead int) []Member {
	var out []Member
	for i := range alive + dead {
		out = append(out, Member{Name: string(rune('a' + i)), Alive: i < alive})
	}
	return out
}

func TestChooseScheme(t *testing.T) {
	for _, tc := range []struct {
		name        string
		h           *pb.BlobPutHeader
		alive, dead int
		want        Scheme
		wantErr     error
	}{
		{"default one agent", &pb.BlobPutHeader{}, 1, 0, Scheme{1, 0}, nil},
		{"default three", &pb.BlobPutHeader{}, 3, 0, Scheme{2, 1}, nil},
		{"default five, one down keeps 3+2", &pb.BlobPutHeader{}, 4, 1, Scheme{3, 2}, nil},
		{"default three, one down cannot store k+1", &pb.BlobPutHeader{}, 2, 1, Scheme{2, 1}, ErrNotEnoughShards},
		{"explicit fits", &pb.BlobPutHeader{DataShards: 2, ParityShards: 2}, 4, 0, Scheme{2, 2}, nil},
		{"explicit too wide", &pb.BlobPutHeader{DataShards: 3, ParityShards: 2}, 3, 0, Scheme{3, 2}, ErrNotEnoughShards},
		{"explicit too wide, best effort", &pb.BlobPutHeader{DataShards: 2, ParityShards: 2, BestEffort: true}, 3, 0, Scheme{2, 2}, nil},
		{"best effort still needs k+1", &pb.BlobPutHeader{DataShards: 3, ParityShards: 2, BestEffort: true}, 3, 0, Scheme{3, 2}, ErrNotEnoughShards},
		{"no data shards", &pb.BlobPutHeader{ParityShards: 1}, 3, 0, Scheme{0, 1}, ErrInvalidArgument},
		{"more than 256", &pb.BlobPutHeader{DataShards: 200, ParityShards: 100}, 3, 0, Scheme{200, 100}, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseScheme(tc.h, members(tc.alive, tc.dead))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("chooseScheme: %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("chooseScheme = %s, want %s", got, tc.want)
			}
		})
	}
}
