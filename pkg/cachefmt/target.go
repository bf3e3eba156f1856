package cachefmt

import (
	"encoding/csv"
	"fmt"
	"slices"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Backend types of the attribute syntax.
const (
	// TypeLocal is a cache in an OCI layout directory.
	TypeLocal = "local"
	// TypeRegistry is a cache in a registry repository.
	TypeRegistry = "registry"
)

// Export modes. Stevedore's caches hold sources only, whose roots carry
// their results in both modes; the mode is kept for compatibility.
const (
	ModeMin = "min"
	ModeMax = "max"
)

// Compressions of exported layers.
const (
	CompressionGzip         = "gzip"
	CompressionZstd         = "zstd"
	CompressionUncompressed = "uncompressed"
)

// ExportTarget is where and how to export a cache: buildctl's
// --export-cache value, parsed.
type ExportTarget struct {
	// Type is TypeLocal or TypeRegistry.
	Type string
	// Dest is the layout directory (local).
	Dest string
	// Tag is the tag of the manifest in the layout's index.json (local);
	// "latest" by default.
	Tag string
	// Ref is the normalised repository reference with a tag (registry):
	// user/cache becomes docker.io/user/cache:latest.
	Ref string
	// Insecure reaches the registry over plain HTTP (registry.insecure).
	Insecure bool
	// Mode is ModeMin (the default; an unknown value falls back to it, as
	// in BuildKit) or ModeMax.
	Mode string
	// OCIMediaTypes writes OCI media types (the default) instead of
	// Docker's.
	OCIMediaTypes bool
	// Form is FormImageManifest (the default, unless oci-mediatypes=false)
	// or FormIndex (image-manifest=false).
	Form Form
	// Compression is the compression wanted for layers: gzip by default.
	Compression string
	// ForceCompression converts layers that have another compression;
	// without it the blobs are exported as they are.
	ForceCompression bool
	// CompressionLevel is the compression level; nil for the default.
	CompressionLevel *int
	// IgnoreError makes a failed export a warning.
	IgnoreError bool
}

// ImportSource is where to import a cache from: buildctl's --import-cache
// value, parsed.
type ImportSource struct {
	// Type is TypeLocal or TypeRegistry.
	Type string
	// Src is the layout directory (local).
	Src string
	// Tag is the tag to read from index.json (local); "latest" unless
	// Digest is set.
	Tag string
	// Digest picks the manifest by digest instead of by tag (local).
	Digest digest.Digest
	// Ref is the normalised registry reference (registry).
	Ref string
	// Insecure reaches the registry over plain HTTP.
	Insecure bool
}

// Attrs splits "k=v,k=v" (CSV, so a value may be quoted) into its
// attributes; a key given twice keeps the last value.
func Attrs(s string) (map[string]string, error) {
	r := csv.NewReader(strings.NewReader(s))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("cache attributes %q: %w: %w", s, err, ErrInvalid)
	}
	attrs := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid value %s: cache attributes are key=value: %w", f, ErrInvalid)
		}
		attrs[k] = v
	}
	return attrs, nil
}

