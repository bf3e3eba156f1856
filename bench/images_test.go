package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// The pull benchmark's images are generated here, byte for byte the same on
// every machine: each layer is a tar of nested directories and files whose
// sizes follow a log-normal spread and whose contents are runs of up to
// 1 MiB, either incompressible random bytes or text-like lines (≈4× under
// gzip), so that a layer compresses about 2× as real ones do. The gzip blobs are
// cached on tmpfs (imageCacheDir) under genVersion, so only the first run
// on a machine pays for the generation.

// genVersion names the generator's output in the image cache. Bump it with
// any change that alters a byte of a layer.
const genVersion = 1

// mb is a megabyte, as the issue counts them.
const mb = 1_000_000

// imageSpec describes one generated image.
type imageSpec struct {
	// name is the sub-benchmark's name and the repository bench/<name>.
	name string
	// about says what the image stands for.
	about string
	// layers are its layers, bottom first.
	layers []layerSpec
}

// layerSpec describes one generated layer.
type layerSpec struct {
	// files is the number of regular files.
	files int
	// bytes is their total size.
	bytes int64
	// sigma is the spread of the log-normal file sizes; zero makes every
	// file the same size.
	sigma float64
	// random is the share of the bytes that is incompressible.
	random float64
	// chain adds etc/bench/layer-<i>.conf and deletes the one of the
	// layer below with a whiteout.
	chain bool
}

// pullImages are the three images: (a) ≈250 MB in 5 layers with
// ~15k files, (b) 40 layers of a few MB, (c) one ≈500 MB layer of a few
// large files.
func pullImages() []imageSpec {
	a := imageSpec{name: "a", about: "5 layers, ≈250 MB, ~15k files"}
	for _, l := range []struct {
		files int
		mb    int64
	}{{5000, 78}, {4000, 58}, {3000, 48}, {2000, 33}, {1000, 23}} {
		a.layers = append(a.layers, layerSpec{files: l.files, bytes: l.mb * mb, sigma: 1.5, random: 0.3})
	}
	b := imageSpec{name: "b", about: "40 layers of 2–6 MB, 150–450 files each"}
	for i := range 40 {
		b.layers = append(b.layers, layerSpec{files: 150 + (i*37)%300, bytes: int64(2+(i*7)%5) * mb, sigma: 1.2, random: 0.3, chain: true})
	}
	c := imageSpec{name: "c", about: "1 layer, ≈500 MB, 12 large files"}
	c.layers = []layerSpec{{files: 12, bytes: 500 * mb, sigma: 0.4, random: 0.3}}
	return []imageSpec{a, b, c}
}

// layerMeta is what the cache records of a generated layer.
type layerMeta struct {
	// Digest and Size are the gzip blob's.
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// DiffID and Uncompressed are the tar's.
	DiffID       digest.Digest `json:"diffID"`
	Uncompressed int64         `json:"uncompressed"`
	// Entries counts the tar's entries: directories, files, symlinks and
	// whiteouts.
	Entries int `json:"entries"`
}

// generatedImage is an image in the cache.
type generatedImage struct {
	spec imageSpec
	dir  string
	// Layers lists the layers bottom first; layer i is dir/<i>.tar.gz.
	Layers []layerMeta `json:"layers"`
}

func (g *generatedImage) blobPath(i int) string {
	return filepath.Join(g.dir, strconv.Itoa(i)+".tar.gz")
}

// size sums the blobs' sizes, uncompressed and compressed, and the entries.
func (g *generatedImage) size() (uncompressed, compressed int64, entries int) {
	for _, l := range g.Layers {
		uncompressed += l.Uncompressed
		compressed += l.Size
		entries += l.Entries
	}
	return uncompressed, compressed, entries
}

// imageCacheDir is where generated layers are kept between runs:
// $BENCH_IMAGE_CACHE, or /dev/shm/stevedore-bench-images.
func imageCacheDir() string {
	if d := os.Getenv("BENCH_IMAGE_CACHE"); d != "" {
		return d
	}
	return "/dev/shm/stevedore-bench-images"
}

