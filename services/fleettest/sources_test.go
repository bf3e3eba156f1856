package fleettest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// The source conformance suite: every scheme handler of the fleet, one
// case each, through the same five checks (TestSourceSchemes):
//
//   - keys: stable across calls and replicas, BuildKit's solver digest,
//     the known answers of the fixtures;
//   - done: the last index says done, and nothing is asked after it;
//   - bad attributes: each fails with BuildKit's text, and the fleet goes
//     on;
//   - snapshot: a pull commits the files the source holds, and a second
//     pull is a cache hit;
//   - cancellation: a snapshotter replica stopped while its transfer is
//     stalled halfway, the transfer then cut off, leaves nothing
//     half-made, and another replica on its data dir finishes the pull.
//
// The snapshot and cancellation checks run on both snapshotters: native
// and overlayfs (the production default), which needs root and overlayfs;
// without them the overlayfs checks skip, or fail under CI (pkg/testenv).
//
// Everything is real: embedded NATS, the in-process registry, httptest
// servers, git daemon, client sessions; the stalls sit between the fleet
// and those servers (sources.go).

// sourceCase is one scheme handler's row of the table.
type sourceCase struct {
	// name names the scheme (and the subtest).
	name string
	// indexes is how many key indexes the scheme has: 2 for images (the
	// main-manifest key, then the chainID), 1 for every other scheme.
	indexes int
	// snapshotKey is the name of the committed snapshot a pull of the
	// source makes, given its keys: chainSnapshot or contentSnapshot.
	snapshotKey func(keys []events.CacheKey) string
	// solverDigest is the solver digest of a key; nil means BuildKit's
	// sha256("buildkit.source.v0:" + key), which sourceDigest computes
	// without the code under test.
	solverDigest func(key string) string
	// neverHits marks a source whose keys are never cache hits (BuildKit's
	// session:… keys of local://): a second pull snapshots again.
	neverHits bool
	// extracts marks a source whose snapshot is made of image layers,
	// extracted with their owners: a snapshotter needs root for it.
	extracts bool
	// setup serves the source on s (servers, sessions, pushes) and
	// describes it.
	setup func(t *testing.T, s *fleettest.Stack) sourceSpec
}

// sourceSpec is a served source and what the fleet must make of it.
type sourceSpec struct {
	// identifier, attrs and platform are the source op.
	identifier string
	attrs      map[string]string
	platform   string
	// files is the whole tree the source's snapshot holds, by path.
	files map[string]fleettest.File
	// keys are the known-answer keys, one per index, computed without the
	// code under test (testdata fixtures, BuildKit's key JSON); nil when
	// the scheme has none.
	keys []string
	// pin is the known pin of the keys; empty when not known.
	pin string
	// bad are attribute (or identifier) variants of the source that must
	// fail.
	bad []badVariant
	// stall arms a stall of the next transfer the snapshot step makes:
	// called once the puller is done, before a snapshotter runs. Every
	// scheme has one.
	stall func(t *testing.T) *fleettest.Stall
}

// badVariant is a bad version of a source.
type badVariant struct {
	// name names the variant's subtest.
	name string
	// identifier replaces the source's identifier; empty keeps it.
	identifier string
	// attrs are the variant's attributes, all of them.
	attrs map[string]string
	// reason is BuildKit's error text the source.failed must carry,
	// exactly.
	reason string
}

// sourceCases is the table: one row per scheme handler.
func sourceCases() []sourceCase {
	return []sourceCase{
		{name: "docker-image", indexes: 2, snapshotKey: chainSnapshot, extracts: true, setup: dockerImage},
		{name: "oci-layout", indexes: 2, snapshotKey: chainSnapshot, extracts: true, setup: ociLayout},
		{name: "docker-image+blob", indexes: 1, snapshotKey: contentSnapshot, setup: dockerImageBlob},
		{name: "oci-layout+blob", indexes: 1, snapshotKey: contentSnapshot, setup: ociLayoutBlob},
		{name: "http", indexes: 1, snapshotKey: contentSnapshot, setup: httpSource(false)},
		{name: "https", indexes: 1, snapshotKey: contentSnapshot, setup: httpSource(true)},
		{name: "git", indexes: 1, snapshotKey: contentSnapshot, setup: gitSource},
		{name: "local", indexes: 1, snapshotKey: contentSnapshot, neverHits: true, setup: localSource},
	}
}

