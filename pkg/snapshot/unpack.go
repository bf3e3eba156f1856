package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// ErrVerify marks content that does not match its descriptor: a wrong
// compressed digest or size, or a layer whose uncompressed digest is not
// its diffID. Nothing that fails verification is committed. It is of class
// failure.ErrInvalid.
var ErrVerify = failure.Invalid(errors.New("content does not match its descriptor"))

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
	// Limits bound what the layers may expand to (see Limits); the zero
	// value is no limit. Reaching one fails the Unpack with ErrLimit and
	// keeps nothing of the layer that reached it, nor of the layers below
	// it that this Unpack committed.
	Limits Limits

	budget *budget
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
	// Unpacked is the uncompressed size of the layers this call unpacked,
	// in bytes.
	Unpacked int64
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

// claim states of a layer's download: who asked for it first.
const (
	unclaimed int32 = iota
	// claimedByDispatcher: download it into the content store in the
	// background.
	claimedByDispatcher
	// claimedByExtractor: the extractor is waiting for it; hand it the open
	// download to extract in one pass.
	claimedByExtractor
)

// layerJob is one missing layer of an Unpack.
type layerJob struct {
	layer   events.Layer
	chainID digest.Digest
	claim   atomic.Int32
	// ready is closed once the layer can be extracted: its snapshot or its
	// blob is on this node, or stream is set, or err is.
	ready chan struct{}
	// stream is the open download handed to the extractor.
	stream *stream
	// fetched is set when this Unpack downloaded the blob into the content
	// store in the background.
	fetched bool
	err     error
}

func (j *layerJob) finish(err error) {
	j.err = err
	close(j.ready)
}

// stream is an open download handed from the dispatcher to the extractor.
type stream struct {
	ing  *ingestion
	once sync.Once
	// done closes the download (aborting the ingest unless it was
	// committed) and gives back the blob claim and the window slot.
	done func()
}

func (s *stream) release() { s.once.Do(s.done) }

