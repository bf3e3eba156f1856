package cachefmt

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Chain is one result: the layer blobs of a snapshot, bottom first.
type Chain struct {
	// Layers are the blobs' descriptors, as the cache manifest lists them
	// (media type, digest, size, and the diffID and creation time as
	// annotations).
	Layers []ocispec.Descriptor
	// CreatedAt is when the result was made.
	CreatedAt time.Time
}

// Link is one record that can feed an input of another.
type Link struct {
	// Src is the linked record.
	Src *Item
	// Selector narrows what of Src's output is used; empty for all of it.
	Selector string
}

// Item is one record of Chains.
type Item struct {
	// Digest is the record digest.
	Digest digest.Digest
	// Inputs lists, per input, the records that can feed it; empty for a
	// root.
	Inputs [][]Link
	// Results are the record's results; Marshal writes the newest.
	Results []Chain
}

// Root reports whether the record has no inputs.
func (it *Item) Root() bool { return len(it.Inputs) == 0 }

// Best returns the newest result, and false when there is none.
func (it *Item) Best() (Chain, bool) {
	if len(it.Results) == 0 {
		return Chain{}, false
	}
	best := it.Results[0]
	for _, r := range it.Results[1:] {
		if r.CreatedAt.After(best.CreatedAt) {
			best = r
		}
	}
	return best, true
}

// Chains is a set of records, as an exporter builds it (AddRoot, Add) and
// as Parse reads it back.
type Chains struct {
	roots   map[digest.Digest]*Item
	items   []*Item
	dropped int
}

// Dropped counts the results Parse left out because a blob of theirs is
// not among the manifest's layers (BuildKit drops them silently).
func (c *Chains) Dropped() int { return c.dropped }

// NewChains returns empty Chains.
func NewChains() *Chains { return &Chains{roots: map[digest.Digest]*Item{}} }

// Items returns every record, in the order they were added.
func (c *Chains) Items() []*Item { return slices.Clone(c.items) }

// AddRoot adds the root record dgst with results, or adds the results to
// the root already there (a result already present is not added twice).
func (c *Chains) AddRoot(dgst digest.Digest, results ...Chain) *Item {
	it, ok := c.roots[dgst]
	if !ok {
		it = &Item{Digest: dgst}
		c.roots[dgst] = it
		c.items = append(c.items, it)
	}
	for _, r := range results {
		it.addResult(r)
	}
	return it
}

// Add adds a record with inputs. Every input needs at least one link, to a
// record of these Chains. A record with no inputs is a root (AddRoot).
func (c *Chains) Add(dgst digest.Digest, inputs [][]Link, results []Chain) (*Item, error) {
	if len(inputs) == 0 {
		return c.AddRoot(dgst, results...), nil
	}
	for i, in := range inputs {
		if len(in) == 0 {
			return nil, fmt.Errorf("empty dependency for %s: %w", dgst, ErrInvalid)
		}
		for _, l := range in {
			if l.Src == nil || !slices.Contains(c.items, l.Src) {
				return nil, fmt.Errorf("dependency %d of %s is not part of the same cache chain: %w", i, dgst, ErrInvalid)
			}
		}
	}
	it := &Item{Digest: dgst, Inputs: inputs}
	for _, r := range results {
		it.addResult(r)
	}
	c.items = append(c.items, it)
	return it, nil
}

func (it *Item) addResult(r Chain) {
	for _, have := range it.Results {
		if have.CreatedAt.Equal(r.CreatedAt) && sameBlobs(have.Layers, r.Layers) {
			return
		}
	}
	it.Results = append(it.Results, r)
}

func sameBlobs(a, b []ocispec.Descriptor) bool {
	return slices.EqualFunc(a, b, func(x, y ocispec.Descriptor) bool { return x.Digest == y.Digest })
}

// Marshal returns the config of the chains, sorted as BuildKit sorts it,
// and the descriptor of every blob it names, in the order of
// Config.Layers (one per layer entry, as BuildKit's manifests list them).
// Each record gets its newest result. When two results name one blob with
// different annotations, the
// descriptor with the earliest creation time wins, so the output does not
// depend on the order records were added.
func (c *Chains) Marshal() (Config, []ocispec.Descriptor, error) {
	m := &marshaller{chainIndex: map[string]int{}, recordIndex: map[*Item]int{}, descs: map[digest.Digest]ocispec.Descriptor{}}
	for _, it := range c.items {
		if err := m.item(it, map[*Item]bool{}); err != nil {
			return Config{}, nil, err
		}
	}
	cfg := Config{Layers: m.layers, Records: m.records}
	sortConfig(&cfg)
	descs := make([]ocispec.Descriptor, 0, len(cfg.Layers))
	for _, l := range cfg.Layers {
		descs = append(descs, m.descs[l.Blob])
	}
	return cfg, descs, nil
}

type marshaller struct {
	layers      []Layer
	chainIndex  map[string]int // chain id (top digest + parent's chain id) → layer index
	records     []Record
	recordIndex map[*Item]int
	descs       map[digest.Digest]ocispec.Descriptor
}

func (m *marshaller) item(it *Item, visiting map[*Item]bool) error {
	if _, ok := m.recordIndex[it]; ok {
		return nil
	}
	if visiting[it] {
		return fmt.Errorf("record %s links to itself: %w", it.Digest, ErrInvalid)
	}
	visiting[it] = true
	rec := Record{Digest: it.Digest, Inputs: make([][]Input, len(it.Inputs))}
	for i, in := range it.Inputs {
		for _, l := range in {
			if err := m.item(l.Src, visiting); err != nil {
				return err
			}
			rec.Inputs[i] = append(rec.Inputs[i], Input{Selector: l.Selector, LinkIndex: m.recordIndex[l.Src]})
		}
	}
	if best, ok := it.Best(); ok {
		if id := m.chain(best.Layers); id != "" {
			rec.Results = append(rec.Results, Result{LayerIndex: m.chainIndex[id], CreatedAt: best.CreatedAt})
		}
	}
	m.recordIndex[it] = len(m.records)
	m.records = append(m.records, rec)
	return nil
}

