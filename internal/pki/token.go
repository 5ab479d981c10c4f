package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// A cluster token is the one secret of a cluster run without files of
// certificates: every agent started with the same token derives the same
// CA key from it (HKDF-SHA256), so each can sign its own agent
// certificate and trust its peers' with no exchange, no CA to copy and
// no first agent to wait for; the gossip key derives from it too. Whoever
// holds the token can make agent certificates: it is the cluster's root
// secret, to be kept like a CA key.

// MinTokenLength is the shortest cluster token taken: 32 characters, as a
// base64 key of `zrpcd keygen` (44) or 32 random hex digits (128 bits).
const MinTokenLength = 32

// tokenCAEpoch is the fixed start of a token CA's validity: every agent
// must derive the same certificate, so nothing in it may depend on when.
var tokenCAEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// CheckToken reports whether token is long enough to be a cluster token.
func CheckToken(token string) error {
	if len(token) < MinTokenLength {
		return fmt.Errorf("cluster token is %d characters, need at least %d random ones (zrpcd keygen prints one)", len(token), MinTokenLength)
	}
	return nil
}

// TokenCA derives the cluster CA of token: the same key, subject, serial
// and validity on every agent (only the self-signature differs, which no
// verifier of a root checks).
func TokenCA(token string) (*CA, error) {
	if err := CheckToken(token); err != nil {
		return nil, err
	}
	key, err := tokenKey(token)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode token CA key: %w", err)
	}
	sum := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: "zrpc cluster token CA " + hex.EncodeToString(sum[:4]), Organization: []string{"zrpc"}},
		NotBefore:             tokenCAEpoch,
		NotAfter:              tokenCAEpoch.Add(maxDays * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          sum[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create token CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse token CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// tokenKey derives a P-256 private key from token: HKDF-SHA256 output
// taken as the scalar, with a counter for the rare output not below the
// curve's order.
func tokenKey(token string) (*ecdsa.PrivateKey, error) {
	for i := range 64 {
		raw, err := hkdf.Key(sha256.New, []byte(token), []byte("zrpc cluster token"), fmt.Sprintf("ca key %d", i), 32)
		if err != nil {
			return nil, fmt.Errorf("derive token CA key: %w", err)
		}
		if key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw); err == nil {
			return key, nil
		}
	}
	return nil, errors.New("derive token CA key: no valid scalar") // 2^-2048: never
}

// TokenGossipKey derives the gossip encryption key of token (32 bytes,
// base64 as the encrypt setting takes it).
func TokenGossipKey(token string) (string, error) {
	if err := CheckToken(token); err != nil {
		return "", err
	}
	raw, err := hkdf.Key(sha256.New, []byte(token), []byte("zrpc cluster token"), "gossip key", 32)
	if err != nil {
		return "", fmt.Errorf("derive gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}