// Unpack returns the snapshot of req.Layers, building what is missing.
//
// Downloads are opened one after the other in layer order, each as soon as
// fewer than Window bodies are open; the first missing layer, and any layer
// the extractor is already waiting for when its turn comes, is extracted
// straight from the download. On overlayfs the layers are extracted
// several at a time and committed bottom first (extractAtOnce).
// Concurrent Unpacks on one Store download each blob and extract each
// chainID once.
func (s *Store) Unpack(ctx context.Context, req Request) (Result, error) {
	n := len(req.Layers)
	if n == 0 {
		return Result{}, nil
	}
	for i, l := range req.Layers {
		if err := l.Blob.Digest.Validate(); err != nil {
			return Result{}, fmt.Errorf("layer %d: blob digest: %w", i, err)
		}
		if err := l.DiffID.Validate(); err != nil {
			return Result{}, fmt.Errorf("layer %d: diffID: %w", i, err)
		}
		if l.Blob.Size < 0 {
			return Result{}, fmt.Errorf("layer %d: negative blob size %d", i, l.Blob.Size)
		}
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
	if req.Limits != (Limits{}) {
		req.budget = &budget{lim: req.Limits, root: s.root, bytes: s.chainSize(ctx, chain[:start])}
	}
	if start == n {
		res.Size = s.chainSize(ctx, chain)
		return res, nil
	}

	jobs := make([]*layerJob, n-start)
	for i := range jobs {
		jobs[i] = &layerJob{layer: req.Layers[start+i], chainID: chain[start+i], ready: make(chan struct{})}
	}
	// The extractor needs the first missing layer at once.
	jobs[0].claim.Store(claimedByExtractor)

	// Deferred calls run last first: cancel, wait for the dispatcher and the
	// downloads, then close any download handed over after the extractor
	// gave up.
	defer func() {
		for _, job := range jobs {
			if job.stream != nil {
				job.stream.release()
			}
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errors.New("unpack over"))

	slots := make(chan struct{}, window)
	free := func() { <-slots }
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, job := range jobs {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			job.claim.CompareAndSwap(unclaimed, claimedByDispatcher)
			s.dispatch(ctx, job, req, free, &wg)
		}
	}()

	parent := ""
	if start > 0 {
		parent = chain[start-1].String()
	}
	// committed are the snapshots this call made, bottom first: a chain
	// refused for a limit loses them, so that no later Unpack reuses a
	// prefix the whole check refused without counting it.
	var committed []string
	fail := func(err error) (Result, error) {
		cancel(err)
		if errors.Is(err, ErrLimit) {
			s.removeChain(context.WithoutCancel(ctx), committed)
		}
		return Result{}, err
	}
	add := func(job *layerJob, out extracted) {
		if out.fetched {
			res.Fetched = append(res.Fetched, job.layer.Blob.Digest)
		}
		if out.extracted {
			res.Extracted++
			res.Unpacked += out.size
			committed = append(committed, job.chainID.String())
		}
	}
	if s.rebases() && len(jobs) > 1 {
		if err := s.extractAtOnce(ctx, jobs, parent, req, &wg, add); err != nil {
			return fail(err)
		}
		res.Size = s.chainSize(ctx, chain)
		return res, nil
	}
	for _, job := range jobs {
		job.claim.CompareAndSwap(unclaimed, claimedByExtractor)
		select {
		case <-job.ready:
		case <-ctx.Done():
			return Result{}, context.Cause(ctx)
		}
		out, err := s.extractJob(ctx, job, parent, req, nil)
		if err != nil {
			return fail(err)
		}
		add(job, out)
		parent = job.chainID.String()
	}
	res.Size = s.chainSize(ctx, chain)
	return res, nil
}

// removeChain removes the committed snapshots keys, top first. One that
// another Unpack has built on meanwhile (a child) stays: removing it fails,
// and so does every one below it.
func (s *Store) removeChain(ctx context.Context, keys []string) {
	for i := len(keys) - 1; i >= 0; i-- {
		if err := s.sn.Remove(ctx, keys[i]); err != nil && !errdefs.IsNotFound(err) {
			return
		}
	}
}

// rebases reports whether the store's snapshotter commits an active
// snapshot made without a parent on the parent Commit names (containerd's
// "rebase" capability, which its overlayfs snapshotter has): then the
// layers of a chain are extracted at once, each into its own directory,
// and committed in order, as containerd's parallel unpack does.
func (s *Store) rebases() bool { return s.kind == KindOverlay }

// extractAtOnce extracts jobs (a chain's missing layers, bottom first,
// the first on parent) several at a time, each into a snapshot without a
// parent, and commits each on the one below once that one is committed.
// add is called for each job in order. It returns the first error; the
// layers above a failed one are not committed.
func (s *Store) extractAtOnce(ctx context.Context, jobs []*layerJob, parent string, req Request, wg *sync.WaitGroup, add func(*layerJob, extracted)) error {
	type outcome struct {
		out extracted
		err error
	}
	done := make([]chan struct{}, len(jobs))
	outs := make([]outcome, len(jobs))
	for i := range done {
		done[i] = make(chan struct{})
	}
	// Slots are taken bottom first and freed when a layer is committed (or
	// failed), so the lowest uncommitted layer always runs.
	slots := make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	launch := func(i int, parent string) {
		job := jobs[i]
		defer close(done[i])
		defer func() { <-slots }()
		job.claim.CompareAndSwap(unclaimed, claimedByExtractor)
		select {
		case <-job.ready:
		case <-ctx.Done():
			outs[i].err = context.Cause(ctx)
			return
		}
		below := func(ctx context.Context) error {
			if i == 0 {
				return nil
			}
			select {
			case <-done[i-1]:
				if err := outs[i-1].err; err != nil {
					return fmt.Errorf("the layer below %s: %w", job.layer.Blob.Digest, err)
				}
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		outs[i].out, outs[i].err = s.extractJob(ctx, job, parent, req, below)
	}
	wg.Go(func() {
		p := parent
		for i, job := range jobs {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for j := i; j < len(jobs); j++ {
					outs[j].err = context.Cause(ctx)
					close(done[j])
				}
				return
			}
			on := p
			wg.Go(func() { launch(i, on) })
			p = job.chainID.String()
		}
	})
	for i, job := range jobs {
		<-done[i]
		if err := outs[i].err; err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause // what stopped the layers, rather than how one noticed
			}
			return err
		}
		add(job, outs[i].out)
	}
	return nil
}