// chain adds the layers of a chain (parents first) and returns the chain
// id of its top, "" for an empty chain.
func (m *marshaller) chain(layers []ocispec.Descriptor) string {
	if len(layers) == 0 {
		return ""
	}
	parent := m.chain(layers[:len(layers)-1])
	top := layers[len(layers)-1]
	if have, ok := m.descs[top.Digest]; !ok || createdAt(top).Before(createdAt(have)) {
		m.descs[top.Digest] = top
	}
	id := top.Digest.String() + parent
	if _, ok := m.chainIndex[id]; ok {
		return id
	}
	l := Layer{Blob: top.Digest, ParentIndex: -1}
	if parent != "" {
		l.ParentIndex = m.chainIndex[parent]
	}
	m.chainIndex[id] = len(m.layers)
	m.layers = append(m.layers, l)
	return id
}

// createdAt is a descriptor's creation time annotation; the zero time when
// it has none or it does not parse.
func createdAt(d ocispec.Descriptor) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, d.Annotations[AnnotationCreatedAt])
	return t
}

// sortConfig orders layers by (blob, parent) and records by (digest,
// inputs), remapping every index, as BuildKit's sortConfig does: the same
// records always marshal to the same bytes. BuildKit breaks a tie between
// two layers of one blob (the same blob on two different parents) by the
// parents' indexes before sorting, which depend on the order it walked the
// records (a map's); here the tie is broken by the parents' whole chains,
// so the order never depends on how the records were added.
func sortConfig(cfg *Config) {
	layerOrder := make([]int, len(cfg.Layers))
	for i := range layerOrder {
		layerOrder[i] = i
	}
	chainKeys := make([]string, len(cfg.Layers))
	var chainKey func(i int) string
	chainKey = func(i int) string {
		if chainKeys[i] == "" {
			k := string(cfg.Layers[i].Blob)
			if p := cfg.Layers[i].ParentIndex; p >= 0 && p < len(cfg.Layers) && p != i {
				k = chainKey(p) + " " + k
			}
			chainKeys[i] = k
		}
		return chainKeys[i]
	}
	parentKey := func(i int) string {
		if p := cfg.Layers[i].ParentIndex; p >= 0 && p < len(cfg.Layers) && p != i {
			return chainKey(p)
		}
		return ""
	}
	slices.SortStableFunc(layerOrder, func(a, b int) int {
		la, lb := cfg.Layers[a], cfg.Layers[b]
		if la.Blob != lb.Blob {
			return strings.Compare(string(la.Blob), string(lb.Blob))
		}
		return strings.Compare(parentKey(a), parentKey(b))
	})
	newLayer := make([]int, len(cfg.Layers))
	for n, old := range layerOrder {
		newLayer[old] = n
	}
	layers := make([]Layer, len(cfg.Layers))
	for n, old := range layerOrder {
		l := cfg.Layers[old]
		if l.ParentIndex != -1 {
			l.ParentIndex = newLayer[l.ParentIndex]
		}
		layers[n] = l
	}

	recs := cfg.Records
	recordOrder := make([]int, len(recs))
	for i := range recordOrder {
		recordOrder[i] = i
	}
	slices.SortStableFunc(recordOrder, func(a, b int) int {
		ra, rb := recs[a], recs[b]
		if ra.Digest != rb.Digest {
			return strings.Compare(string(ra.Digest), string(rb.Digest))
		}
		if len(ra.Inputs) != len(rb.Inputs) {
			return cmp.Compare(len(ra.Inputs), len(rb.Inputs))
		}
		for i := range ra.Inputs {
			if len(ra.Inputs[i]) != len(rb.Inputs[i]) {
				return cmp.Compare(len(ra.Inputs[i]), len(rb.Inputs[i]))
			}
			for j := range ra.Inputs[i] {
				ia, ib := ra.Inputs[i][j], rb.Inputs[i][j]
				if ia.Selector != ib.Selector {
					return strings.Compare(ia.Selector, ib.Selector)
				}
				if da, db := recs[ia.LinkIndex].Digest, recs[ib.LinkIndex].Digest; da != db {
					return strings.Compare(string(da), string(db))
				}
			}
		}
		return 0
	})
	newRecord := make([]int, len(recs))
	for n, old := range recordOrder {
		newRecord[old] = n
	}
	records := make([]Record, len(recs))
	for n, old := range recordOrder {
		r := recs[old]
		for j := range r.Results {
			r.Results[j].LayerIndex = newLayer[r.Results[j].LayerIndex]
		}
		for j := range r.ChainedResults {
			for k, li := range r.ChainedResults[j].LayerIndexes {
				r.ChainedResults[j].LayerIndexes[k] = newLayer[li]
			}
		}
		for j, in := range r.Inputs {
			for k := range in {
				in[k].LinkIndex = newRecord[in[k].LinkIndex]
			}
			slices.SortStableFunc(in, func(a, b Input) int { return cmp.Compare(a.LinkIndex, b.LinkIndex) })
			r.Inputs[j] = in
		}
		records[n] = r
	}
	cfg.Layers, cfg.Records = layers, records
}
