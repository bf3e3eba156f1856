package cacheindex_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

func TestPutGetUnderEveryDigest(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	idx, err := cacheindex.Open(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	d0, d1 := digest.FromString("key0"), digest.FromString("key1")
	rec := events.CacheRecord{Digests: []digest.Digest{d0, d1}, ChainID: digest.FromString("chain"), Node: "n1",
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, found, err := idx.Get(t.Context(), d0); err != nil || found {
		t.Fatalf("Get before Put = %v, %v", found, err)
	}
	if err := idx.Put(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{d0, d1} {
		got, found, err := idx.Get(t.Context(), d)
		if err != nil || !found {
			t.Fatalf("Get(%s) = %v, %v", d, found, err)
		}
		if diff := cmp.Diff(rec, got); diff != "" {
			t.Errorf("Get(%s) (-want +got):\n%s", d, diff)
		}
	}
	if err := idx.Put(t.Context(), events.CacheRecord{}); !errors.Is(err, cacheindex.ErrNoDigests) {
		t.Errorf("Put without digests = %v", err)
	}
	if _, _, err := idx.Get(t.Context(), "sha256:nothex"); err == nil {
		t.Error("Get of an invalid digest succeeded")
	}
}

func TestListAndDelete(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	idx, err := cacheindex.Open(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := idx.List(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("List of an empty index = %v, %v", got, err)
	}
	a, b := digest.FromString("a"), digest.FromString("b")
	if err := idx.Put(t.Context(), events.CacheRecord{Digests: []digest.Digest{a, b}, Node: "n"}); err != nil {
		t.Fatal(err)
	}
	got, err := idx.List(t.Context())
	if err != nil || len(got) != 2 {
		t.Fatalf("List = %v, %v", got, err)
	}
	if err := idx.Delete(t.Context(), cachefmt.RecordDigest(a, 0)); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := idx.Get(t.Context(), a); found {
		t.Error("deleted record still found")
	}
	if got, _ := idx.List(t.Context()); len(got) != 1 || got[0].Digest != cachefmt.RecordDigest(b, 0) || got[0].Record.Node != "n" {
		t.Errorf("List after Delete = %+v", got)
	}
}

// A record imported under the record digest BuildKit wrote for a key (the
// fixture cache of testdata/caches/buildkit: the base image's index-0 key)
// is what a lookup of that key finds.
func TestImportedRecordFoundByKey(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	idx, err := cacheindex.Open(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	const key0 = "sha256:5eb9f6e183055088cfd17b6c32efcfbcc7f78f20fe84b9cefc9573eaf0d172ae"
	const record0 = "sha256:72467ceabc88f6dff3c45a87d0ae38debeabc2d57023f1f4e2aab9a84b3d315b"
	rec := events.CacheRecord{ChainID: digest.FromString("c"), Locations: []events.BlobLocation{{Layout: "/cache"}}}
	if err := idx.PutRecord(t.Context(), record0, rec); err != nil {
		t.Fatal(err)
	}
	got, found, err := idx.Get(t.Context(), source.SolverDigest(key0))
	if err != nil || !found {
		t.Fatalf("Get(solver digest of key0) = %v, %v", found, err)
	}
	if diff := cmp.Diff(rec, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, found, _ := idx.GetRecord(t.Context(), record0); !found {
		t.Error("GetRecord of the record digest found nothing")
	}
}