// dispatch makes job ready and calls free once it holds no open body. When
// neither the snapshot nor the blob is on this node it opens the download
// in the caller's goroutine, so downloads start in layer order, and then
// hands it to the extractor (claimedByExtractor) or copies it into the
// content store in the background. When another Unpack on this node is
// downloading the blob it waits for that in the background instead.
func (s *Store) dispatch(ctx context.Context, job *layerJob, req Request, free func(), wg *sync.WaitGroup) {
	d := job.layer.Blob.Digest
	if s.Has(ctx, job.chainID) || s.hasBlob(ctx, d) {
		free()
		job.finish(nil)
		return
	}
	release, wait := s.claimBlob(d)
	if wait != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-wait:
				s.dispatch(ctx, job, req, free, wg)
			case <-ctx.Done():
				free()
				job.finish(context.Cause(ctx))
			}
		}()
		return
	}
	ing, err := s.ingest(ctx, job.layer.Blob, req)
	if err != nil {
		release()
		free()
		if errdefs.IsAlreadyExists(err) { // stored meanwhile
			err = nil
		}
		job.finish(err)
		return
	}
	if job.claim.Load() == claimedByExtractor {
		job.stream = &stream{ing: ing, done: func() {
			ing.close(ctx)
			release()
			free()
		}}
		job.finish(nil)
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := ing.commit(ctx)
		ing.close(ctx)
		release()
		free()
		job.fetched = err == nil
		job.finish(err)
	}()
}

func (s *Store) hasBlob(ctx context.Context, d digest.Digest) bool {
	_, err := s.cs.Info(ctx, d)
	return err == nil
}

// extracted is what one extract call did.
type extracted struct {
	fetched   bool
	extracted bool
	size      int64
}

// extractJob makes the committed snapshot of job on parent, once per node:
// concurrent Unpacks of one chainID share an extraction.
func (s *Store) extractJob(ctx context.Context, job *layerJob, parent string, req Request, below func(context.Context) error) (extracted, error) {
	if job.stream != nil {
		defer job.stream.release()
	}
	if job.err != nil {
		return extracted{}, job.err
	}
	for attempt := 0; ; attempt++ {
		ran := false
		v, err, _ := s.extracts.Do(job.chainID.String(), func() (any, error) {
			ran = true
			return s.extract(ctx, parent, job, req, below)
		})
		if !ran {
			// Another Unpack did the work; its failure (its source, its
			// context) need not be ours, so try once more ourselves.
			if err != nil && attempt == 0 {
				continue
			}
			return extracted{fetched: job.fetched}, err
		}
		out, _ := v.(extracted)
		out.fetched = out.fetched || job.fetched
		return out, err
	}
}

// extract makes the committed snapshot job.chainID from parent and the
// layer, read from the download handed over or from the content store.
func (s *Store) extract(ctx context.Context, parent string, job *layerJob, req Request, below func(context.Context) error) (extracted, error) {
	var out extracted
	if s.Has(ctx, job.chainID) {
		return out, nil // another request built it meanwhile
	}
	layer := job.layer
	var src blobStream
	if job.stream != nil {
		ing := job.stream.ing
		src = blobStream{r: ing.reader, verify: ing.drain, keep: func() error { return ing.commit(ctx) }}
	} else {
		ra, err := s.cs.ReaderAt(ctx, layer.Blob)
		if err != nil {
			return out, fmt.Errorf("read %s: %w", layer.Blob.Digest, err)
		}
		defer func() { _ = ra.Close() }()
		nop := func() error { return nil }
		src = blobStream{r: content.NewReader(ra), verify: nop, keep: nop}
	}

	started := time.Now()
	req.progress(Update{Layer: layer.Blob.Digest, Phase: Extracting, Started: started})
	size, err := s.apply(ctx, job.chainID, parent, layer, src, req.budget.forLayer(layer.Blob.Digest.String()), below)
	if err != nil {
		if job.fetched && (errors.Is(err, ErrVerify) || errors.Is(err, ErrLimit) || errors.Is(err, ErrBadLayer)) {
			// The blob is what its digest says but not the layer the chain
			// names: keep nothing of a layer that failed.
			_ = s.cs.Delete(context.WithoutCancel(ctx), layer.Blob.Digest)
		}
		return out, err
	}
	req.progress(Update{Layer: layer.Blob.Digest, Phase: Extracting, Started: started, Done: true})
	out.fetched = job.stream != nil
	out.extracted = true
	out.size = size
	return out, nil
}

