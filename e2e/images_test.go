//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Media types of the generated images (OCI).
const (
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// shape is the size of a generated image.
type shape struct {
	Layers, FilesPerLayer int
	FileSize              int64
}

// genLayer is one generated layer: a gzipped tar of files with seeded
// random content, kept in a file.
type genLayer struct {
	Path   string
	Digest digest.Digest
	DiffID digest.Digest
	Size   int64
	// Files are the regular files the layer adds, by path (relative, no
	// leading slash), with the sha256 of their content.
	Files map[string]digest.Digest
}

// genImage is one generated single-platform image: its layers share
// nothing with any other image, so each blob is fetched by exactly one
// snapshotter.
type genImage struct {
	Name     string // repository, e.g. e2e/wave3-a
	Tag      string
	Layers   []genLayer
	Config   []byte
	Manifest []byte
}

// Ref is the image as the services pull it.
func (g *genImage) Ref() string { return registryHost + "/" + g.Name + ":" + g.Tag }

// ManifestDigest is the manifest's digest.
func (g *genImage) ManifestDigest() digest.Digest { return digest.FromBytes(g.Manifest) }

// ConfigDigest is the config's digest.
func (g *genImage) ConfigDigest() digest.Digest { return digest.FromBytes(g.Config) }

// ChainIDs are the chainIDs of the image's layer prefixes, bottom first.
func (g *genImage) ChainIDs() []digest.Digest {
	var out []digest.Digest
	for i, l := range g.Layers {
		if i == 0 {
			out = append(out, l.DiffID)
			continue
		}
		out = append(out, digest.FromString(out[i-1].String()+" "+l.DiffID.String()))
	}
	return out
}

// Size is the compressed size of the image's layers.
func (g *genImage) Size() int64 {
	var n int64
	for _, l := range g.Layers {
		n += l.Size
	}
	return n
}

// generate writes an image named name of the given shape into dir. The
// content depends on seed only, and half of every file compresses.
func generate(dir, name string, seed uint64, sh shape) (*genImage, error) {
	img := &genImage{Name: name, Tag: "1"}
	for li := range sh.Layers {
		l, err := generateLayer(dir, name, li, seed, sh)
		if err != nil {
			return nil, err
		}
		img.Layers = append(img.Layers, l)
	}
	diffIDs := make([]string, 0, len(img.Layers))
	for _, l := range img.Layers {
		diffIDs = append(diffIDs, l.DiffID.String())
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return nil, err
	}
	img.Config = cfg
	layers := make([]map[string]any, 0, len(img.Layers))
	for _, l := range img.Layers {
		layers = append(layers, map[string]any{"mediaType": mediaTypeLayer, "digest": l.Digest, "size": l.Size})
	}
	img.Manifest, err = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        map[string]any{"mediaType": mediaTypeConfig, "digest": img.ConfigDigest(), "size": len(cfg)},
		"layers":        layers,
	})
	return img, err
}

func generateLayer(dir, name string, li int, seed uint64, sh shape) (genLayer, error) {
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.tar.gz", strings.ReplaceAll(name, "/", "_"), li))
	f, err := os.Create(path)
	if err != nil {
		return genLayer{}, err
	}
	defer func() { _ = f.Close() }()
	blobHash, diffHash := sha256.New(), sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, blobHash), 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return genLayer{}, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, diffHash))
	l := genLayer{Path: path, Files: map[string]digest.Digest{}}
	mtime := time.Unix(1700000000, 0)
	base := fmt.Sprintf("e2e/%s/layer%d", strings.ReplaceAll(name, "/", "-"), li)
	parts := strings.Split(base, "/")
	for i := range parts {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return genLayer{}, err
		}
	}
	rng := rand.NewChaCha8(sha256.Sum256([]byte(fmt.Sprintf("%d/%s/%d", seed, name, li))))
	chunk := make([]byte, 64<<10)
	for fi := range sh.FilesPerLayer {
		fname := fmt.Sprintf("%s/f%d", base, fi)
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fname, Mode: 0o644, Size: sh.FileSize, ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return genLayer{}, err
		}
		fh := sha256.New()
		for left := sh.FileSize; left > 0; {
			n := min(left, int64(len(chunk)))
			// Random first half, zeros second: gzip has work to do both
			// ways.
			_, _ = rng.Read(chunk[:n/2])
			clear(chunk[n/2 : n])
			if _, err := tw.Write(chunk[:n]); err != nil {
				return genLayer{}, err
			}
			fh.Write(chunk[:n])
			left -= n
		}
		l.Files[fname] = digest.NewDigestFromBytes(digest.SHA256, fh.Sum(nil))
	}
	if err := tw.Close(); err != nil {
		return genLayer{}, err
	}
	if err := zw.Close(); err != nil {
		return genLayer{}, err
	}
	if err := bw.Flush(); err != nil {
		return genLayer{}, err
	}
	st, err := f.Stat()
	if err != nil {
		return genLayer{}, err
	}
	l.Size = st.Size()
	l.Digest = digest.NewDigestFromBytes(digest.SHA256, blobHash.Sum(nil))
	l.DiffID = digest.NewDigestFromBytes(digest.SHA256, diffHash.Sum(nil))
	return l, f.Close()
}

