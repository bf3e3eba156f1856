package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Output types of --output, as buildctl names them.
const (
	outputLocal = "local"
	outputTar   = "tar"
)

// outputSpec is a parsed --output: buildctl's type=local,dest=DIR or
// type=tar,dest=FILE (dest=- for stdout), or a plain DIR.
type outputSpec struct {
	// Type is outputLocal or outputTar.
	Type string
	// Dest is the directory (local) or the file (tar); "-" is stdout.
	Dest string
}

// stdout reports whether the output goes to stdout, which then carries
// nothing else.
func (o outputSpec) stdout() bool { return o.Type == outputTar && o.Dest == "-" }

// parseOutput parses --output. A value with a type= or dest= field is
// buildctl's CSV form; anything else is a directory, as before.
func parseOutput(s string) (outputSpec, error) {
	if !strings.HasPrefix(s, "type=") && !strings.Contains(s, ",type=") &&
		!strings.HasPrefix(s, "dest=") && !strings.Contains(s, ",dest=") {
		return outputSpec{Type: outputLocal, Dest: s}, nil
	}
	fields, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return outputSpec{}, fmt.Errorf("%q: %w", s, err)
	}
	var o outputSpec
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return outputSpec{}, fmt.Errorf("%q: field %q is not key=value", s, f)
		}
		switch strings.TrimSpace(strings.ToLower(k)) {
		case "type":
			o.Type = v
		case "dest":
			o.Dest = v
		default:
			return outputSpec{}, fmt.Errorf("%q: unknown attribute %q (stevedore takes type and dest)", s, k)
		}
	}
	switch o.Type {
	case outputLocal, outputTar:
	case "":
		return outputSpec{}, fmt.Errorf("%q: no type (want type=local or type=tar)", s)
	case "image", "registry", "oci", "docker":
		return outputSpec{}, fmt.Errorf("%q: type=%s is not supported: stevedore pulls sources and writes their root filesystem with type=local or type=tar", s, o.Type)
	default:
		return outputSpec{}, fmt.Errorf("%q: unknown type %q (want local or tar)", s, o.Type)
	}
	if o.Dest == "" {
		return outputSpec{}, fmt.Errorf("%q: no dest", s)
	}
	if o.Type == outputLocal && o.Dest == "-" {
		return outputSpec{}, fmt.Errorf("%q: type=local writes a directory; for stdout use type=tar,dest=-", s)
	}
	return o, nil
}

// writeOutput writes root where o says. A directory is filled beside
// the destination and renamed into place (placeDir), a tar file is
// written beside it and renamed; a tar on stdout streams, and a stream
// that fails verification at its end makes the command fail.
func writeOutput(ctx context.Context, o outputSpec, stdout io.Writer, root rootfsWriter) error {
	if o.Type == outputLocal {
		if root.place != nil {
			return root.place(ctx, o.Dest)
		}
		return placeDir(ctx, o.Dest, root.dir)
	}
	if o.stdout() {
		return root.writeTar(ctx, stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Dest), "."+filepath.Base(o.Dest)+".stevedore-")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := root.writeTar(ctx, tmp); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil { //nolint:gosec // G302: a tar the user asked for, like one tar -c writes
		return err
	}
	return os.Rename(tmp.Name(), o.Dest)
}

// String is the output as the summary shows it.
func (o outputSpec) String() string {
	if o.Type == outputLocal {
		return o.Dest
	}
	if o.stdout() {
		return "tar on stdout"
	}
	return "tar " + o.Dest
}
