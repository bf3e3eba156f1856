//go:build e2e

package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// snapshotDataDir is the snapshotter's data dir in its container
// (STEVEDORE_DATA_DIR in deploy/compose.yaml).
const snapshotDataDir = "/var/lib/stevedore"

// containerd's snapshot kinds, as its bolt metadata stores them
// (core/snapshots: KindUnknown, KindView, KindActive, KindCommitted).
const (
	kindActive    = 2
	kindCommitted = 3
)

// storeReport is what one snapshotter's store holds, checked against the
// generated images.
type storeReport struct {
	Container string
	// Kind is the containerd snapshotter in use: native or overlayfs.
	Kind string
	// Committed are the committed snapshots' names (chainIDs); Active
	// counts uncommitted ones.
	Committed []string
	Active    int
	// Corrupt describes every committed snapshot whose files differ from
	// what its chainID names, and every committed name no generated image
	// has.
	Corrupt []string
}

// expectations are the file trees the chainIDs of imgs name: for the
// native snapshotter the whole root filesystem of the prefix, for
// overlayfs only its top layer.
func expectations(imgs []*genImage) (full, top map[string]map[string]digest.Digest) {
	full, top = map[string]map[string]digest.Digest{}, map[string]map[string]digest.Digest{}
	for _, img := range imgs {
		tree := map[string]digest.Digest{}
		for i, c := range img.ChainIDs() {
			maps.Copy(tree, img.Layers[i].Files)
			full[c.String()] = maps.Clone(tree)
			top[c.String()] = img.Layers[i].Files
		}
	}
	return full, top
}

// inspectStore reads a snapshotter container's snapshots (docker cp of its
// data dir, streamed) and checks every committed one against imgs.
func inspectStore(ctx context.Context, containerID string, imgs []*genImage, tmp string) (storeReport, error) {
	rep := storeReport{Container: containerID[:12]}
	cmd := exec.CommandContext(ctx, "docker", "cp", containerID+":"+snapshotDataDir+"/snapshots", "-")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return rep, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return rep, err
	}
	// files[kind][id] maps a snapshot's regular files to their digests.
	files := map[string]map[string]map[string]digest.Digest{}
	dbs := map[string]string{}
	tr := tar.NewReader(stdout)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = cmd.Wait()
			return rep, fmt.Errorf("docker cp %s: %w (%s)", rep.Container, err, stderr.String())
		}
		parts := strings.Split(strings.TrimSuffix(hdr.Name, "/"), "/")
		// snapshots/<kind>/metadata.db, snapshots/<kind>/snapshots/<id>/...
		if len(parts) == 3 && parts[2] == "metadata.db" && hdr.Typeflag == tar.TypeReg {
			path := filepath.Join(tmp, rep.Container+"-"+parts[1]+".db")
			if err := writeFile(path, tr); err != nil {
				_ = cmd.Wait()
				return rep, err
			}
			dbs[parts[1]] = path
			continue
		}
		if len(parts) < 5 || parts[2] != "snapshots" || hdr.Typeflag != tar.TypeReg {
			continue
		}
		kind, id, rel := parts[1], parts[3], parts[4:]
		if kind == "overlayfs" {
			if rel[0] != "fs" || len(rel) < 2 {
				continue
			}
			rel = rel[1:]
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			_ = cmd.Wait()
			return rep, err
		}
		if files[kind] == nil {
			files[kind] = map[string]map[string]digest.Digest{}
		}
		if files[kind][id] == nil {
			files[kind][id] = map[string]digest.Digest{}
		}
		files[kind][id][strings.Join(rel, "/")] = digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	}
	if err := cmd.Wait(); err != nil {
		return rep, fmt.Errorf("docker cp %s: %w (%s)", rep.Container, err, stderr.String())
	}
	if len(dbs) != 1 {
		return rep, fmt.Errorf("%s: want one snapshotter's metadata, found %d", rep.Container, len(dbs))
	}
	full, top := expectations(imgs)
	for kind, db := range dbs {
		rep.Kind = kind
		want := full
		if kind == "overlayfs" {
			want = top
		}
		snaps, err := readSnapshots(db)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", rep.Container, err)
		}
		for _, name := range slices.Sorted(maps.Keys(snaps)) {
			sn := snaps[name]
			if sn.kind != kindCommitted {
				if sn.kind == kindActive {
					rep.Active++
				}
				continue
			}
			rep.Committed = append(rep.Committed, name)
			exp, ok := want[name]
			if !ok {
				rep.Corrupt = append(rep.Corrupt, name+": no generated image has this chainID")
				continue
			}
			if diff := diffTrees(exp, files[kind][sn.id]); diff != "" {
				rep.Corrupt = append(rep.Corrupt, fmt.Sprintf("%s (snapshot %s): %s", name, sn.id, diff))
			}
		}
	}
	return rep, nil
}

// snapshotMeta is a snapshot's record in containerd's metadata.
type snapshotMeta struct {
	id   string
	kind byte
}

// readSnapshots reads containerd's snapshot metadata (bucket
// v1/snapshots/<name> with keys id and kind).
func readSnapshots(path string) (map[string]snapshotMeta, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }()
	out := map[string]snapshotMeta{}
	err = db.View(func(tx *bolt.Tx) error {
		v1 := tx.Bucket([]byte("v1"))
		if v1 == nil {
			return nil
		}
		snaps := v1.Bucket([]byte("snapshots"))
		if snaps == nil {
			return nil
		}
		return snaps.ForEachBucket(func(name []byte) error {
			b := snaps.Bucket(name)
			id, _ := binary.Uvarint(b.Get([]byte("id")))
			var kind byte
			if k := b.Get([]byte("kind")); len(k) > 0 {
				kind = k[0]
			}
			out[string(name)] = snapshotMeta{id: fmt.Sprint(id), kind: kind}
			return nil
		})
	})
	return out, err
}

// diffTrees describes how got differs from want; "" when they are equal.
func diffTrees(want, got map[string]digest.Digest) string {
	var d []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[p]
		switch {
		case !ok:
			d = append(d, "missing "+p)
		case g != want[p]:
			d = append(d, "wrong content in "+p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			d = append(d, "unexpected "+p)
		}
	}
	if len(d) > 4 {
		d = append(d[:4], fmt.Sprintf("and %d more", len(d)-4))
	}
	return strings.Join(d, ", ")
}

func writeFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
