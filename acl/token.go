package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/zrpcio/zrpc/api/apierr"
)

// Token secrets are 256 random bits, written as "zrpc_" and 64 hex digits;
// the registry keeps only their SHA-256. Accessor ids are 128 random bits
// in hex: they name a token and grant nothing.
const (
	secretPrefix   = "zrpc_"
	secretBytes    = 32
	accessorBytes  = 16
	maxPolicyName  = 128
	maxDescription = 256
)

// Token is a token as the registry keeps it.
type Token struct {
	AccessorID string
	SecretHash [sha256.Size]byte
	Policies   []string
}

// NewToken returns a token carrying policies and its secret, which is
// shown once and never stored.
func NewToken(policies ...string) (Token, string, error) {
	raw := make([]byte, secretBytes+accessorBytes)
	if _, err := rand.Read(raw); err != nil {
		return Token{}, "", fmt.Errorf("generate token: %w", err)
	}
	secret := secretPrefix + hex.EncodeToString(raw[:secretBytes])
	return Token{
		AccessorID: hex.EncodeToString(raw[secretBytes:]),
		SecretHash: HashSecret(secret),
		Policies:   append([]string(nil), policies...),
	}, secret, nil
}

// HashSecret is what the registry stores of a secret, and looks tokens up
// by.
func HashSecret(secret string) [sha256.Size]byte {
	return sha256.Sum256([]byte(secret))
}

// ValidAccessorID reports whether id has the form of an accessor id.
func ValidAccessorID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == accessorBytes && strings.ToLower(id) == id
}

var policyNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidatePolicyName checks a policy name, naming field in the error.
func ValidatePolicyName(field, name string) error {
	if name == "" || len(name) > maxPolicyName || !policyNameRE.MatchString(name) {
		return apierr.Invalid(field, "%q is not a policy name (1-%d letters, digits, '.', '_' or '-')", name, maxPolicyName)
	}
	return nil
}

// ValidateDescription checks a policy's or token's description.
func ValidateDescription(field, d string) error {
	if len(d) > maxDescription {
		return apierr.Invalid(field, "is %d bytes, the limit is %d", len(d), maxDescription)
	}
	return nil
}
