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

	"github.com/containerd/containerd/v2/pkg/archive"
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

// writeOutput writes the result's root filesystem where o says: write
// fills a directory with it.
func writeOutput(ctx context.Context, o outputSpec, stdout io.Writer, write func(ctx context.Context, dir string) error) error {
	if o.Type == outputLocal {
		return write(ctx, o.Dest)
	}
	tmp, err := os.MkdirTemp("", "stevedore-tar-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	root := filepath.Join(tmp, "rootfs")
	if err := write(ctx, root); err != nil {
		return err
	}
	if o.stdout() {
		return archive.WriteDiff(ctx, stdout, "", root)
	}
	f, err := os.Create(o.Dest)
	if err != nil {
		return err
	}
	if err := archive.WriteDiff(ctx, f, "", root); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
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
