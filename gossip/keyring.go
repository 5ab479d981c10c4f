package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/memberlist"
)

// The keyring: memberlist encrypts gossip with the primary key and
// decrypts with any installed key. A key is rotated with no downtime by
// installing the new key on every agent, making it the primary on every
// agent, then removing the old one (InstallKey, UseKey, RemoveKey). Keys
// are given and returned base64 encoded, as ParseKey reads them.

// KeyringFileName is the name of the keyring file the agent keeps in its
// data dir (Config.KeyringFile).
const KeyringFileName = "gossip-keyring"

// Errors of the keyring operations that callers may branch on.
var (
	// ErrNotEncrypted: this gossip started without encryption, and
	// memberlist cannot turn it on at runtime.
	ErrNotEncrypted = errors.New("gossip is not encrypted, so no key can be installed at runtime (memberlist needs encryption from the start): set encrypt or encrypt_file on every agent and restart them")
	// ErrKeyNotInstalled: UseKey of a key that InstallKey has not added.
	ErrKeyNotInstalled = errors.New("key is not installed on this agent; install it first")
	// ErrRemovePrimary: RemoveKey of the key gossip encrypts with.
	ErrRemovePrimary = errors.New("key is the primary key and cannot be removed; make another key primary first")
)

// keyringFile is the keyring file's content: every installed key, base64,
// the primary first.
type keyringFile struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

// KeyFingerprint returns a short, non-secret name of a base64 key (the
// first 8 hex digits of its SHA-256), for logs and messages: a whole key is
// never logged.
func KeyFingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}

// openKeyring returns the keyring gossip starts with and says where it
// came from: the keyring file when it exists (it wins over EncryptKey, as
// it holds the keys of the last rotation), otherwise EncryptKey, which is
// then written to the keyring file. nil means gossip is not encrypted.
func (g *Gossip) openKeyring() (*memberlist.Keyring, error) {
	path := g.cfg.KeyringFile
	if path != "" {
		keys, err := readKeyringFile(path)
		switch {
		case err == nil:
			if len(g.cfg.EncryptKey) > 0 && !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, g.cfg.EncryptKey) }) {
				g.log.Warn("the encrypt setting holds a key the keyring file does not; the keyring file wins", "file", path)
			}
			g.log.Info("gossip keyring loaded from its file", "file", path, "keys", len(keys),
				"primary", KeyFingerprint(encodeKey(keys[0])))
			return memberlist.NewKeyring(keys, keys[0])
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	if len(g.cfg.EncryptKey) == 0 {
		g.log.Info("gossip is not encrypted")
		return nil, nil
	}
	key := slices.Clone(g.cfg.EncryptKey)
	if path != "" {
		if err := writeKeyringFile(path, [][]byte{key}); err != nil {
			return nil, err
		}
	}
	g.log.Info("gossip keyring from the encrypt setting", "primary", KeyFingerprint(encodeKey(key)), "file", path)
	return memberlist.NewKeyring(nil, key)
}

// readKeyringFile returns the keys of the keyring file at path, the
// primary first. A file that cannot be read or holds no valid keyring is an
// error naming it; a missing file wraps fs.ErrNotExist.
func readKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gossip keyring file: %w", err)
	}
	var f keyringFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("gossip keyring file %s is corrupt (not a keyring): %w", path, err)
	}
	if len(f.Keys) == 0 {
		return nil, fmt.Errorf("gossip keyring file %s is corrupt: it holds no keys", path)
	}
	keys := make([][]byte, 0, len(f.Keys))
	for i, s := range f.Keys {
		k, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring file %s is corrupt: keys[%d]: %w", path, i, err)
		}
		keys = append(keys, k)
	}
	primary, err := ParseKey(f.Primary)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring file %s is corrupt: primary: %w", path, err)
	}
	i := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, primary) })
	if i < 0 {
		return nil, fmt.Errorf("gossip keyring file %s is corrupt: the primary key is not among its keys", path)
	}
	keys[0], keys[i] = keys[i], keys[0]
	return keys, nil
}

// writeKeyringFile replaces the keyring file at path with keys (the
// primary first): a temporary file of mode 0600 in the same directory,
// fsync'd, renamed over path, and the directory fsync'd. On error the old
// file is left as it was.
func writeKeyringFile(path string, keys [][]byte) (err error) {
	f := keyringFile{Primary: encodeKey(keys[0])}
	for _, k := range keys {
		f.Keys = append(f.Keys, encodeKey(k))
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode gossip keyring: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("write gossip keyring file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write gossip keyring file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync gossip keyring file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close gossip keyring file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace gossip keyring file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("sync directory %s of the gossip keyring file: %w", dir, err)
		}
	}
	return nil
}

func encodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// Keys returns this agent's gossip keys, base64 encoded: the primary, which
// encrypts what it sends, and all installed keys (the primary first),
// which it accepts. Both are empty when gossip is not encrypted or not
// started.
func (g *Gossip) Keys() (primary string, all []string) {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	kr := g.mc.Keyring
	if kr == nil {
		return "", nil
	}
	for _, k := range kr.GetKeys() {
		all = append(all, encodeKey(k))
	}
	if len(all) > 0 {
		primary = all[0]
	}
	return primary, all
}

// encrypted reports whether gossip is encrypted, and so members' meta
// authenticated: only holders of the key can send it.
func (g *Gossip) encrypted() bool {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	return g.mc.Keyring != nil
}

// InstallKey adds key (base64, see ParseKey) to the keyring: gossip then
// accepts messages encrypted with it, and still encrypts with the primary.
// Installing a key that is installed already does nothing.
func (g *Gossip) InstallKey(key string) error {
	return g.changeKeyring("install key", key, func(keys [][]byte, k []byte) ([][]byte, error) {
		if slices.ContainsFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) }) {
			return nil, nil
		}
		return append(slices.Clone(keys), k), nil
	}, func(kr *memberlist.Keyring, k []byte) error { return kr.AddKey(k) })
}

// UseKey makes key, which must be installed, the primary key: gossip
// encrypts with it from now on. Every agent should have it installed first,
// or they will not understand this one.
func (g *Gossip) UseKey(key string) error {
	return g.changeKeyring("use key", key, func(keys [][]byte, k []byte) ([][]byte, error) {
		i := slices.IndexFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) })
		switch i {
		case -1:
			return nil, ErrKeyNotInstalled
		case 0:
			return nil, nil
		}
		next := [][]byte{k}
		for j, x := range keys {
			if j != i {
				next = append(next, x)
			}
		}
		return next, nil
	}, func(kr *memberlist.Keyring, k []byte) error { return kr.UseKey(k) })
}

// RemoveKey removes key from the keyring: messages encrypted with it are
// refused from now on. The primary key cannot be removed. Removing a key
// that is not installed does nothing, so that a rotation can be retried.
func (g *Gossip) RemoveKey(key string) error {
	return g.changeKeyring("remove key", key, func(keys [][]byte, k []byte) ([][]byte, error) {
		i := slices.IndexFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) })
		switch i {
		case -1:
			return nil, nil
		case 0:
			return nil, ErrRemovePrimary
		}
		return slices.Delete(slices.Clone(keys), i, i+1), nil
	}, func(kr *memberlist.Keyring, k []byte) error {
		// memberlist's RemoveKey shifts the keys in place, under slices
		// that its packet handlers may still be reading. UseKey of the
		// primary first gives it a fresh copy to shift.
		if err := kr.UseKey(kr.GetPrimaryKey()); err != nil {
			return err
		}
		return kr.RemoveKey(k)
	})
}

// changeKeyring runs one keyring operation named op: it parses key, asks
// next for the keyring that results from the current keys (nil: nothing
// changes), writes that to the keyring file and only then applies it to
// memberlist with apply, so that a failed write changes nothing.
func (g *Gossip) changeKeyring(op, key string, next func(keys [][]byte, k []byte) ([][]byte, error), apply func(*memberlist.Keyring, []byte) error) error {
	k, err := ParseKey(key)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, err := g.running(); err != nil { // before keyMu: Start takes lifeMu, then keyMu
		return fmt.Errorf("%s: %w", op, err)
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	kr := g.mc.Keyring
	if kr == nil {
		return fmt.Errorf("%s: %w", op, ErrNotEncrypted)
	}
	keys, err := next(kr.GetKeys(), k)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, KeyFingerprint(encodeKey(k)), err)
	}
	if keys == nil {
		return nil
	}
	if g.cfg.KeyringFile != "" {
		if err := writeKeyringFile(g.cfg.KeyringFile, keys); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if err := apply(kr, k); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	g.log.Info("gossip keyring changed", "op", op, "key", KeyFingerprint(encodeKey(k)), "keys", len(keys))
	return nil
}