// localSource is a directory of the client, served in its session through
// a relay that can hold its file reads: two files of 300 KiB, so that the
// transfer takes two requests, a directory and a symlink.
func localSource(t *testing.T, s *fleettest.Stack) sourceSpec {
	dir := t.TempDir()
	mtime := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	big := func(c byte) string { return strings.Repeat(string(c), 300<<10) }
	for _, f := range []struct {
		path, content string
		mode          os.FileMode
	}{{"one.bin", big('1'), 0o644}, {"sub/two.bin", big('2'), 0o600}} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("one.bin", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	nc, _ := s.Env.Connect(t, "client")
	back := session.NewID()
	srv, err := session.Serve(t.Context(), nc, back, session.Config{Protocols: []session.Protocol{fleettest.Dirs(t, map[string]string{"context": dir})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	front, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	relay := fleettest.RelaySession(t, nc, front, back)
	attrs := map[string]string{source.AttrLocalSessionID: front.ID, source.AttrSharedKeyHint: "cases"}
	return sourceSpec{
		identifier: "local://context",
		attrs:      attrs,
		files: map[string]fleettest.File{
			"one.bin":     {Content: big('1'), Mode: 0o644, ModTime: mtime},
			"sub":         {Dir: true, Mode: 0o750},
			"sub/two.bin": {Content: big('2'), Mode: 0o600, ModTime: mtime},
			"link":        {Link: "one.bin"},
		},
		bad: []badVariant{
			{name: "no session", attrs: without(attrs, source.AttrLocalSessionID), reason: "could not access local files without session"},
			{name: "patterns not JSON", attrs: with(attrs, source.AttrIncludePatterns, "a"), reason: "invalid character 'a' looking for beginning of value"},
			{name: "metadata transfer not a bool", attrs: with(attrs, source.AttrMetadataTransfer, "x"),
				reason: `invalid value for local.metadatatransfer "x": strconv.ParseBool: parsing "x": invalid syntax`},
		},
		stall: func(t *testing.T) *fleettest.Stall { return relay.ArmFiles(t) },
	}
}

// TestSourceSchemes runs every case of the table through every check.
func TestSourceSchemes(t *testing.T) {
	t.Parallel()
	for _, c := range sourceCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			t.Run("keys are stable", func(t *testing.T) { t.Parallel(); checkKeys(t, c) })
			t.Run("done semantics", func(t *testing.T) { t.Parallel(); checkDone(t, c) })
			t.Run("bad attributes", func(t *testing.T) { t.Parallel(); checkBadAttributes(t, c) })
			for _, kind := range []snapshot.Kind{snapshot.KindNative, snapshot.KindOverlay} {
				t.Run("snapshot content/"+string(kind), func(t *testing.T) {
					t.Parallel()
					needSnapshotter(t, c, kind)
					checkSnapshot(t, c, kind)
				})
				t.Run("cancellation/"+string(kind), func(t *testing.T) {
					t.Parallel()
					needSnapshotter(t, c, kind)
					checkCancellation(t, c, kind, cutTransfer)
				})
				t.Run("stop/"+string(kind), func(t *testing.T) {
					t.Parallel()
					needSnapshotter(t, c, kind)
					checkCancellation(t, c, kind, stopGrace)
				})
			}
		})
	}
}

// needSnapshotter ends a check that cannot run here (a skip, or a failure
// under CI): the overlayfs snapshotter needs root and overlayfs, and the
// extraction of image layers root.
func needSnapshotter(t *testing.T, c sourceCase, kind snapshot.Kind) {
	t.Helper()
	if kind == snapshot.KindOverlay {
		testenv.Overlayfs(t)
	}
	if c.extracts {
		testenv.Root(t, "image layers are extracted with their owners")
	}
}

// The trust of https sources. The puller and the snapshotter have no CA
// setting: they trust the system roots, which Go reads, on Linux, from
// SSL_CERT_FILE when it is set, once, at the first verification. So before
// any test runs, httptest's certificate (the one every
// httptest.NewTLSServer uses) becomes the process's only root.
func TestMain(m *testing.M) {
	cleanup, err := trustHTTPTestCertificate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func trustHTTPTestCertificate() (cleanup func(), err error) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	cert := srv.Certificate()
	srv.Close()
	dir, err := os.MkdirTemp("", "fleettest-ca-")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		return nil, err
	}
	if err := os.Setenv("SSL_CERT_FILE", file); err != nil {
		return nil, err
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}

// chainSnapshot names an image's snapshot: the chainID, which is the key
// of index 1.
func chainSnapshot(keys []events.CacheKey) string { return keys[len(keys)-1].Key }

// contentSnapshot names the snapshot of a source that is not an image
// (events.Content.Key).
func contentSnapshot(keys []events.CacheKey) string { return (&events.Content{}).Key(keys) }

// sourceDigest is BuildKit's solver digest of a key, computed here.
func sourceDigest(key string) string {
	sum := sha256.Sum256([]byte("buildkit.source.v0:" + key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blobKey is BuildKit's key of a blob source (containerblob's JSON, Go
// field names, no omitempty), computed here.
func blobKey(d digest.Digest, filename string, perm int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, `{"Version":"v1","Digest":%q,"Filename":%q,"Perm":%d,"UID":0,"GID":0}`, d, filename, perm))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// with returns a copy of attrs with kv (key, value, …) set.
func with(attrs map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range attrs {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// without returns a copy of attrs without key.
func without(attrs map[string]string, key string) map[string]string {
	out := with(attrs)
	delete(out, key)
	return out
}

// snapshotterAt makes a snapshotter replica use dir and the snapshotter
// kind.
func snapshotterAt(dir string, kind snapshot.Kind) func(*snapshotter.Config) {
	return func(c *snapshotter.Config) {
		c.DataDir = dir
		c.Snapshotter = kind
	}
}

// blobGET matches the GET of blob d from a registry.
func blobGET(d string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// layoutBlob is the path of blob d in the fixture layout dir.
func layoutBlob(dir, d string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
}

// The image cases read the "single" fixture (testdata/images): its keys
// are gen.py's, its files what its layer tars hold.
const (
	imageName     = "single"
	imagePlatform = "linux/amd64"
)

// imageBad are the variants of an image source's attributes, with
// BuildKit's texts (image.go, and the puller's resolve-time checks).
func imageBad(attrs map[string]string, ref, top string) []badVariant {
	wrong := "sha256:" + strings.Repeat("0", 64)
	return []badVariant{
		{name: "resolve mode", attrs: with(attrs, source.AttrImageResolveMode, "sometimes"), reason: "invalid resolvemode: sometimes"},
		{name: "record type", attrs: with(attrs, source.AttrImageRecordType, "bogus"), reason: "invalid record type bogus"},
		{name: "zero layer limit", attrs: with(attrs, source.AttrImageLayerLimit, "0"), reason: "invalid layer limit 0"},
		{name: "layer limit not a number", attrs: with(attrs, source.AttrImageLayerLimit, "two"),
			reason: `invalid layer limit two: strconv.Atoi: parsing "two": invalid syntax`},
		{name: "layer limit past the layers", attrs: with(attrs, source.AttrImageLayerLimit, "4"),
			reason: "layer limit 4 is greater than the number of layers in the image 3"},
		{name: "malformed checksum", attrs: with(attrs, source.AttrImageChecksum, "nope"),
			reason: "invalid image checksum nope: invalid checksum digest format"},
		{name: "checksum mismatch", attrs: with(attrs, source.AttrImageChecksum, wrong),
			reason: fmt.Sprintf("image digest %s for %s does not match expected checksum %s", top, ref, wrong)},
	}
}

// dockerImage is the fixture image pushed to the registry and pulled
// through a proxy that can hold a layer download halfway.
func dockerImage(t *testing.T, s *fleettest.Stack) sourceSpec {
	fx := fleettest.LoadFixtures(t)
	img := fx.Images[imageName]
	dir := filepath.Join(fleettest.ImagesDir, img.Path)
	host, stalls := s.ProxyRegistry(t)
	s.Registry.PushLayout(t, dir, "cases/single:1")
	ref := host + "/cases/single:1"
	layers := img.Strings(t, imagePlatform, "layers")
	return sourceSpec{
		identifier: "docker-image://" + ref,
		platform:   imagePlatform,
		files:      fleettest.LayoutTree(t, dir, layers),
		keys:       []string{img.Field(t, imagePlatform, "key0"), img.Field(t, imagePlatform, "index1_key")},
		pin:        img.Digest,
		bad:        imageBad(nil, ref, img.Digest),
		// The first layer, which the snapshotter extracts as it downloads.
		stall: func(t *testing.T) *fleettest.Stall {
			return stalls.Arm(t, blobGET(layers[0]), fileSize(t, layoutBlob(dir, layers[0]))/2)
		},
	}
}

// serveLayout serves the fixture layout of the image cases as store
// "single" of a client session, through a relay that can hold a blob
// read halfway, and returns the relay and the session id sources name.
func serveLayout(t *testing.T, s *fleettest.Stack, dir string) (*fleettest.SessionRelay, string) {
	l, err := ocilayout.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	nc, _ := s.Env.Connect(t, "client")
	back := session.NewID()
	srv, err := session.Serve(t.Context(), nc, back, session.Config{Protocols: []session.Protocol{fleettest.Stores(t, map[string]*ocilayout.Layout{imageName: l})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	front, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return fleettest.RelaySession(t, nc, front, back), front.ID
}

// ociLayout is the fixture image read from a client's layout.
func ociLayout(t *testing.T, s *fleettest.Stack) sourceSpec {
	fx := fleettest.LoadFixtures(t)
	img := fx.Images[imageName]
	dir := filepath.Join(fleettest.ImagesDir, img.Path)
	relay, id := serveLayout(t, s, dir)
	layers := img.Strings(t, imagePlatform, "layers")
	config := img.Field(t, imagePlatform, "config")
	attrs := map[string]string{source.AttrOCILayoutSessionID: id, source.AttrOCILayoutStoreID: imageName}
	const locator = "stevedore.local/" + imageName
	return sourceSpec{
		identifier: "oci-layout://" + locator + "@" + img.Digest,
		attrs:      attrs,
		platform:   imagePlatform,
		files:      fleettest.LayoutTree(t, dir, layers),
		keys:       []string{img.Field(t, imagePlatform, "key0"), img.Field(t, imagePlatform, "index1_key")},
		pin:        img.Digest,
		bad: []badVariant{
			{name: "zero layer limit", attrs: with(attrs, source.AttrOCILayoutLayerLimit, "0"), reason: "invalid layer limit 0"},
			{name: "layer limit not a number", attrs: with(attrs, source.AttrOCILayoutLayerLimit, "x"),
				reason: `invalid layer limit x: strconv.Atoi: parsing "x": invalid syntax`},
			{name: "layer limit past the layers", attrs: with(attrs, source.AttrOCILayoutLayerLimit, "4"),
				reason: "layer limit 4 is greater than the number of layers in the image 3"},
			{name: "tag without digest", identifier: "oci-layout://" + locator + ":latest", attrs: attrs,
				reason: `reference "` + locator + `:latest" must have digest`},
			{name: "neither index nor manifest", identifier: "oci-layout://" + locator + "@" + config, attrs: attrs,
				reason: `reference "` + locator + "@" + config + `" contains neither an index nor a manifest`},
		},
		stall: func(t *testing.T) *fleettest.Stall { return relay.Arm(t, digest.Digest(layers[0])) },
	}
}

// blobBad are the variants of a blob source's file attributes.
func blobBad(attrs map[string]string, noDigest string, reference string) []badVariant {
	return []badVariant{
		{name: "perm not a number", attrs: with(attrs, source.AttrHTTPPerm, "rwx"), reason: `strconv.ParseInt: parsing "rwx": invalid syntax`},
		{name: "uid not a number", attrs: with(attrs, source.AttrHTTPUID, "root"), reason: `strconv.ParseInt: parsing "root": invalid syntax`},
		{name: "record type", attrs: with(attrs, source.AttrImageRecordType, "bogus"), reason: "invalid record type bogus"},
		{name: "reference without digest", identifier: noDigest, attrs: attrs,
			reason: fmt.Sprintf("invalid reference digest: reference %q has no digest", reference)},
	}
}

// dockerImageBlob is one blob of a registry repository, named and moded
// by the attributes, pulled through a proxy that can hold it halfway.
func dockerImageBlob(t *testing.T, s *fleettest.Stack) sourceSpec {
	data := bytes.Repeat([]byte("#!/bin/sh\necho a tool stored as a blob\n"), 1024)
	dgst := s.Registry.PushBlob(t, "cases/blob", data)
	host, stalls := s.ProxyRegistry(t)
	attrs := map[string]string{source.AttrHTTPFilename: "tool.sh", source.AttrHTTPPerm: "0755"}
	return sourceSpec{
		identifier: "docker-image+blob://" + host + "/cases/blob@" + dgst.String(),
		attrs:      attrs,
		files:      map[string]fleettest.File{"tool.sh": {Content: string(data), Mode: 0o755, ModTime: time.Unix(0, 0)}},
		keys:       []string{blobKey(dgst, "tool.sh", 0o755)},
		pin:        dgst.String(),
		bad:        blobBad(attrs, "docker-image+blob://"+host+"/cases/blob:1", host+"/cases/blob:1"),
		stall: func(t *testing.T) *fleettest.Stall {
			return stalls.Arm(t, blobGET(dgst.String()), int64(len(data)/2))
		},
	}
}

// ociLayoutBlob is one blob (a layer) of a client's layout.
func ociLayoutBlob(t *testing.T, s *fleettest.Stack) sourceSpec {
	fx := fleettest.LoadFixtures(t)
	img := fx.Images[imageName]
	dir := filepath.Join(fleettest.ImagesDir, img.Path)
	relay, id := serveLayout(t, s, dir)
	blob := img.Strings(t, imagePlatform, "layers")[0]
	data, err := os.ReadFile(layoutBlob(dir, blob))
	if err != nil {
		t.Fatal(err)
	}
	const locator = "stevedore.local/" + imageName
	attrs := map[string]string{
		source.AttrOCILayoutSessionID: id, source.AttrOCILayoutStoreID: imageName,
		source.AttrHTTPFilename: "layer.tar.gz", source.AttrHTTPPerm: "0640",
	}
	bad := blobBad(attrs, "oci-layout+blob://"+locator+":latest", locator+":latest")
	bad = append(bad, badVariant{name: "no store", attrs: without(attrs, source.AttrOCILayoutStoreID),
		reason: "oci-layout blob source requires store id"})
	return sourceSpec{
		identifier: "oci-layout+blob://" + locator + "@" + blob,
		attrs:      attrs,
		files:      map[string]fleettest.File{"layer.tar.gz": {Content: string(data), Mode: 0o640, ModTime: time.Unix(0, 0)}},
		keys:       []string{blobKey(digest.Digest(blob), "layer.tar.gz", 0o640)},
		pin:        blob,
		bad:        bad,
		stall:      func(t *testing.T) *fleettest.Stall { return relay.Arm(t, digest.Digest(blob)) },
	}
}

// The http fixture: hello.txt of testdata/sources/www, served with the
// Last-Modified and without the ETag of the server BuildKit read it from,
// gets the key BuildKit computed (testdata/sources/README.md).
const (
	helloLastModified = "Thu, 01 Jan 2026 00:00:00 GMT"
	helloKey          = "sha256:70bb0490362b5bb00f241260e477ab66538b8288dfc51f18967f4994a44d8902"
	helloDigest       = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
)

// httpSource serves hello.txt over http or, with tls, https, from a
// server whose responses a stall can hold halfway.
func httpSource(tls bool) func(t *testing.T, s *fleettest.Stack) sourceSpec {
	return func(t *testing.T, _ *fleettest.Stack) sourceSpec {
		if tls && runtime.GOOS != "linux" {
			// See TestMain: without SSL_CERT_FILE the fleet cannot be made
			// to trust a test server.
			testenv.Lack(t, "https needs the fleet to trust httptest's certificate, which Go reads from SSL_CERT_FILE on Linux only, not on %s", runtime.GOOS)
		}
		content, err := os.ReadFile(filepath.Join(fleettest.ImagesDir, "..", "sources", "www", "hello.txt"))
		if err != nil {
			t.Fatal(err)
		}
		mod, err := http.ParseTime(helloLastModified)
		if err != nil {
			t.Fatal(err)
		}
		stalls := &fleettest.HTTPStalls{}
		h := stalls.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/hello.txt" {
				http.NotFound(w, r)
				return
			}
			http.ServeContent(w, r, "hello.txt", mod, bytes.NewReader(content))
		}))
		srv := httptest.NewUnstartedServer(h)
		if tls {
			srv.StartTLS()
		} else {
			srv.Start()
		}
		t.Cleanup(srv.Close)
		url := srv.URL + "/hello.txt"
		return sourceSpec{
			identifier: url,
			files:      map[string]fleettest.File{"hello.txt": {Content: string(content), Mode: 0o600, ModTime: mod}},
			keys:       []string{helloKey},
			pin:        helloDigest,
			bad: []badVariant{
				{name: "malformed checksum", attrs: map[string]string{source.AttrHTTPChecksum: "nope"}, reason: "invalid checksum digest format"},
				{name: "perm not a number", attrs: map[string]string{source.AttrHTTPPerm: "rw-"}, reason: `strconv.ParseInt: parsing "rw-": invalid syntax`},
				{name: "gid not a number", attrs: map[string]string{source.AttrHTTPGID: "staff"}, reason: `strconv.ParseInt: parsing "staff": invalid syntax`},
			},
			stall: func(t *testing.T) *fleettest.Stall {
				get := func(r *http.Request) bool { return r.Method == http.MethodGet && r.URL.Path == "/hello.txt" }
				return stalls.Arm(t, get, int64(len(content)/2))
			},
		}
	}
}

// gitExpected is testdata/sources/git/expected.json: the keys BuildKit
// computed for the fixture repository.
type gitExpected struct {
	Commits map[string]string `json:"commits"`
	Sources []struct {
		Name     string            `json:"name"`
		Fragment string            `json:"fragment"`
		Attrs    map[string]string `json:"attrs"`
		Key      string            `json:"key"`
	} `json:"sources"`
}

// loadGitFixture reads testdata/sources/git/expected.json: the keys a
// real BuildKit computed for the fixture repository.
func loadGitFixture(t *testing.T) gitExpected {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fleettest.ImagesDir, "..", "sources", "git", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx gitExpected
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	return fx
}

// key is BuildKit's key of the fixture source at fragment without
// attributes; it panics when the fixture has none (a broken test).
func (fx gitExpected) key(fragment string) string {
	for _, src := range fx.Sources {
		if src.Fragment == fragment && len(src.Attrs) == 0 {
			return src.Key
		}
	}
	panic("no fixture key for " + fragment)
}

// gitSource is the fixture repository (testdata/sources/git/repo.bundle)
// at its annotated tag v2, served by git daemon behind a TCP proxy that
// can hold a fetch.
func gitSource(t *testing.T, _ *fleettest.Stack) sourceSpec {
	gitDir := filepath.Join(fleettest.ImagesDir, "..", "sources", "git")
	fx := loadGitFixture(t)
	key := fx.key("v2")
	root := gitremotetest.NewRoot(t)
	root.CloneBundle(t, "repo", filepath.Join(gitDir, "repo.bundle"))
	daemon := gitremotetest.ServeDaemon(t, root)
	proxy := fleettest.NewTCPProxy(t, strings.TrimSuffix(strings.TrimPrefix(daemon.URL, "git://"), "/"))
	// What LLB makes of git://<proxy>/repo.git#v2: the URL goes in
	// git.fullurl, since the identifier alone means https.
	attrs := map[string]string{source.AttrFullRemoteURL: "git://" + proxy.Addr() + "/repo.git"}
	identifier := "git://" + proxy.Addr() + "/repo.git#v2"
	tag, commit := fx.Commits["v2_tag_object"], fx.Commits["main"]
	return sourceSpec{
		identifier: identifier,
		attrs:      attrs,
		// The tree of v2 (git ls-tree -r v2 of the bundle).
		files: map[string]fleettest.File{
			"README":       {Content: "hello\nsecond\n", Mode: 0o644},
			"sub":          {Dir: true, Mode: 0o755},
			"sub/file.txt": {Content: "in sub\n", Mode: 0o644},
		},
		keys: []string{key},
		// The pin of an annotated tag is the tag object, as in BuildKit.
		pin: tag,
		bad: []badVariant{
			{name: "checksum not hex", attrs: with(attrs, source.AttrGitChecksum, "nothex"),
				reason: "invalid checksum nothex for Git URL, expected hex commit hash"},
			{name: "checksum mismatch", attrs: with(attrs, source.AttrGitChecksum, "abcdef"),
				reason: "expected checksum to match abcdef, got " + tag + " or " + commit},
			{name: "ref like an option", identifier: strings.TrimSuffix(identifier, "v2") + "-v2", attrs: attrs,
				reason: `invalid git ref "-v2"`},
		},
		// The first byte of every fetch, then the rest is held.
		stall: func(t *testing.T) *fleettest.Stall { return proxy.Arm(t, 1) },
	}
}

// computed is what one resolve computed.
type computed struct {
	// keys are the keys of the cache.miss, by index.
	keys []events.CacheKey
	// by are the sources (replicas) of the cachekey.computed events.
	by []string
}

func resolveKeys(t *testing.T, s *fleettest.Stack, src sourceSpec) computed {
	t.Helper()
	rec := s.Resolve(t, src.identifier, src.attrs, src.platform)
	m := fleettest.Miss(t, rec)
	var c computed
	c.keys = m.Keys
	// Every cachekey.computed was published before the cache.miss.
	for _, e := range rec.OfType(events.TypeCacheKeyComputed) {
		c.by = append(c.by, e.Source)
	}
	return c
}

// checkKeys: the same source resolved twice on one puller replica, then,
// with that replica stopped and the fleet's shared memory wiped, on
// another, gets equal keys; they are complete, BuildKit's solver digests
// of themselves, and the fixtures' known answers.
func checkKeys(t *testing.T, c sourceCase) {
	s := fleettest.New(t)
	src := c.setup(t, s)
	p1 := s.Puller(t)
	first := resolveKeys(t, s, src)
	again := resolveKeys(t, s, src)
	p1.Stop()
	s.Forget(t)
	p2 := s.Puller(t)
	other := resolveKeys(t, s, src)

	for _, r := range []struct {
		name    string
		got     computed
		replica string
	}{{"first resolve", first, p1.Name}, {"second resolve", again, p1.Name}, {"resolve on another replica", other, p2.Name}} {
		if len(r.got.by) != c.indexes {
			t.Errorf("%s: %d cachekey.computed, want %d", r.name, len(r.got.by), c.indexes)
		}
		for _, by := range r.got.by {
			if by != "/stevedore/puller/"+r.replica {
				t.Errorf("%s: a key computed by %s, want %s", r.name, by, r.replica)
			}
		}
		if !slices.Equal(r.got.keys, first.keys) {
			t.Errorf("%s: keys\n%+v, want the first resolve's\n%+v", r.name, r.got.keys, first.keys)
		}
	}

	keys := first.keys
	if len(keys) != c.indexes {
		t.Fatalf("%d keys %+v, want %d", len(keys), keys, c.indexes)
	}
	digestOf := c.solverDigest
	if digestOf == nil {
		digestOf = sourceDigest
	}
	for i, k := range keys {
		if k.Key == "" || k.Digest == "" || k.Pin == "" {
			t.Errorf("key %d has an empty field: %+v", i, k)
		}
		if k.Index != i {
			t.Errorf("key %d says index %d", i, k.Index)
		}
		if want := digestOf(k.Key); k.Digest.String() != want {
			t.Errorf("key %d: digest %s, want sha256(\"buildkit.source.v0:\"+key) = %s", i, k.Digest, want)
		}
		if src.keys != nil && k.Key != src.keys[i] {
			t.Errorf("key %d: %s, want the known answer %s", i, k.Key, src.keys[i])
		}
		if src.pin != "" && k.Pin != src.pin {
			t.Errorf("key %d: pinned to %s, want %s", i, k.Pin, src.pin)
		}
	}
}

// stored waits until the puller's and the snapshotter's consumers have
// nothing left and returns what the stream holds of build id.
func stored(t *testing.T, s *fleettest.Stack, id string) []events.Event {
	t.Helper()
	s.ConsumerIdle(t, events.ConsumerPuller)
	s.ConsumerIdle(t, events.ConsumerSnapshotter)
	return replayBuild(t, s, id)
}

// replayBuild returns what the stream holds of build id now.
func replayBuild(t *testing.T, s *fleettest.Stack, id string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(t.Context(), 10*time.Second, errors.New("replay timed out"))
	defer cancel()
	es, err := bus.Replay(ctx, s.Env.JS, id)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// checkDone: every index up to the last is asked for once, each computed
// key says whether it is the last, and nothing is asked after the last.
func checkDone(t *testing.T, c sourceCase) {
	s := fleettest.New(t)
	src := c.setup(t, s)
	s.Puller(t)
	rec, id := s.Request(t, src.identifier, src.attrs, src.platform, false)
	miss := fleettest.Miss(t, rec)
	es := stored(t, s, id)

	requested := map[int]int{}
	var keys []events.CacheKey
	for _, e := range es {
		switch p := e.Data.(type) {
		case events.CacheKeyRequested:
			requested[p.Index]++
		case events.CacheKeyComputed:
			keys = append(keys, p.Key)
		}
	}
	for i := range c.indexes {
		if requested[i] != 1 {
			t.Errorf("index %d asked for %d times, want once", i, requested[i])
		}
	}
	for i, n := range requested {
		if i < 0 || i >= c.indexes {
			t.Errorf("index %d asked for %d times: there are %d indexes, the last said done", i, n, c.indexes)
		}
	}
	if len(keys) != c.indexes {
		t.Fatalf("%d keys computed %+v, want %d", len(keys), keys, c.indexes)
	}
	for i, k := range keys {
		if k.Index != i || k.Done != (i == c.indexes-1) {
			t.Errorf("computed key %d: index %d, done %v; want index %d, done only at the last", i, k.Index, k.Done, i)
		}
	}
	if c.indexes == 2 && (keys[0].Done || !keys[1].Done) {
		t.Errorf("image keys: index 0 done %v, index 1 done %v; want false, then true", keys[0].Done, keys[1].Done)
	}
	if !slices.Equal(miss.Keys, keys) {
		t.Errorf("cache.miss keys %+v, want the computed ones %+v", miss.Keys, keys)
	}
}

// checkBadAttributes: each bad variant ends in source.failed with
// BuildKit's text, code invalid, at the first attempt; the source itself
// resolves afterwards and no consumer is left with a message.
func checkBadAttributes(t *testing.T, c sourceCase) {
	s := fleettest.New(t)
	src := c.setup(t, s)
	s.Puller(t)
	if len(src.bad) == 0 {
		t.Fatal("the case has no bad variant")
	}
	t.Run("variants", func(t *testing.T) {
		for _, v := range src.bad {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				identifier := v.identifier
				if identifier == "" {
					identifier = src.identifier
				}
				f := fleettest.Failure(t, s.Resolve(t, identifier, v.attrs, src.platform))
				if f.Reason != v.reason || f.Code != "invalid" || f.Attempts != 1 {
					t.Errorf("failed with %q (%s, %d attempts), want %q (invalid, 1 attempt)", f.Reason, f.Code, f.Attempts, v.reason)
				}
			})
		}
	})
	m := fleettest.Miss(t, s.Resolve(t, src.identifier, src.attrs, src.platform))
	if len(m.Keys) != c.indexes {
		t.Errorf("the good source after the bad ones: keys %+v", m.Keys)
	}
	s.ConsumerIdle(t, events.ConsumerResolver)
	s.ConsumerIdle(t, events.ConsumerPuller)
}

// checkTree compares the committed snapshot key of store with the files
// the source holds.
func checkTree(t *testing.T, store *snapshot.Store, key string, want map[string]fleettest.File) {
	t.Helper()
	if diff := fleettest.DiffTrees(want, fleettest.SnapshotTree(t, store, key)); diff != nil {
		t.Errorf("snapshot %s differs from the source:\n  %s", key, strings.Join(diff, "\n  "))
	}
}

// checkSnapshot: a pull commits a snapshot, named after the keys, holding
// exactly the source's files with their modes and content; a second pull
// is a cache hit on that snapshot that asks for no other.
func checkSnapshot(t *testing.T, c sourceCase, kind snapshot.Kind) {
	s := fleettest.New(t)
	src := c.setup(t, s)
	s.Puller(t)
	node, svc := s.Snapshotter(t, snapshotterAt(t.TempDir(), kind))
	rec, _ := s.Request(t, src.identifier, src.attrs, src.platform, true)
	ready := fleettest.Ready(t, rec)
	if len(ready.Keys) != c.indexes {
		t.Fatalf("snapshot.ready keys %+v, want %d", ready.Keys, c.indexes)
	}
	if want := c.snapshotKey(ready.Keys); ready.SnapshotKey != want || ready.Node != node.Name {
		t.Errorf("snapshot %s on %s, want %s on %s", ready.SnapshotKey, ready.Node, want, node.Name)
	}
	if st := fleettest.ReadStore(t, svc.Store()); !slices.Contains(st.Committed, ready.SnapshotKey) || len(st.Active) != 0 || len(st.Ingests) != 0 {
		t.Errorf("store after the pull: %+v; want %s committed, nothing active", st, ready.SnapshotKey)
	}
	checkTree(t, svc.Store(), ready.SnapshotKey, src.files)

	again, id := s.Request(t, src.identifier, src.attrs, src.platform, true)
	end := fleettest.PullEnd(t, again)
	if c.neverHits {
		if r, ok := end.Data.(events.SnapshotReady); !ok || r.SnapshotKey == "" {
			t.Errorf("second pull ended with %v, want another snapshot (its keys never hit)", bustest.Summary([]events.Event{end}))
		}
		return
	}
	h, ok := end.Data.(events.CacheHit)
	if !ok || h.Record.Node != node.Name || h.Record.SnapshotKey != ready.SnapshotKey || h.Snapshot {
		t.Fatalf("second pull ended with %v %+v, want a cache.hit of %s on %s", bustest.Summary([]events.Event{end}), end.Data, ready.SnapshotKey, node.Name)
	}
	for _, e := range stored(t, s, id) {
		if e.Type() == events.TypeSnapshotRequested || e.Type() == events.TypeSnapshotReady {
			t.Errorf("the cache hit was followed by %s", events.NameOf(e.Type()))
		}
	}
}

// How a stalled transfer of checkCancellation ends.
const (
	// cutTransfer: the stall is cut off (the server or the client goes
	// away); the stopped replica's handler fails and returns.
	cutTransfer = "cut"
	// stopGrace: nothing is cut; the stopped replica's stop grace runs
	// out, which cancels the handler and hands its message back.
	stopGrace = "grace"
)

// checkCancellation: the pull's snapshot step is stalled halfway on one
// snapshotter replica, which is stopped; how says what ends its transfer:
// a cut (the stop waits for the work in flight, a stop grace of -1), or
// the stop grace running out (the handler's ctx ends and its message is
// handed back). The stopped replica's store holds nothing, committed or
// active, and no ingest; a replica started on the same data dir finishes
// the pull with the source's files, and the build never failed.
func checkCancellation(t *testing.T, c sourceCase, kind snapshot.Kind, how string) {
	s := fleettest.New(t)
	src := c.setup(t, s)
	if src.stall == nil {
		t.Fatal("the case has no stall")
	}
	s.Puller(t)
	dir := t.TempDir()
	rec, id := s.Request(t, src.identifier, src.attrs, src.platform, true)
	if e := rec.Wait(t, 20*time.Second, events.TypeSnapshotRequested, events.TypeSourceFailed, events.TypeCacheHit); e.Type() != events.TypeSnapshotRequested {
		t.Fatalf("the pull ended with %v before its snapshot", bustest.Summary([]events.Event{e}))
	}

	stall := src.stall(t)
	first, firstSvc := s.Snapshotter(t, snapshotterAt(dir, kind), func(c *snapshotter.Config) {
		if how == stopGrace {
			c.StopGrace = 300 * time.Millisecond
		} else {
			c.StopGrace = -1 // the stop waits for the handler, which the cut ends
		}
	})
	select {
	case <-stall.Arrived():
	case <-time.After(20 * time.Second):
		t.Fatalf("the snapshotter never reached the stall; recorded: %v", bustest.Summary(rec.Events()))
	}
	// Halfway: the snapshot being made exists.
	fleettest.WaitFor(t, func() bool { return len(fleettest.ReadStore(t, firstSvc.Store()).Active) > 0 })

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		first.Stop()
	}()
	if how == cutTransfer {
		stall.Cut()
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatalf("the replica did not stop (%s)", how)
	}
	stall.Cut() // what is still held, for the grace: nobody waits for it now
	if st := fleettest.ReadStore(t, firstSvc.Store()); !st.Empty() {
		t.Errorf("the stopped replica's store holds %+v; want no snapshot, committed or active, and no ingest", st)
	}
	// What it published went out before its handler returned.
	for _, e := range replayBuild(t, s, id) {
		if typ := e.Type(); typ == events.TypeSnapshotReady || typ == events.TypeSnapshotFailed {
			t.Errorf("the stopped replica emitted %s", bustest.Summary([]events.Event{e}))
		}
	}
	if err := firstSvc.Close(); err != nil {
		t.Fatal(err)
	}

	stall.Restore()
	second, secondSvc := s.Snapshotter(t, snapshotterAt(dir, kind))
	ready := fleettest.Ready(t, rec)
	if ready.Node != second.Name {
		t.Errorf("snapshot made on %s, want %s", ready.Node, second.Name)
	}
	checkTree(t, secondSvc.Store(), ready.SnapshotKey, src.files)
	if es := rec.OfType(events.TypeSnapshotFailed); len(es) != 0 {
		t.Errorf("the build saw %v", bustest.Summary(es))
	}
}
