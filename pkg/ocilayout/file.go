package ocilayout

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// mkdirAll makes dir and its parents with dirPerm (less the umask).
func mkdirAll(dir string) error {
	return os.MkdirAll(dir, dirPerm)
}

// createTemp creates a new file in dir whose name starts with tmpPrefix
// and name, with mode perm less the umask (os.CreateTemp would force 0600).
func createTemp(dir, name string, perm fs.FileMode) (*os.File, error) {
	for range 100 {
		p := filepath.Join(dir, tmpPrefix+name+"-"+rand.Text())
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm) //nolint:gosec // G302,G304: a fresh name in the layout; modes as documented in doc.go
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("create temporary file in %s: too many collisions", dir)
}

// writeTemp writes data to a new fsynced temporary file in dir (see
// createTemp) and returns its path; the caller renames or links it into
// place and removes it on failure. Nothing is left behind on error.
func writeTemp(dir, name string, data []byte, perm fs.FileMode) (string, error) {
	f, err := createTemp(dir, name, perm)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// commitTemp renames the temporary file tmp to final, atomically replacing
// whatever final named.
func commitTemp(tmp, final string) error {
	return os.Rename(tmp, final) //nolint:gosec // G703: tmp is a fresh dot-file createTemp made, final a name in the layout
}