// blobStream is a layer's compressed bytes on their way into a snapshot.
type blobStream struct {
	r io.Reader
	// verify reads what the extraction left and checks the blob against
	// its descriptor (an ErrVerify error when it does not match).
	verify func() error
	// keep stores the verified blob.
	keep func() error
}

// apply extracts src into a new active snapshot on parent, checks the blob
// and the diffID, keeps the blob and commits the snapshot as chainID. On
// any failure the active snapshot is removed and the blob is not kept.
//
// With below set (the store rebases), the snapshot is made without a
// parent (its whiteouts still overlay's), and committed on parent once
// below returns, which it does when parent is committed.
func (s *Store) apply(ctx context.Context, chainID digest.Digest, parent string, layer events.Layer, src blobStream, lb *layerBudget, below func(context.Context) error) (int64, error) {
	key := activePrefix + nonce() + "-" + chainID.String()
	rebase := below != nil && parent != ""
	prepareOn := parent
	if rebase {
		prepareOn = ""
	}
	mounts, err := s.sn.Prepare(ctx, key, prepareOn)
	if err != nil {
		return 0, fmt.Errorf("prepare snapshot for %s: %w", layer.Blob.Digest, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = s.sn.Remove(context.WithoutCancel(ctx), key)
		}
	}()
	dst, err := applyTarget(mounts)
	if err != nil {
		return 0, err
	}
	dst.fresh = prepareOn == ""
	var named *entryNames
	if rebase {
		dst.overlayWhiteouts = true
		named = &entryNames{names: map[string]struct{}{}}
		dst.opts = []archive.ApplyOpt{archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)}
		dst.names = named
	}
	diffID, size, err := applyLayer(ctx, dst, src.r, lb)
	if err != nil {
		if context.Cause(ctx) != nil || errors.Is(err, ErrLimit) {
			return 0, fmt.Errorf("extract %s: %w", layer.Blob.Digest, err)
		}
		// A truncated, oversized or corrupt download is the likelier cause.
		if verr := src.verify(); verr != nil {
			return 0, verr
		}
		// The blob is what its digest says: the same bytes fail the same
		// way every time, unless this node's disk is the cause.
		return 0, badLayer(layer.Blob.Digest, err, dst.root, s.root)
	}
	if err := src.verify(); err != nil {
		return 0, err
	}
	if diffID != layer.DiffID {
		return 0, fmt.Errorf("layer %s unpacks to %s, not its diffID %s: %w", layer.Blob.Digest, diffID, layer.DiffID, ErrVerify)
	}
	if err := src.keep(); err != nil {
		return 0, err
	}
	labels := map[string]string{
		LabelBlob:   layer.Blob.Digest.String(),
		LabelDiffID: layer.DiffID.String(),
		LabelSize:   strconv.FormatInt(size, 10),
		LabelDir:    dst.root,
	}
	opts := []snapshots.Opt{snapshots.WithLabels(labels)}
	if below != nil {
		if err := below(ctx); err != nil {
			return 0, err
		}
	}
	if rebase {
		if err := s.inheritDirs(ctx, dst.root, parent, named); err != nil {
			return 0, fmt.Errorf("extract %s: %w", layer.Blob.Digest, err)
		}
		opts = append(opts, snapshots.WithParent(parent))
	}
	if err := s.sn.Commit(ctx, chainID.String(), key, opts...); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return 0, fmt.Errorf("commit snapshot %s: %w", chainID, err)
		}
		return size, nil // committed by someone else: ours is removed
	}
	committed = true
	s.committed()
	return size, nil
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