// ParseExportTarget parses an export target, with BuildKit's defaults and
// error texts.
func ParseExportTarget(s string) (ExportTarget, error) {
	attrs, err := Attrs(s)
	if err != nil {
		return ExportTarget{}, err
	}
	t := ExportTarget{Type: attrs["type"], Mode: ModeMin, OCIMediaTypes: true, Compression: CompressionGzip}
	switch t.Type {
	case TypeLocal:
		if t.Dest = attrs["dest"]; t.Dest == "" {
			return ExportTarget{}, fmt.Errorf("local cache exporter requires dest: %w", ErrInvalid)
		}
		t.Tag = attrs["tag"]
		if t.Tag == "" {
			t.Tag = "latest"
		}
	case TypeRegistry:
		if attrs["ref"] == "" {
			return ExportTarget{}, fmt.Errorf("registry cache exporter requires ref: %w", ErrInvalid)
		}
		if t.Ref, err = source.NormalizeImageRef(attrs["ref"]); err != nil {
			return ExportTarget{}, fmt.Errorf("invalid reference for cache export %q: %w: %w", attrs["ref"], err, ErrInvalid)
		}
		if t.Insecure, err = boolAttr(attrs, "registry.insecure", false); err != nil {
			return ExportTarget{}, err
		}
	case "":
		return ExportTarget{}, fmt.Errorf("cache exporter requires type: %w", ErrInvalid)
	default:
		return ExportTarget{}, fmt.Errorf("unknown cache exporter: %q: %w", t.Type, ErrInvalid)
	}
	if m := attrs["mode"]; m == ModeMax {
		t.Mode = ModeMax
	}
	if t.OCIMediaTypes, err = boolAttr(attrs, "oci-mediatypes", true); err != nil {
		return ExportTarget{}, err
	}
	imageManifest, err := boolAttr(attrs, "image-manifest", t.OCIMediaTypes)
	if err != nil {
		return ExportTarget{}, err
	}
	t.Form = FormIndex
	if imageManifest {
		if !t.OCIMediaTypes {
			return ExportTarget{}, fmt.Errorf("invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format: %w", ErrInvalid)
		}
		t.Form = FormImageManifest
	}
	if c, ok := attrs["compression"]; ok {
		if !slices.Contains([]string{CompressionGzip, CompressionZstd, CompressionUncompressed}, c) {
			return ExportTarget{}, fmt.Errorf("unsupported compression type %s: %w", c, ErrInvalid)
		}
		t.Compression = c
	}
	if v, ok := attrs["force-compression"]; ok {
		t.ForceCompression = true // an empty value means true
		if v != "" {
			if t.ForceCompression, err = strconv.ParseBool(v); err != nil {
				return ExportTarget{}, fmt.Errorf("non-bool value %s specified for force-compression: %w", v, ErrInvalid)
			}
		}
	}
	if v, ok := attrs["compression-level"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return ExportTarget{}, fmt.Errorf("non-integer value %s specified for compression-level: %w", v, ErrInvalid)
		}
		t.CompressionLevel = &n
	}
	if t.IgnoreError, err = boolAttr(attrs, "ignore-error", false); err != nil {
		return ExportTarget{}, err
	}
	return t, nil
}

// ParseImportSource parses an import source, with BuildKit's defaults and
// error texts.
func ParseImportSource(s string) (ImportSource, error) {
	attrs, err := Attrs(s)
	if err != nil {
		return ImportSource{}, err
	}
	src := ImportSource{Type: attrs["type"]}
	switch src.Type {
	case TypeLocal:
		if src.Src = attrs["src"]; src.Src == "" {
			return ImportSource{}, fmt.Errorf("local cache importer requires src: %w", ErrInvalid)
		}
		if d := attrs["digest"]; d != "" {
			src.Digest = digest.Digest(d)
			if err := src.Digest.Validate(); err != nil {
				return ImportSource{}, fmt.Errorf("invalid digest %q for local cache import: %w: %w", d, err, ErrInvalid)
			}
		} else if src.Tag = attrs["tag"]; src.Tag == "" {
			src.Tag = "latest"
		}
	case TypeRegistry:
		if attrs["ref"] == "" {
			return ImportSource{}, fmt.Errorf("registry cache importer requires ref: %w", ErrInvalid)
		}
		if src.Ref, err = source.NormalizeImageRef(attrs["ref"]); err != nil {
			return ImportSource{}, fmt.Errorf("invalid reference for cache import %q: %w: %w", attrs["ref"], err, ErrInvalid)
		}
		if src.Insecure, err = boolAttr(attrs, "registry.insecure", false); err != nil {
			return ImportSource{}, err
		}
	case "":
		return ImportSource{}, fmt.Errorf("cache importer requires type: %w", ErrInvalid)
	default:
		return ImportSource{}, fmt.Errorf("unknown cache importer: %q: %w", src.Type, ErrInvalid)
	}
	return src, nil
}

func boolAttr(attrs map[string]string, key string, def bool) (bool, error) {
	v, ok := attrs[key]
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("failed to parse %s: %w: %w", key, err, ErrInvalid)
	}
	return b, nil
}

// Location is a short description of where a cache is, for messages:
// the directory or the reference.
func (t ExportTarget) Location() string {
	if t.Type == TypeLocal {
		return t.Dest
	}
	return t.Ref
}

// Location is a short description of where a cache is, for messages.
func (s ImportSource) Location() string {
	if s.Type == TypeLocal {
		return s.Src
	}
	return s.Ref
}
