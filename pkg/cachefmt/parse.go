package cachefmt

import (
	"encoding/json"
	"fmt"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParseConfig decodes a cache config and validates it (see Parse).
func ParseConfig(data []byte, blobs map[digest.Digest]ocispec.Descriptor) (*Chains, error) {
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("cache config: %w: %w", err, ErrInvalid)
	}
	return Parse(cfg, blobs)
}

// Parse turns a config back into Chains, with BuildKit's validation and
// error texts: a record that links to itself ("invalid looping record"), a
// link to no record ("invalid record ID: N"), an input with no link
// ("invalid empty input for record N"), a layer index out of range
// ("invalid layer index N") and a parent loop ("invalid looping layer").
// blobs are the descriptors the manifest lists, by digest; a result with a
// blob that is not among them is left out, as BuildKit does (Dropped
// counts them).
func Parse(cfg Config, blobs map[digest.Digest]ocispec.Descriptor) (*Chains, error) {
	p := &parser{cfg: cfg, blobs: blobs, chains: NewChains(), done: map[int]*Item{}}
	for i := range cfg.Records {
		if _, err := p.record(i); err != nil {
			return nil, err
		}
	}
	return p.chains, nil
}

type parser struct {
	cfg    Config
	blobs  map[digest.Digest]ocispec.Descriptor
	chains *Chains
	// done holds parsed records; nil while a record is being parsed.
	done map[int]*Item
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrInvalid)...)
}

func (p *parser) record(idx int) (*Item, error) {
	if it, ok := p.done[idx]; ok {
		if it == nil {
			return nil, invalid("invalid looping record")
		}
		return it, nil
	}
	p.done[idx] = nil
	if idx < 0 || idx >= len(p.cfg.Records) {
		return nil, invalid("invalid record ID: %d", idx)
	}
	rec := p.cfg.Records[idx]
	if err := rec.Digest.Validate(); err != nil {
		return nil, invalid("record %d: digest %q: %v", idx, rec.Digest, err)
	}
	inputs := make([][]Link, len(rec.Inputs))
	for i, in := range rec.Inputs {
		if len(in) == 0 {
			return nil, invalid("invalid empty input for record %d", idx)
		}
		for _, l := range in {
			src, err := p.record(l.LinkIndex)
			if err != nil {
				return nil, err
			}
			inputs[i] = append(inputs[i], Link{Src: src, Selector: l.Selector})
		}
	}
	var results []Chain
	for _, res := range rec.Results {
		layers, err := p.chain(res.LayerIndex, map[int]bool{})
		if err != nil {
			return nil, err
		}
		if layers == nil {
			p.chains.dropped++
			continue
		}
		results = append(results, Chain{Layers: layers, CreatedAt: res.CreatedAt})
	}
	for _, res := range rec.ChainedResults {
		var layers []ocispec.Descriptor
		for _, li := range res.LayerIndexes {
			if li < 0 || li >= len(p.cfg.Layers) {
				return nil, invalid("invalid layer index %d", li)
			}
			d, ok := p.blobs[p.cfg.Layers[li].Blob]
			if !ok {
				layers = nil
				break
			}
			layers = append(layers, d)
		}
		if layers == nil {
			p.chains.dropped++
			continue
		}
		results = append(results, Chain{Layers: layers, CreatedAt: res.CreatedAt})
	}
	it, err := p.chains.Add(rec.Digest, inputs, results)
	if err != nil {
		return nil, fmt.Errorf("failed to add record %d: %w", idx, err)
	}
	p.done[idx] = it
	return it, nil
}

// chain walks the parents of layer idx to the bottom and returns the
// chain bottom first; nil (no error) when a blob is not in the manifest.
func (p *parser) chain(idx int, visited map[int]bool) ([]ocispec.Descriptor, error) {
	if visited[idx] {
		return nil, invalid("invalid looping layer")
	}
	visited[idx] = true
	if idx < 0 || idx >= len(p.cfg.Layers) {
		return nil, invalid("invalid layer index %d", idx)
	}
	l := p.cfg.Layers[idx]
	d, ok := p.blobs[l.Blob]
	if !ok {
		return nil, nil
	}
	if l.ParentIndex == -1 {
		return []ocispec.Descriptor{d}, nil
	}
	below, err := p.chain(l.ParentIndex, visited)
	if err != nil || below == nil {
		return nil, err
	}
	return append(below, d), nil
}
