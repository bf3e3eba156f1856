//go:build linux

package snapshot_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// paxRecord is one record of a PAX extended header.
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	n := len(s)
	for {
		l := len(fmt.Sprint(n)) + len(s)
		if l == n {
			break
		}
		n = l
	}
	return fmt.Sprint(n) + s
}

// sparseTar is a tar of one GNU sparse file (PAX format 0.1) of size
// bytes that stores one byte: a few KB that expand to size. (archive/tar
// reads such files but does not write them, so the extended header is
// written as a regular entry and retyped.)
func sparseTar(t *testing.T, name string, size int64) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	recs := paxRecord("GNU.sparse.major", "0") + paxRecord("GNU.sparse.minor", "1") +
		paxRecord("GNU.sparse.size", fmt.Sprint(size)) + paxRecord("GNU.sparse.numblocks", "1") + paxRecord("GNU.sparse.map", "0,1")
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(recs)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(recs)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	hdr := b.Bytes()[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Finding 4: no bound on what a layer expands to. Each layer here expands
// past a limit the store is given (scaled down from the real defaults so
// the test writes little even when the limit does not hold): Unpack fails
// with ErrLimit, says which limit, shows no data-dir path, and leaves no
// snapshot, active snapshot or ingest behind.
func TestSecurityLayerLimits(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	const mib = 1 << 20
	zeros := strings.Repeat("\x00", 4*mib)
	var many []entry
	for i := range 200 {
		many = append(many, file(fmt.Sprintf("f%03d", i), "x", 0o644))
	}
	half := strings.Repeat("y", 600<<10)
	cases := []struct {
		name   string
		layers []layer
		limits snapshot.Limits
		// keep is how many bottom layers may stay committed: none, as a
		// refused chain loses the layers it committed on the way.
		keep int
	}{
		{"declared bytes", []layer{buildLayer(t, gzipped, file("big", zeros, 0o644))}, snapshot.Limits{LayerBytes: mib}, 0},
		{"sparse file", []layer{layerFromTar(t, gzipped, sparseTar(t, "sparse", 64*mib))}, snapshot.Limits{LayerBytes: mib}, 0},
		{"layer entries", []layer{buildLayer(t, gzipped, many...)}, snapshot.Limits{LayerEntries: 100}, 0},
		{"snapshot bytes", []layer{buildLayer(t, gzipped, file("a", half, 0o644)), buildLayer(t, gzipped, file("b", half, 0o644))}, snapshot.Limits{LayerBytes: mib, SnapshotBytes: mib}, 0},
		{"snapshot entries", []layer{buildLayer(t, gzipped, many[:80]...), buildLayer(t, gzipped, many[80:160]...)}, snapshot.Limits{SnapshotEntries: 100}, 0},
		{"free-space floor", []layer{buildLayer(t, gzipped, file("f", "small", 0o644))}, snapshot.Limits{MinFreeBytes: 1 << 62}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, snapshot.KindNative)
			_, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(tc.layers...), Source: newSource(tc.layers...), Limits: tc.limits})
			if !errors.Is(err, snapshot.ErrLimit) {
				t.Fatalf("Unpack = %v, want ErrLimit", err)
			}
			if strings.Contains(err.Error(), s.Root()) {
				t.Errorf("the error shows the data dir: %v", err)
			}
			committed, other := snapshotNames(t, s)
			if len(other) != 0 || len(committed) > tc.keep {
				t.Errorf("left behind: committed %v (at most %d allowed), other %v", committed, tc.keep, other)
			}
			if refs := ingests(t, s); len(refs) != 0 {
				t.Errorf("ingests left: %v", refs)
			}
		})
	}
}

// Finding 6: a layer that can never unpack (its blob is what its digest
// says, but the tar inside is broken or hostile) is a permanent failure,
// ErrBadLayer, not an internal error to retry; and the error shows none of
// the data dir's paths.
func TestSecurityBadArchivesArePermanent(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	good := tarOf(t, file("a", strings.Repeat("a", 4096), 0o644), file("b", "b", 0o644))
	cases := []struct {
		name string
		tar  []byte
	}{
		{"hardlink out of the tree", tarOf(t, hardlink("evil", entry{name: "../../../../etc/passwd"}))},
		{"bad whiteout name", tarOf(t, dir("d", 0o755), file("d/.wh..", "", 0o644))},
		{"truncated tar", good[:1024+100]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := layerFromTar(t, gzipped, tc.tar)
			s := openStore(t, snapshot.KindNative)
			_, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(l), Source: newSource(l)})
			if !errors.Is(err, snapshot.ErrBadLayer) {
				t.Errorf("Unpack = %v, want ErrBadLayer", err)
			}
			if err != nil && strings.Contains(err.Error(), s.Root()) {
				t.Errorf("the error shows the data dir: %v", err)
			}
		})
	}
}

// Finding 4: a snapshot refused for a snapshot-wide limit leaves none of
// the layers it committed on the way, so that a later Unpack of the same
// chain (a retry, or another build) does not reuse them without counting
// them: entries of reused layers are not in a later Unpack's budget, so
// the retry of a refused chain would pass.
func TestSecurityRefusedSnapshotLeavesNoPrefix(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	var many []entry
	for i := range 160 {
		many = append(many, file(fmt.Sprintf("f%03d", i), "x", 0o644))
	}
	layers := []layer{buildLayer(t, gzipped, many[:80]...), buildLayer(t, gzipped, many[80:]...)}
	s := openStore(t, snapshot.KindNative)
	req := snapshot.Request{Layers: eventsOf(layers...), Source: newSource(layers...), Limits: snapshot.Limits{SnapshotEntries: 100}}
	if _, err := s.Unpack(t.Context(), req); !errors.Is(err, snapshot.ErrLimit) {
		t.Fatalf("Unpack = %v, want ErrLimit", err)
	}
	if committed, other := snapshotNames(t, s); len(committed)+len(other) != 0 {
		t.Errorf("a refused snapshot left committed %v, other %v", committed, other)
	}
	if _, err := s.Unpack(t.Context(), req); !errors.Is(err, snapshot.ErrLimit) {
		t.Errorf("the same chain unpacked again = %v, want ErrLimit: its first layer was trusted from the refused attempt", err)
	}
}
