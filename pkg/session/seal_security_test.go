package session_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
)

// discardFiles is a FileWriter that keeps nothing.
type discardFiles struct{}

func (discardFiles) WriteAt(dirsync.Entry, []byte, int64) error { return nil }
func (discardFiles) Done(dirsync.Entry) error                   { return nil }

// Requests others can read. Under deploy/nats.conf, a client subscribed to
// every session's subjects (as it may, to serve its own) while the
// exporter writes a blob into another client's local cache through that
// client's keyed session, and the snapshotter lists and reads that
// client's directory: the spy sees neither the blob's bytes nor the
// directory's name nor its files' paths.
func TestSecuritySessionRequestsSealed(t *testing.T) {
	connect := startDeployServer(t)
	spyNC, _ := connect("client")
	spy := tapOn(t, spyNC, session.SubjectRoot+".*.>")

	out, err := ocilayout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const secretPath = "private-plans-of-another-team.txt"
	if err := os.WriteFile(filepath.Join(dir, secretPath), []byte("q3"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ownerNC, _ := connect("client")
	srv, err := session.Serve(t.Context(), ownerNC, key.ID, session.Config{
		Key:       key,
		Protocols: []session.Protocol{storeProtocol(t, map[string]*ocilayout.Layout{"cache": out}), dirProtocol(t, map[string]string{"context-of-the-victim": dir}), outputProtocol(t, map[string]*ocilayout.Layout{"cache": out})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ctx := t.Context()

	blob := bytes.Repeat([]byte("the victim's cached layer "), 4096)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	expNC, _ := connect("exporter")
	exp, err := session.NewClient(expNC, session.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := output.NewClient(exp).Write(ctx, key.ID, "cache", desc, bytes.NewReader(blob)); err != nil {
		t.Fatalf("the exporter writes into the session: %v", err)
	}
	if has, err := out.Has(t.Context(), desc); err != nil || !has {
		t.Fatalf("the blob is in the client's cache: %v, %v", has, err)
	}
	snapNC, _ := connect("snapshotter")
	snapSession, err := session.NewClient(snapNC, session.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	snap := dirsync.NewClient(snapSession)
	entries, err := snap.List(ctx, key.ID, "context-of-the-victim", dirsync.Filter{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("the snapshotter lists %v, %v", entries, err)
	}
	if err := snap.ReadFiles(ctx, key.ID, "context-of-the-victim", entries, discardFiles{}); err != nil {
		t.Fatalf("the snapshotter reads the files: %v", err)
	}

	// A request in the clear is refused: a service that would send one
	// finds out at once.
	other := []byte("written in the clear")
	clear, err := json.Marshal(output.WriteRequest{Store: "cache", Blob: ocispec.Descriptor{Digest: digest.FromBytes(other), Size: int64(len(other))}, Data: other})
	if err != nil {
		t.Fatal(err)
	}
	m, err := expNC.Request(session.Subject(key.ID, output.OpWrite), clear, 5*time.Second)
	if err != nil || m.Header.Get(session.HeaderError) != session.CodeInvalid {
		t.Errorf("a write in the clear: %v, %v; want refused as invalid", m, err)
	}
	if has, _ := out.Has(t.Context(), ocispec.Descriptor{Digest: digest.FromBytes(other), Size: int64(len(other))}); has {
		t.Error("a write in the clear was committed")
	}

	_ = spyNC.Flush()
	msgs := spy.all()
	if len(msgs) == 0 {
		t.Fatal("the spy saw no request at all: the premise (it may subscribe to every session) does not hold")
	}
	secrets := map[string][]byte{
		"a chunk of the blob":       blob[:64],
		"a chunk of the blob (b64)": []byte(base64.StdEncoding.EncodeToString(blob[:96])),
		"the blob's digest":         []byte(desc.Digest.Encoded()),
		"the directory's name":      []byte("context-of-the-victim"),
		"a file's path":             []byte(secretPath),
	}
	for _, m := range msgs {
		for what, s := range secrets {
			if bytes.Contains(m.Data, s) {
				t.Errorf("the spy read %s on %s", what, m.Subject)
			}
		}
	}
}
