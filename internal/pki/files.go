package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names of the CA in its directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// ErrExists is returned when a file to write exists and overwriting was
// not asked for.
var ErrExists = errors.New("file exists")

// Written names the files a Create call wrote.
type Written struct {
	Cert string
	Key  string
	// CA is the CA certificate CreateCert wrote beside them (the cluster
	// token's, into a directory without one); empty when it wrote none.
	CA string
}

// CAOptions says where and how to create a CA.
type CAOptions struct {
	// Dir is the directory of ca.pem and ca-key.pem ("" is the current
	// one); it is created if missing.
	Dir string
	// Days is the CA's lifetime; 0 means DefaultCADays.
	Days int
	// Overwrite replaces existing files; without it they are an error and
	// nothing is written.
	Overwrite bool
	// Token, when set, is the cluster token whose CA signs (TokenCA)
	// instead of the CA files; the CA's certificate is written to
	// Dir/ca.pem when that file does not exist yet.
	Token string
}

// CreateCA makes a CA and writes it to Dir/ca.pem and Dir/ca-key.pem (the
// key with mode 0600).
func CreateCA(o CAOptions) (Written, error) {
	w := Written{Cert: filepath.Join(o.Dir, CACertFile), Key: filepath.Join(o.Dir, CAKeyFile)}
	if _, err := lifetime(o.Days, DefaultCADays); err != nil {
		return Written{}, err
	}
	if err := checkAbsent(o.Overwrite, w.Cert, w.Key); err != nil {
		return Written{}, err
	}
	ca, err := NewCA(o.Days)
	if err != nil {
		return Written{}, err
	}
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return Written{}, err
	}
	if err := writePair(o.Dir, w, EncodeCertificate(ca.Cert), keyPEM); err != nil {
		return Written{}, err
	}
	return w, nil
}

// CertOptions says where to find the CA and where to write a certificate.
type CertOptions struct {
	CertRequest
	// Dir is where <name>.pem and <name>-key.pem are written ("" is the
	// current one); it is created if missing.
	Dir string
	// CACert and CAKey are the CA's files; empty means Dir/ca.pem and
	// Dir/ca-key.pem.
	CACert, CAKey string
	// Overwrite replaces existing files; without it they are an error and
	// nothing is written.
	Overwrite bool
	// Token, when set, is the cluster token whose CA signs (TokenCA)
	// instead of the CA files; the CA's certificate is written to
	// Dir/ca.pem when that file does not exist yet.
	Token string
}

// CreateCert signs a certificate with the CA's files and writes it to
// Dir/<name>.pem and its key to Dir/<name>-key.pem (mode 0600).
func CreateCert(o CertOptions) (Written, error) {
	if err := o.Validate(); err != nil {
		return Written{}, err
	}
	if o.CACert == "" {
		o.CACert = filepath.Join(o.Dir, CACertFile)
	}
	if o.CAKey == "" {
		o.CAKey = filepath.Join(o.Dir, CAKeyFile)
	}
	w := Written{Cert: filepath.Join(o.Dir, o.Name+".pem"), Key: filepath.Join(o.Dir, o.Name+"-key.pem")}
	if err := checkNotCA(w, o.CACert, o.CAKey, filepath.Join(o.Dir, CACertFile)); err != nil {
		return Written{}, err
	}
	if err := checkAbsent(o.Overwrite, w.Cert, w.Key); err != nil {
		return Written{}, err
	}
	ca, wroteCA, err := o.ca()
	if err != nil {
		return Written{}, err
	}
	w.CA = wroteCA
	cert, key, err := ca.Sign(o.CertRequest)
	if err != nil {
		return Written{}, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return Written{}, err
	}
	if err := writePair(o.Dir, w, EncodeCertificate(cert), keyPEM); err != nil {
		return Written{}, err
	}
	return w, nil
}

// ca is the signing CA: the token's, whose certificate is then written
// to Dir/ca.pem unless there is one (which must be the token's), or the
// CA of the files. wrote is the file it wrote, if any.
func (o CertOptions) ca() (ca *CA, wrote string, err error) {
	if o.Token == "" {
		ca, err = LoadCA(o.CACert, o.CAKey)
		return ca, "", err
	}
	if ca, err = TokenCA(o.Token); err != nil {
		return nil, "", err
	}
	path := filepath.Join(o.Dir, CACertFile)
	if old, err := os.ReadFile(path); err == nil {
		cert, err := ParseCertificate(old)
		if err != nil || !ca.Key.PublicKey.Equal(cert.PublicKey) {
			return nil, "", fmt.Errorf("%s is not the cluster token's CA certificate: move it away or use another --dir", path)
		}
		return ca, "", nil
	}
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, "", fmt.Errorf("create directory: %w", err)
		}
	}
	tmp, err := writeTemp(path, EncodeCertificate(ca.Cert), 0o644)
	if err != nil {
		return nil, "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, "", fmt.Errorf("write %s: %w", path, err)
	}
	return ca, path, nil
}

// LoadCA reads a CA from its certificate and key files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s, %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// checkNotCA fails when a file of w is one of the CA's files: a
// certificate named "ca" or "ca-key" would replace the CA's certificate or
// key (with --force, or the token CA's certificate just written).
func checkNotCA(w Written, caFiles ...string) error {
	for _, p := range []string{w.Cert, w.Key} {
		for _, ca := range caFiles {
			if samePath(p, ca) {
				return fmt.Errorf("name: its file %s would replace the CA's %s: choose another name", p, ca)
			}
		}
	}
	return nil
}

// samePath reports whether a and b name the same file: the same absolute
// path, or, when both exist, the same file by another path.
func samePath(a, b string) bool {
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	if errA == nil && errB == nil && absA == absB {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// checkAbsent fails, naming the first, when one of paths exists and
// overwrite is false.
func checkAbsent(overwrite bool, paths ...string) error {
	if overwrite {
		return nil
	}
	for _, p := range paths {
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			return fmt.Errorf("%s: %w", p, ErrExists)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("check %s: %w", p, err)
		}
	}
	return nil
}

// writePair writes a certificate (0644) and its key (0600) through
// temporary files renamed into place, so a failure leaves neither file
// half-written; if the key cannot be put in place the certificate is
// removed again.
func writePair(dir string, w Written, certPEM, keyPEM []byte) error {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	certTmp, err := writeTemp(w.Cert, certPEM, 0o644)
	if err != nil {
		return err
	}
	keyTmp, err := writeTemp(w.Key, keyPEM, 0o600)
	if err != nil {
		os.Remove(certTmp)
		return err
	}
	if err := os.Rename(keyTmp, w.Key); err != nil {
		os.Remove(certTmp)
		os.Remove(keyTmp)
		return fmt.Errorf("write %s: %w", w.Key, err)
	}
	if err := os.Rename(certTmp, w.Cert); err != nil {
		os.Remove(certTmp)
		os.Remove(w.Key)
		return fmt.Errorf("write %s: %w", w.Cert, err)
	}
	return nil
}

func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp, nil
}
