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

// Token secrets are 256 random bits, written as "zrpc_" and 64 lowercase
// hex digits; the registry keeps only their SHA-256. Accessor ids are 128
// bits in hex: they name a token and grant nothing. A token's accessor id
// is derived from its secret by a one-way hash apart from the stored one
// (AccessorID), so that a create retried with the same secret names the
// same token on any agent.
const (
	secretPrefix   = "zrpc_"
	secretBytes    = 32
	accessorBytes  = 16
	maxPolicyName  = 128
	maxDescription = 256
)

// accessorDomain separates the hash that derives accessor ids from
// HashSecret's.
const accessorDomain = "zrpc acl accessor id\x00"

// Token is a token as the registry keeps it.
type Token struct {
	AccessorID string
	SecretHash [sha256.Size]byte
	Policies   []string
}

// NewSecret returns a new random token secret. Clients make the secrets
// of the tokens they create, so that a create whose answer was lost can
// be sent again.
func NewSecret() (string, error) {
	raw := make([]byte, secretBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate token secret: %w", err)
	}
	return secretPrefix + hex.EncodeToString(raw), nil
}

// ValidateSecret checks that secret has the form NewSecret makes, naming
// field in the error (and never showing the secret).
func ValidateSecret(field, secret string) error {
	digits, ok := strings.CutPrefix(secret, secretPrefix)
	if b, err := hex.DecodeString(digits); !ok || err != nil || len(b) != secretBytes || strings.ToLower(digits) != digits {
		return apierr.Invalid(field, "is not a token secret (%q and %d lowercase hex digits)", secretPrefix, 2*secretBytes)
	}
	return nil
}

// NewToken returns a token carrying policies and its secret, which is
// shown once and never stored.
func NewToken(policies ...string) (Token, string, error) {
	secret, err := NewSecret()
	if err != nil {
		return Token{}, "", err
	}
	return TokenFor(secret, policies...), secret, nil
}

// TokenFor returns the token of a valid secret (ValidateSecret) carrying
// policies: its hash and the accessor id derived from it.
func TokenFor(secret string, policies ...string) Token {
	return Token{
		AccessorID: AccessorID(secret),
		SecretHash: HashSecret(secret),
		Policies:   append([]string(nil), policies...),
	}
}

// AccessorID is the accessor id of the token with secret. The hash is
// one-way: the id, which is served to readers of tokens, tells nothing of
// the secret.
func AccessorID(secret string) string {
	sum := sha256.Sum256([]byte(accessorDomain + secret))
	return hex.EncodeToString(sum[:accessorBytes])
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