// generate returns spec's image from the cache under root, generating it
// (its layers in parallel) when the cache lacks it.
func generate(root string, spec imageSpec) (*generatedImage, error) {
	dir := filepath.Join(root, "v"+strconv.Itoa(genVersion), spec.name)
	img := &generatedImage{spec: spec, dir: dir}
	if data, err := os.ReadFile(filepath.Join(dir, "image.json")); err == nil {
		if json.Unmarshal(data, img) == nil && img.complete() {
			return img, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), spec.name+".tmp-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	img.Layers = make([]layerMeta, len(spec.layers))
	errs := make([]error, len(spec.layers))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, l := range spec.layers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			img.Layers[i], errs[i] = writeLayerFile(filepath.Join(tmp, strconv.Itoa(i)+".tar.gz"), spec.name, i, l)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generate image %s: %w", spec.name, err)
	}
	data, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "image.json"), data, 0o644); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return img, nil
}

// complete reports whether the cached image has every layer of its spec,
// each blob of the recorded size. (Digests are checked when pushing.)
func (g *generatedImage) complete() bool {
	if len(g.Layers) != len(g.spec.layers) {
		return false
	}
	for i, l := range g.Layers {
		fi, err := os.Stat(g.blobPath(i))
		if err != nil || fi.Size() != l.Size {
			return false
		}
	}
	return true
}

// writeLayerFile writes layer index of image name as a gzip blob to file.
func writeLayerFile(file, name string, index int, l layerSpec) (layerMeta, error) {
	f, err := os.Create(file)
	if err != nil {
		return layerMeta{}, err
	}
	defer func() { _ = f.Close() }()
	meta, err := writeLayer(f, name, index, l)
	if err != nil {
		return meta, err
	}
	return meta, f.Close()
}