// pusher pushes generated images to the stack's registry over plain HTTP
// with basic auth, as `docker push` would (blobs, then the manifest by
// tag).
type pusher struct {
	base           string
	user, password string
	client         *http.Client
}

func (p *pusher) push(ctx context.Context, img *genImage) error {
	for _, l := range img.Layers {
		f, err := os.Open(l.Path)
		if err != nil {
			return err
		}
		err = p.pushBlob(ctx, img.Name, l.Digest, l.Size, f)
		_ = f.Close()
		if err != nil {
			return err
		}
	}
	if err := p.pushBlob(ctx, img.Name, img.ConfigDigest(), int64(len(img.Config)), bytes.NewReader(img.Config)); err != nil {
		return err
	}
	status, _, err := p.do(ctx, http.MethodPut, "/v2/"+img.Name+"/manifests/"+img.Tag, mediaTypeManifest, bytes.NewReader(img.Manifest), int64(len(img.Manifest)))
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		return fmt.Errorf("push manifest %s: %d", img.Ref(), status)
	}
	return nil
}

func (p *pusher) pushBlob(ctx context.Context, repo string, d digest.Digest, size int64, body io.Reader) error {
	status, header, err := p.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "", nil, 0)
	if err != nil {
		return err
	}
	if status != http.StatusAccepted {
		return fmt.Errorf("start upload of %s to %s: %d", d, repo, status)
	}
	loc, err := url.Parse(header.Get("Location"))
	if err != nil {
		return fmt.Errorf("upload of %s: bad Location: %w", d, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	status, _, err = p.do(ctx, http.MethodPut, loc.RequestURI(), "application/octet-stream", body, size)
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		return fmt.Errorf("upload %s to %s: %d", d, repo, status)
	}
	return nil
}

// do sends one request, drains its answer and returns its status and
// headers.
func (p *pusher) do(ctx context.Context, method, path, contentType string, body io.Reader, size int64) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.SetBasicAuth(p.user, p.password)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

// accessLine is one line of the registry's access log (Apache combined).
type accessLine struct {
	IP     string
	Method string
	Path   string
	Status int
	Bytes  int64
}

var accessRE = regexp.MustCompile(`^(\S+) \S+ \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)`)

// parseAccessLog returns the access log lines of a registry log, skipping
// the registry's other output.
func parseAccessLog(log string) []accessLine {
	var out []accessLine
	for _, line := range strings.Split(log, "\n") {
		m := accessRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[4])
		n, _ := strconv.ParseInt(m[5], 10, 64)
		path := m[3]
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		out = append(out, accessLine{IP: m[1], Method: m[2], Path: path, Status: status, Bytes: n})
	}
	return out
}

// object is a manifest or blob of a generated image, as the registry
// serves it.
type object struct {
	Image *genImage
	Kind  string // manifest, config or layer
	Path  string // /v2/<name>/manifests/<digest> or /v2/<name>/blobs/<digest>
	Size  int64
}

// objects lists what a pull of imgs reads from the registry by GET.
func objects(imgs []*genImage) []object {
	var out []object
	for _, img := range imgs {
		out = append(out,
			object{img, "manifest", "/v2/" + img.Name + "/manifests/" + img.ManifestDigest().String(), int64(len(img.Manifest))},
			object{img, "config", "/v2/" + img.Name + "/blobs/" + img.ConfigDigest().String(), int64(len(img.Config))})
		for _, l := range img.Layers {
			out = append(out, object{img, "layer", "/v2/" + img.Name + "/blobs/" + l.Digest.String(), l.Size})
		}
	}
	return out
}

// getStats counts a wave's GETs of each object.
type getStats struct {
	// Served counts the GETs answered 2xx, by path; Complete those of them
	// that sent the whole object.
	Served, Complete map[string]int
	// ServedBy counts complete GETs by path and client address.
	ServedBy map[string]map[string]int
	// Challenged counts GETs answered 401 (the authorizer's first request
	// of a replica, before it knows the registry wants basic auth).
	Challenged int
	// Heads counts HEAD requests (tag resolutions).
	Heads int
	// Other lists GETs of paths that are not the images' objects.
	Other []string
}

func countGets(lines []accessLine, objs []object) getStats {
	st := getStats{Served: map[string]int{}, Complete: map[string]int{}, ServedBy: map[string]map[string]int{}}
	size := map[string]int64{}
	for _, o := range objs {
		size[o.Path] = o.Size
	}
	for _, l := range lines {
		switch {
		case l.Method == http.MethodHead:
			st.Heads++
		case l.Method != http.MethodGet:
		case l.Status == http.StatusUnauthorized:
			st.Challenged++
		case l.Status/100 != 2:
			st.Other = append(st.Other, fmt.Sprintf("%s %d", l.Path, l.Status))
		default:
			want, ok := size[l.Path]
			if !ok {
				st.Other = append(st.Other, l.Path)
				continue
			}
			st.Served[l.Path]++
			if l.Bytes == want {
				st.Complete[l.Path]++
				if st.ServedBy[l.Path] == nil {
					st.ServedBy[l.Path] = map[string]int{}
				}
				st.ServedBy[l.Path][l.IP]++
			}
		}
	}
	return st
}
