package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ErrVerify marks content that does not match its descriptor: a wrong
// compressed digest or size, or a layer whose uncompressed digest is not
// its diffID. Nothing that fails verification is committed.
var ErrVerify = errors.New("content does not match its descriptor")

// LabelSize is the snapshot label holding the uncompressed size of its top
// layer, in bytes.
const LabelSize = "dev.stevedore.snapshot.size"

// DefaultWindow is how many layer downloads run at once by default.
const DefaultWindow = 4

// BlobSource opens a blob for reading from wherever it lives.
type BlobSource interface {
	Open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// BlobSourceFunc adapts a function to BlobSource.
type BlobSourceFunc func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)

// Open implements BlobSource.
func (f BlobSourceFunc) Open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return f(ctx, desc)
}

// Phase is what an Update is about.
type Phase int

// The phases of a layer.
const (
	// Downloading: bytes of the compressed blob arriving.
	Downloading Phase = iota
	// Extracting: the layer being unpacked into its snapshot.
	Extracting
)

// Update is progress on one layer.
type Update struct {
	// Layer is the compressed digest of the layer.
	Layer digest.Digest
	// Phase says whether it is downloading or extracting.
	Phase Phase
	// Current is the bytes downloaded so far (Downloading only).
	Current int64
	// Total is the blob's size (Downloading only).
	Total int64
	// Started is when the phase started.
	Started time.Time
	// Done is set on the phase's last update.
	Done bool
}

// Request asks Unpack for the snapshot of a layer chain.
type Request struct {
	// Layers is the chain, bottom first, each with its diffID.
	Layers []events.Layer
	// Source opens the blobs this node lacks.
	Source BlobSource
	// Window bounds the layer downloads in flight. Zero means
	// DefaultWindow.
	Window int
	// Progress, when set, receives updates from several goroutines; it must
	// not block.
	Progress func(Update)
}

// Result is what Unpack did.
type Result struct {
	// ChainID is the chainID of the whole chain; empty for no layers.
	ChainID digest.Digest
	// Key is the committed snapshot's name (the chainID); empty for no
	// layers.
	Key string
	// Size is the uncompressed size of all layers, in bytes.
	Size int64
	// Fetched lists the blobs this call downloaded.
	Fetched []digest.Digest
	// Extracted counts the layers this call unpacked.
	Extracted int
	// Reused counts the bottom layers that were already unpacked.
	Reused int
}

// ChainIDs returns the chainID of every prefix of layers.
func ChainIDs(layers []events.Layer) []digest.Digest {
	diffIDs := make([]digest.Digest, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.DiffID
	}
	chain := make([]digest.Digest, len(diffIDs))
	copy(chain, diffIDs)
	identity.ChainIDs(chain)
	return chain
}

// Has reports whether the snapshot of chainID is committed on this node.
func (s *Store) Has(ctx context.Context, chainID digest.Digest) bool {
	info, err := s.sn.Stat(ctx, chainID.String())
	return err == nil && info.Kind == snapshots.KindCommitted
}

// claim states of a layer's fetch.
const (
	unclaimed int32 = iota
	claimedByDispatcher
	claimedByExtractor
)

// layerJob is one layer of an Unpack.
type layerJob struct {
	layer   events.Layer
	claim   atomic.Int32
	done    chan struct{}
	err     error
	fetched bool
}

// Unpack returns the snapshot of req.Layers, building what is missing.
func (s *Store) Unpack(ctx context.Context, req Request) (Result, error) {
	n := len(req.Layers)
	if n == 0 {
		return Result{}, nil
	}
	window := req.Window
	if window <= 0 {
		window = DefaultWindow
	}
	chain := ChainIDs(req.Layers)
	res := Result{ChainID: chain[n-1], Key: chain[n-1].String()}
	start := 0
	for i := n - 1; i >= 0; i-- {
		if s.Has(ctx, chain[i]) {
			start = i + 1
			break
		}
	}
	res.Reused = start

	// Cancel first, then wait: downloads in flight stop before Unpack returns.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errors.New("unpack over"))
	jobs := make([]*layerJob, n)
	for j := start; j < n; j++ {
		jobs[j] = &layerJob{layer: req.Layers[j], done: make(chan struct{})}
	}
	slots := make(chan struct{}, window)
	// Downloads start in layer order, at most window at a time.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := start; j < n; j++ {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			job := jobs[j]
			if !job.claim.CompareAndSwap(unclaimed, claimedByDispatcher) {
				<-slots // the extractor streams this one itself
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				job.fetched, job.err = s.fetch(ctx, job.layer.Blob, req)
				close(job.done)
			}()
		}
	}()

	parent := ""
	if start > 0 {
		parent = chain[start-1].String()
	}
	for j := start; j < n; j++ {
		job := jobs[j]
		inline := job.claim.CompareAndSwap(unclaimed, claimedByExtractor)
		if inline {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return Result{}, context.Cause(ctx)
			}
		} else {
			select {
			case <-job.done:
			case <-ctx.Done():
				return Result{}, context.Cause(ctx)
			}
			if job.err != nil {
				cancel(job.err)
				return Result{}, job.err
			}
		}
		v, err, _ := s.extracts.Do(chain[j].String(), func() (any, error) {
			return s.extract(ctx, chain[j], parent, job.layer, inline, req)
		})
		if inline {
			<-slots
		}
		if err != nil {
			cancel(err)
			return Result{}, err
		}
		out := v.(extracted)
		if out.fetched || job.fetched {
			res.Fetched = append(res.Fetched, job.layer.Blob.Digest)
		}
		if out.extracted {
			res.Extracted++
		}
		parent = chain[j].String()
	}
	res.Size = s.chainSize(ctx, chain)
	return res, nil
}