// writeLayer writes the gzip blob of layer index of image name to w.
func writeLayer(w io.Writer, name string, index int, l layerSpec) (layerMeta, error) {
	blobHash, diffHash := sha256.New(), sha256.New()
	blob := &countWriter{w: io.MultiWriter(w, blobHash)}
	bw := bufio.NewWriterSize(blob, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return layerMeta{}, err
	}
	plain := &countWriter{w: io.MultiWriter(zw, diffHash)}
	entries, err := writeTar(plain, name, index, l)
	if err != nil {
		return layerMeta{}, err
	}
	if err := zw.Close(); err != nil {
		return layerMeta{}, err
	}
	if err := bw.Flush(); err != nil {
		return layerMeta{}, err
	}
	return layerMeta{
		Digest: digest.NewDigest(digest.SHA256, blobHash), Size: blob.n,
		DiffID: digest.NewDigest(digest.SHA256, diffHash), Uncompressed: plain.n,
		Entries: entries,
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Content is written in chunks, each a slice of the text corpus or fresh
// random bytes, and decided in segments: a file's segment is all random or
// all text.
const (
	chunk   = 32 << 10
	segment = 1 << 20
)

// epoch is every entry's modification time.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// layerGen holds one layer's random state.
type layerGen struct {
	src    *rand.ChaCha8
	rng    *rand.Rand
	vocab  []string
	corpus []byte // text to take chunks from
	buf    []byte
}

func newLayerGen(name string, index int) *layerGen {
	seed := sha256.Sum256([]byte(fmt.Sprintf("stevedore-bench/v%d/%s/%d", genVersion, name, index)))
	src := rand.NewChaCha8(seed)
	g := &layerGen{src: src, rng: rand.New(src), buf: make([]byte, chunk)}
	g.vocab = make([]string, 4096)
	for i := range g.vocab {
		w := make([]byte, 2+g.rng.IntN(9))
		for j := range w {
			w[j] = byte('a' + g.rng.IntN(26))
		}
		g.vocab[i] = string(w)
	}
	g.corpus = g.text(1 << 20)
	return g
}

// skewed returns an index below n, small ones far more often.
func (g *layerGen) skewed(n int) int { return g.rng.IntN(n) * g.rng.IntN(n) / n }

// text returns n bytes of lines built from a pool of phrases, as source
// code and configuration repeat identifiers and idioms.
func (g *layerGen) text(n int) []byte {
	phrases := make([]string, 1024)
	for i := range phrases {
		var p bytes.Buffer
		for range 2 + g.rng.IntN(6) {
			p.WriteString(g.vocab[g.skewed(len(g.vocab))])
			p.WriteString([]string{" ", ".", "(", ", ", " = "}[g.rng.IntN(5)])
		}
		phrases[i] = p.String()
	}
	seps := []string{" ", " ", " ", " ", ", ", ".", "(", ") ", " = ", "_", ": ", "/"}
	indents := []string{"", "\t", "\t\t", "    ", "        ", "\t\t\t"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(indents[g.rng.IntN(len(indents))])
		for range 1 + g.rng.IntN(3) {
			b.WriteString(phrases[g.skewed(len(phrases))])
			b.WriteString(seps[g.rng.IntN(len(seps))])
		}
		b.WriteString(g.vocab[g.rng.IntN(len(g.vocab))])
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

// content writes size bytes of file content in runs of up to a segment,
// each random (with probability random) or text. (Runs, not single chunks:
// text compresses well only after text, within gzip's 32 KiB window.)
func (g *layerGen) content(w io.Writer, size int64, random float64) error {
	for size > 0 {
		run := min(size, segment)
		rnd := g.rng.Float64() < random
		size -= run
		for run > 0 {
			n := int(min(run, chunk))
			p := g.buf[:n]
			if rnd {
				_, _ = g.src.Read(p)
			} else {
				off := g.rng.IntN(len(g.corpus) - n + 1)
				copy(p, g.corpus[off:])
			}
			if _, err := w.Write(p); err != nil {
				return err
			}
			run -= int64(n)
		}
	}
	return nil
}

// sizes splits total into n log-normal file sizes.
func (g *layerGen) sizes(n int, total int64, sigma float64) []int64 {
	w := make([]float64, n)
	var sum float64
	for i := range w {
		w[i] = math.Exp(sigma * g.rng.NormFloat64())
		sum += w[i]
	}
	out := make([]int64, n)
	var used int64
	for i := range w {
		out[i] = int64(float64(total) * w[i] / sum)
		used += out[i]
	}
	out[n-1] += total - used
	return out
}

var extensions = []string{".py", ".h", ".c", ".go", ".so", ".json", ".txt", ".conf", ".js", ".a", ""}

// writeTar writes the layer's tar stream: a random tree of directories
// under a few top-level ones, the files spread across it (in directory
// order, as a tar of a real tree is), a symlink for every 50th file, and
// the chain files.
func writeTar(w io.Writer, name string, index int, l layerSpec) (int, error) {
	g := newLayerGen(name, index)
	tw := tar.NewWriter(w)
	entries := 0
	dir := func(p string) error {
		entries++
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: epoch})
	}
	file := func(p string, mode, size int64, random float64) error {
		entries++
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: size, ModTime: epoch}); err != nil {
			return err
		}
		return g.content(tw, size, random)
	}
	for _, p := range []string{"usr", "usr/lib", "usr/share", "opt", "var", "var/lib"} {
		if err := dir(p); err != nil {
			return entries, err
		}
	}
	roots := []string{"usr/lib", "usr/share", "opt", "var/lib"}
	type node struct {
		path  string
		depth int
		files []int
	}
	nodes := make([]*node, max(1, l.files/12))
	for i := range nodes {
		parent := &node{path: roots[g.rng.IntN(len(roots))]}
		if i >= len(roots) && g.rng.IntN(4) != 0 {
			if p := nodes[g.rng.IntN(i)]; p.depth < 6 {
				parent = p
			}
		}
		nodes[i] = &node{path: path.Join(parent.path, fmt.Sprintf("%s-%d.%d", g.vocab[g.rng.IntN(len(g.vocab))], index, i)), depth: parent.depth + 1}
	}
	for i := range l.files {
		n := nodes[g.rng.IntN(len(nodes))]
		n.files = append(n.files, i)
	}
	sizes := g.sizes(l.files, l.bytes, l.sigma)
	for _, n := range nodes {
		if err := dir(n.path); err != nil {
			return entries, err
		}
		for _, i := range n.files {
			ext := extensions[g.rng.IntN(len(extensions))]
			base := fmt.Sprintf("%s_%d_%d%s", g.vocab[g.rng.IntN(len(g.vocab))], index, i, ext)
			mode := int64(0o644)
			if ext == "" || ext == ".so" {
				mode = 0o755
			}
			if err := file(path.Join(n.path, base), mode, sizes[i], l.random); err != nil {
				return entries, err
			}
			if i%50 == 49 {
				entries++
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: path.Join(n.path, base+".link"), Linkname: base, Mode: 0o777, ModTime: epoch}); err != nil {
					return entries, err
				}
			}
		}
	}
	if l.chain {
		if err := dir("etc"); err != nil {
			return entries, err
		}
		if err := dir("etc/bench"); err != nil {
			return entries, err
		}
		if err := file(fmt.Sprintf("etc/bench/layer-%02d.conf", index), 0o644, 1024, 0); err != nil {
			return entries, err
		}
		if index > 0 {
			if err := file(fmt.Sprintf("etc/bench/.wh.layer-%02d.conf", index-1), 0o644, 0, 0); err != nil {
				return entries, err
			}
		}
	}
	return entries, tw.Close()
}