// ingestion is a blob streaming from the source into the content store:
// whoever reads reader also writes the ingest; commit verifies the blob and
// stores it; close ends the download and drops the ingest unless committed.
// The blob's digest is the content store writer's, which hashes what it
// writes: the blob is hashed once.
type ingestion struct {
	s       *Store
	desc    ocispec.Descriptor
	ref     string
	w       content.Writer
	body    io.ReadCloser
	counted *countingReader
	reader  io.Reader

	drained   bool
	drainErr  error
	committed bool
}

func (s *Store) ingest(ctx context.Context, desc ocispec.Descriptor, req Request) (*ingestion, error) {
	if req.Source == nil {
		return nil, fmt.Errorf("blob %s is not on this node and no source was given", desc.Digest)
	}
	ref := "fetch-" + desc.Digest.String()
	w, err := content.OpenWriter(ctx, s.cs, content.WithRef(ref), content.WithDescriptor(desc))
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", desc.Digest, err)
	}
	if st, err := w.Status(); err == nil && st.Offset > 0 {
		if err := w.Truncate(0); err != nil {
			_ = w.Close()
			_ = s.cs.Abort(context.WithoutCancel(ctx), ref)
			return nil, fmt.Errorf("ingest %s: %w", desc.Digest, err)
		}
	}
	body, err := req.Source.Open(ctx, desc)
	if err != nil {
		_ = w.Close()
		_ = s.cs.Abort(context.WithoutCancel(ctx), ref)
		return nil, fmt.Errorf("open %s: %w", desc.Digest, err)
	}
	started := time.Now()
	counted := &countingReader{r: io.LimitReader(body, desc.Size+1), report: func(n int64, done bool) {
		req.progress(Update{Layer: desc.Digest, Phase: Downloading, Current: n, Total: desc.Size, Started: started, Done: done})
	}}
	return &ingestion{
		s: s, desc: desc, ref: ref, w: w, body: body, counted: counted,
		reader: io.TeeReader(counted, w),
	}, nil
}

// drain reads what the consumer left (the tail after the tar's end) and
// checks size and digest; it does the work once.
func (g *ingestion) drain() error {
	if g.drained {
		return g.drainErr
	}
	g.drained = true
	if _, err := io.Copy(io.Discard, g.reader); err != nil {
		g.drainErr = fmt.Errorf("download %s: %w", g.desc.Digest, err)
		return g.drainErr
	}
	if got := g.w.Digest(); g.counted.n != g.desc.Size || got != g.desc.Digest {
		g.drainErr = fmt.Errorf("blob %s: got %d bytes digesting to %s, want %d bytes: %w", g.desc.Digest, g.counted.n, got, g.desc.Size, ErrVerify)
		return g.drainErr
	}
	g.counted.finish()
	return nil
}

// commit verifies the whole blob and stores it.
func (g *ingestion) commit(ctx context.Context) error {
	if err := g.drain(); err != nil {
		return err
	}
	if err := g.w.Commit(ctx, g.desc.Size, g.desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("store blob %s: %w", g.desc.Digest, err)
	}
	g.committed = true
	return nil
}

func (g *ingestion) close(ctx context.Context) {
	_ = g.body.Close()
	_ = g.w.Close()
	if !g.committed {
		_ = g.s.cs.Abort(context.WithoutCancel(ctx), g.ref)
	}
}

func (r Request) progress(u Update) {
	if r.Progress != nil {
		r.Progress(u)
	}
}

// countingReader reports bytes read, at most every 256 KiB.
// progressStep is how many downloaded bytes a progress report stands for.
const progressStep = 256 << 10

type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(n int64, done bool)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if len(p) > progressStep {
		p = p[:progressStep] // a large read (read-ahead's) still reports in steps
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n-c.last >= progressStep {
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