// extracted is what one extract call did.
type extracted struct {
	fetched   bool
	extracted bool
}

// extract makes the committed snapshot chainID from its parent and layer.
// With inline set it streams the blob from the source (unless this node has
// or is fetching it), otherwise it reads the blob from the content store.
func (s *Store) extract(ctx context.Context, chainID digest.Digest, parent string, layer events.Layer, inline bool, req Request) (extracted, error) {
	if s.Has(ctx, chainID) {
		return extracted{}, nil // another request built it meanwhile
	}
	var out extracted
	var rd io.Reader
	var finish func() error
	for rd == nil {
		if _, err := s.cs.Info(ctx, layer.Blob.Digest); err == nil {
			ra, err := s.cs.ReaderAt(ctx, layer.Blob)
			if err != nil {
				return out, fmt.Errorf("read %s: %w", layer.Blob.Digest, err)
			}
			defer func() { _ = ra.Close() }()
			rd, finish = content.NewReader(ra), func() error { return nil }
			break
		}
		if !inline {
			return out, fmt.Errorf("blob %s missing from the content store", layer.Blob.Digest)
		}
		release, wait := s.claimBlob(layer.Blob.Digest)
		if wait != nil {
			select {
			case <-wait:
				continue // fetched (or failed) elsewhere on this node: look again
			case <-ctx.Done():
				return out, context.Cause(ctx)
			}
		}
		defer release()
		ing, err := s.ingest(ctx, layer.Blob, req)
		if err != nil {
			return out, err
		}
		defer ing.close()
		rd, finish, out.fetched = ing.reader, ing.commit, true
	}

	started := time.Now()
	req.progress(Update{Layer: layer.Blob.Digest, Phase: Extracting, Started: started})
	if err := s.apply(ctx, chainID, parent, layer, rd, finish); err != nil {
		return out, err
	}
	req.progress(Update{Layer: layer.Blob.Digest, Phase: Extracting, Started: started, Done: true})
	out.extracted = true
	return out, nil
}

// apply extracts rd (the compressed layer) into a new active snapshot on
// parent, checks the diffID and (through finish) the compressed blob, and
// commits the snapshot as chainID. On any failure the active snapshot is
// removed.
func (s *Store) apply(ctx context.Context, chainID digest.Digest, parent string, layer events.Layer, rd io.Reader, finish func() error) error {
	key := activePrefix + nonce() + "-" + chainID.String()
	mounts, err := s.sn.Prepare(ctx, key, parent)
	if err != nil {
		return fmt.Errorf("prepare snapshot for %s: %w", layer.Blob.Digest, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = s.sn.Remove(context.WithoutCancel(ctx), key)
		}
	}()
	dst, err := applyTarget(mounts)
	if err != nil {
		return err
	}
	diffID, size, err := applyLayer(ctx, dst, rd)
	if err != nil {
		return fmt.Errorf("extract %s: %w", layer.Blob.Digest, err)
	}
	if err := finish(); err != nil {
		return err
	}
	if diffID != layer.DiffID {
		return fmt.Errorf("layer %s unpacks to %s, not its diffID %s: %w", layer.Blob.Digest, diffID, layer.DiffID, ErrVerify)
	}
	labels := map[string]string{
		LabelBlob:   layer.Blob.Digest.String(),
		LabelDiffID: layer.DiffID.String(),
		LabelSize:   strconv.FormatInt(size, 10),
	}
	if err := s.sn.Commit(ctx, chainID.String(), key, snapshots.WithLabels(labels)); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("commit snapshot %s: %w", chainID, err)
		}
		return nil // committed by someone else: ours is removed
	}
	committed = true
	return nil
}

