package acl

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
)

// A secret NewSecret makes passes ValidateSecret, and its token's accessor
// id is a valid one, the same on every derivation and unlike the hash.
func TestSecretsAndTheirAccessorIDs(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSecret("secret", secret); err != nil {
		t.Fatalf("ValidateSecret(NewSecret()): %v", err)
	}
	tok := TokenFor(secret, "p")
	if !ValidAccessorID(tok.AccessorID) || tok.AccessorID != AccessorID(secret) || tok.SecretHash != HashSecret(secret) {
		t.Fatalf("TokenFor = %+v", tok)
	}
	if hex.EncodeToString(tok.SecretHash[:accessorBytes]) == tok.AccessorID {
		t.Fatal("the accessor id is the stored hash")
	}
	other, _ := NewSecret()
	if AccessorID(other) == tok.AccessorID {
		t.Fatal("two secrets share an accessor id")
	}
}

func TestValidateSecretRefusesOtherForms(t *testing.T) {
	good, _ := NewSecret()
	for _, bad := range []string{
		"", "zrpc_", "zrpc_abc", good[len(secretPrefix):], "ZRPC" + good[4:],
		strings.ToUpper(good[:8]) + good[8:], secretPrefix + strings.ToUpper(good[len(secretPrefix):]),
		good + "00", good[:len(good)-1] + "g",
	} {
		err := ValidateSecret("secret", bad)
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "secret") {
			t.Errorf("ValidateSecret(%q) = %v, want InvalidArgument naming secret", bad, err)
		}
		if bad != "" && len(bad) > 10 && strings.Contains(err.Error(), bad) {
			t.Errorf("ValidateSecret's error shows the secret: %v", err)
		}
	}
}
