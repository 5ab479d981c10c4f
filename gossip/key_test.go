package gossip

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name    string
		in      string
		wantLen int    // when valid
		wantErr string // in the error otherwise
	}{
		{"aes-128", b64(16), 16, ""},
		{"aes-192", b64(24), 24, ""},
		{"aes-256", b64(32), 32, ""},
		{"surrounding space", "  " + b64(32) + "\n", 32, ""},
		{"empty", "", 0, "empty"},
		{"not base64", "not base64!", 0, "not valid base64"},
		{"url alphabet", strings.ReplaceAll(strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb}), "+", "-"), "/", "_"), 0, "not valid base64"},
		{"too short", b64(15), 0, "is 15 bytes long; it must be 16, 24 or 32"},
		{"between", b64(20), 0, "is 20 bytes long"},
		{"too long", b64(33), 0, "is 33 bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseKey(tt.in)
			if tt.wantErr == "" {
				if err != nil || len(key) != tt.wantLen {
					t.Fatalf("ParseKey = %d bytes, %v; want %d bytes", len(key), err, tt.wantLen)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseKey error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestGenerateKeyRoundTrips(t *testing.T) {
	s1, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if s1 == s2 {
		t.Error("two generated keys are equal")
	}
	key, err := ParseKey(s1)
	if err != nil || len(key) != 32 {
		t.Fatalf("ParseKey(GenerateKey()) = %d bytes, %v; want 32 bytes", len(key), err)
	}
	if base64.StdEncoding.EncodeToString(key) != s1 {
		t.Error("key does not re-encode to the generated string")
	}
}