// chainSize sums the uncompressed sizes recorded on the chain's snapshots.
func (s *Store) chainSize(ctx context.Context, chain []digest.Digest) int64 {
	var total int64
	for _, c := range chain {
		info, err := s.sn.Stat(ctx, c.String())
		if err != nil {
			continue
		}
		n, _ := strconv.ParseInt(info.Labels[LabelSize], 10, 64)
		total += n
	}
	return total
}

// claimBlob makes the caller this node's fetcher of d (release when done),
// or returns a channel closed when the current fetcher is done.
func (s *Store) claimBlob(d digest.Digest) (release func(), wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.inflight[d.String()]; ok {
		return nil, ch
	}
	ch := make(chan struct{})
	s.inflight[d.String()] = ch
	return func() {
		s.mu.Lock()
		delete(s.inflight, d.String())
		s.mu.Unlock()
		close(ch)
	}, nil
}

// fetch makes sure the content store has desc, downloading it if no one on
// this node is; fetched reports whether this call downloaded it.
func (s *Store) fetch(ctx context.Context, desc ocispec.Descriptor, req Request) (fetched bool, err error) {
	for {
		if _, err := s.cs.Info(ctx, desc.Digest); err == nil {
			return fetched, nil
		}
		release, wait := s.claimBlob(desc.Digest)
		if wait != nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return false, context.Cause(ctx)
			}
		}
		err := func() error {
			defer release()
			ing, err := s.ingest(ctx, desc, req)
			if err != nil {
				return err
			}
			defer ing.close()
			if _, err := io.Copy(io.Discard, ing.reader); err != nil {
				return fmt.Errorf("download %s: %w", desc.Digest, err)
			}
			return ing.commit()
		}()
		if err != nil {
			return false, err
		}
		fetched = true
	}
}

// ingestion is a blob streaming from the source into the content store:
// whoever reads reader also writes the store; commit verifies and
// publishes the blob.
type ingestion struct {
	reader io.Reader
	commit func() error
	close  func()
}

func (s *Store) ingest(ctx context.Context, desc ocispec.Descriptor, req Request) (*ingestion, error) {
	if req.Source == nil {
		return nil, fmt.Errorf("blob %s is not on this node and no source was given", desc.Digest)
	}
	w, err := content.OpenWriter(ctx, s.cs, content.WithRef("fetch-"+desc.Digest.String()), content.WithDescriptor(desc))
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", desc.Digest, err)
	}
	if st, err := w.Status(); err == nil && st.Offset > 0 {
		if err := w.Truncate(0); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("ingest %s: %w", desc.Digest, err)
		}
	}
	body, err := req.Source.Open(ctx, desc)
	if err != nil {
		_ = w.Close()
		_ = s.cs.Abort(context.WithoutCancel(ctx), "fetch-"+desc.Digest.String())
		return nil, err
	}
	started := time.Now()
	counted := &countingReader{r: io.LimitReader(body, desc.Size+1), report: func(n int64, done bool) {
		req.progress(Update{Layer: desc.Digest, Phase: Downloading, Current: n, Total: desc.Size, Started: started, Done: done})
	}}
	tee := io.TeeReader(counted, w)
	committed := false
	return &ingestion{
		reader: tee,
		commit: func() error {
			// Read what the consumer left (the tail after the tar's end).
			if _, err := io.Copy(io.Discard, tee); err != nil {
				return fmt.Errorf("download %s: %w", desc.Digest, err)
			}
			counted.finish()
			if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
				if errdefs.IsAlreadyExists(err) {
					committed = true
					return nil
				}
				return fmt.Errorf("blob %s: %w: %w", desc.Digest, ErrVerify, err)
			}
			committed = true
			return nil
		},
		close: func() {
			_ = body.Close()
			_ = w.Close()
			if !committed {
				_ = s.cs.Abort(context.WithoutCancel(ctx), "fetch-"+desc.Digest.String())
			}
		},
	}, nil
}

func (r Request) progress(u Update) {
	if r.Progress != nil {
		r.Progress(u)
	}
}

// countingReader reports bytes read, at most every 256 KiB.
type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(n int64, done bool)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n-c.last >= 256<<10 {
		c.last = c.n
		c.report(c.n, false)
	}
	return n, err
}

func (c *countingReader) finish() { c.report(c.n, true) }

func nonce() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