// pushedImage is a generated image in the benchmark's registry.
type pushedImage struct {
	*generatedImage
	// repo is its repository, bench/<name>.
	repo string
	// ref is host/repo:tag, as ctr takes it.
	ref string
}

// push pushes img's layers, a config listing their diffIDs and an OCI
// manifest for this machine's platform to reg as bench/<name>:1.
func push(t testing.TB, reg *registrytest.Registry, img *generatedImage) *pushedImage {
	t.Helper()
	repo := "bench/" + img.spec.name
	cfg := v1.Image{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, RootFS: v1.RootFS{Type: "layers"}}
	m := v1.Manifest{Versioned: ocispec.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	for i, l := range img.Layers {
		data, err := os.ReadFile(img.blobPath(i))
		if err != nil {
			t.Fatal(err)
		}
		if got := reg.PushBlob(t, repo, data); got != l.Digest {
			t.Fatalf("cached layer %s is %s, not %s: remove %s and run again", img.blobPath(i), got, l.Digest, img.dir)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: l.Digest, Size: l.Size})
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Config = v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: reg.PushBlob(t, repo, data), Size: int64(len(data))}
	data, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	reg.PushManifest(t, repo, "1", v1.MediaTypeImageManifest, data)
	return &pushedImage{generatedImage: img, repo: repo, ref: reg.Host() + "/" + repo + ":1"}
}

// TestGenerateLayer checks that a layer is the same bytes every time, that
// its metadata describes it, and that its tar holds what the spec asks for.
func TestGenerateLayer(t *testing.T) {
	t.Parallel()
	spec := layerSpec{files: 60, bytes: 3 * mb, sigma: 1.5, random: 0.3, chain: true}
	var first, second bytes.Buffer
	meta, err := writeLayer(&first, "test", 1, spec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := writeLayer(&second, "test", 1, spec)
	if err != nil {
		t.Fatal(err)
	}
	if meta != again || !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatalf("two generations differ: %+v and %+v", meta, again)
	}
	if got := digest.FromBytes(first.Bytes()); got != meta.Digest || int64(first.Len()) != meta.Size {
		t.Errorf("blob is %s (%d bytes), metadata says %s (%d)", got, first.Len(), meta.Digest, meta.Size)
	}
	zr, err := gzip.NewReader(&first)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(zr, h))
	var files, entries int
	var size int64
	whiteout := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries++
		if hdr.Name == "etc/bench/.wh.layer-00.conf" {
			whiteout = true
		} else if hdr.Typeflag == tar.TypeReg && !strings.HasPrefix(hdr.Name, "etc/bench/") {
			files++
			size += hdr.Size
		}
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Fatal(err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != meta.DiffID {
		t.Errorf("tar is %s, metadata says diffID %s", got, meta.DiffID)
	}
	if files != spec.files || size != spec.bytes || entries != meta.Entries || !whiteout {
		t.Errorf("tar has %d files of %d bytes in %d entries (whiteout %v), want %d files of %d bytes in %d entries with a whiteout",
			files, size, entries, whiteout, spec.files, spec.bytes, meta.Entries)
	}
	if ratio := float64(meta.Uncompressed) / float64(meta.Size); ratio < 1.5 || ratio > 2.5 {
		t.Errorf("layer compresses %.2f×, want about 2×", ratio)
	}
}
