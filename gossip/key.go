package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// keySize is the length of keys GenerateKey makes (AES-256).
const keySize = 32

// GenerateKey returns a new random 32-byte gossip encryption key, base64
// encoded (what `zrpcd keygen` prints and ParseKey reads).
func GenerateKey() (string, error) {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// ParseKey decodes a base64 gossip encryption key and checks that it is 16,
// 24 or 32 bytes long (AES-128, -192 or -256). Surrounding white space is
// ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("encryption key is empty; generate one with `zrpcd keygen`")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("encryption key is not valid base64 (generate one with `zrpcd keygen`): %w", err)
	}
	if err := checkKeyLen(len(key)); err != nil {
		return nil, err
	}
	return key, nil
}

func checkKeyLen(n int) error {
	switch n {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("encryption key is %d bytes long; it must be 16, 24 or 32 bytes (AES-128, AES-192 or AES-256) before base64 encoding", n)
}
