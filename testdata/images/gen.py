#!/usr/bin/env python3
"""Generate Stevedore's known-answer image fixtures and their expected keys.

This script writes small OCI image layouts under testdata/images/<name>/ and
testdata/images/expected.json, which lists for every image its digests and the
BuildKit source cache keys a correct puller must compute for it.

The keys are computed here, in Python, straight from the rules in BuildKit's
source/containerimage puller, and never by calling Stevedore's Go code, so the
Go tests that read expected.json have an independent answer to check against.
The Python key functions are themselves checked against values BuildKit
computed (the buildkit-base image, see README.md) before anything is written.

Usage:

    python3 gen.py                 # regenerate the layouts and expected.json
    python3 gen.py --check         # regenerate into a temporary directory and
                                   # fail if the result differs from what is
                                   # committed
    python3 gen.py --buildkit-base DIR
                                   # (re)copy BuildKit's base image layout
                                   # from DIR into buildkit-base/ first

Only the Python 3.11 standard library is needed, plus the zstd command-line
tool for the single-zstd image (apt-get install -y zstd). The generated blobs
are committed, so tests never run this script.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# Every timestamp in the fixtures is fixed so the output is byte-for-byte
# reproducible.
MTIME = 1700000000  # 2023-11-14T22:13:20Z, the mtime of every tar entry.
CREATED = "2024-01-01T00:00:00Z"  # config "created" of most images.
CREATED_RETAG = "2024-06-01T12:00:00Z"  # config "created" of single-retag.

# Media types.
MT_OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_MEDIA_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
MANIFEST_MEDIA_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# BuildKit's SourceOp prefixes every source key with this before hashing it
# into the solver's cache map digest.
SOLVER_CACHE_TYPE = "buildkit.source.v0"

# The independent oracle: values BuildKit itself computed (master at commit
# 73ed6825c4b7, closest tag v0.32.0, exporting a remote cache of a build FROM
# this image) for the base image copied verbatim into buildkit-base/. key0 and
# key1 are the keys behind the cache's two root records for the image, and
# record0/record1 are those records' digests.
BUILDKIT_BASE = {
    "ref_name": "base",
    "digest": "sha256:6aeefdb8eebe7d402a71d9c0363513008fe59ac5e9a31aed9499f2dcee89817a",
    "platform": "linux/amd64",
    "key0": "sha256:5eb9f6e183055088cfd17b6c32efcfbcc7f78f20fe84b9cefc9573eaf0d172ae",
    "key1": "sha256:238ba0a5abad95d0c6e0237483a042c17bd9ac943856c6278dec4cc8055e2fb9",
    "record0": "sha256:72467ceabc88f6dff3c45a87d0ae38debeabc2d57023f1f4e2aab9a84b3d315b",
    "record1": "sha256:da64c9c8bc2911ae5a07026acbc1bbd900592e450ab089ee290f1a12337c4fa9",
}

# Images this script generates (buildkit-base is copied, not generated).
GENERATED = ["single", "single-retag", "single-zstd", "multi", "docker", "schema1", "nolayers"]


# ---------------------------------------------------------------------------
# Keys, computed from BuildKit's rules (source/containerimage/pull.go
# mainManifestKey and cacheKeyFromConfig, then SourceOp.CacheMap wrapping).
# ---------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def go_json_string(s: str) -> str:
    """Encode s the way Go's encoding/json does, for the strings we use.

    Go escapes <, > and & (and U+2028/U+2029) where Python does not; the key
    inputs are digests and platform names, so refuse anything that would make
    the two encoders disagree instead of reimplementing Go's escaper.
    """
    for ch in s:
        if ord(ch) < 0x20 or ord(ch) > 0x7E or ch in '<>&"\\':
            raise ValueError(f"key input {s!r} needs escaping; not supported")
    return '"' + s + '"'


def main_manifest_key(top_digest: str, platform: dict, limit: int | None = None) -> str:
    """Index-0 key: sha256 of Go's json.Marshal of BuildKit's anonymous struct

        struct {
            Digest     digest.Digest
            OS         string
            Arch       string
            Variant    string   `json:",omitempty"`
            OSVersion  string   `json:",omitempty"`
            OSFeatures []string `json:",omitempty"`
            Limit      *int     `json:",omitempty"`
        }

    Go emits the fields in declaration order, compact, with no spaces.
    platform uses OCI JSON names (os, architecture, variant, os.version,
    os.features).
    """
    parts = [
        '"Digest":' + go_json_string(top_digest),
        '"OS":' + go_json_string(platform.get("os", "")),
        '"Arch":' + go_json_string(platform.get("architecture", "")),
    ]
    if platform.get("variant"):
        parts.append('"Variant":' + go_json_string(platform["variant"]))
    if platform.get("os.version"):
        parts.append('"OSVersion":' + go_json_string(platform["os.version"]))
    if platform.get("os.features"):
        parts.append('"OSFeatures":[' + ",".join(go_json_string(f) for f in platform["os.features"]) + "]")
    if limit is not None:
        parts.append('"Limit":' + str(int(limit)))
    return sha256_digest(("{" + ",".join(parts) + "}").encode())


def chain_id(diff_ids: list[str]) -> str:
    """Index-1 key: the OCI chain ID of diff_ids ("" when there are none).

    ChainID(L0) = DiffID(L0)
    ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))
    """
    if not diff_ids:
        return ""
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = sha256_digest((chain + " " + d).encode())
    return chain


def solver_digest(key: str) -> str:
    """The digest the solver stores a source key under."""
    return sha256_digest((SOLVER_CACHE_TYPE + ":" + key).encode())


def record_digest(solver: str, output: int = 0) -> str:
    """The digest BuildKit's cache exporter gives a root record."""
    return sha256_digest(f"{solver}@{output}".encode())


def normalize_platform(p: dict) -> dict:
    """The platform a puller puts in the key, as containerd's
    platforms.Normalize would: arm64 (or aarch64) with variant "v8" or no
    variant becomes arm64 with no variant. Only the cases the fixtures use
    are handled."""
    out = {"os": p["os"].lower(), "architecture": p["architecture"].lower()}
    variant = p.get("variant", "")
    if out["architecture"] == "aarch64":
        out["architecture"] = "arm64"
    if out["architecture"] == "arm64" and variant == "v8":
        variant = ""
    if out["architecture"] not in ("amd64", "arm64"):
        raise ValueError(f"normalize_platform: unsupported architecture {p!r}")
    if variant:
        out["variant"] = variant
    for k in ("os.version", "os.features"):
        if p.get(k):
            out[k] = p[k]
    return out


def platform_string(p: dict) -> str:
    s = p["os"] + "/" + p["architecture"]
    if p.get("variant"):
        s += "/" + p["variant"]
    return s


def self_check() -> None:
    """Check the key functions against BuildKit's own numbers before trusting
    them with anything else."""
    plat = {"os": "linux", "architecture": "amd64"}
    diff_ids = [
        "sha256:d38be0bbdefcf930b6817db113e35b377396d68f2f21bc32da240549bcc05c15",
        "sha256:48497b334ac24304b608ac81a465e07ea10d52f5b41b2339779c1f11cfeb9fb9",
        "sha256:bd593d647f407e02f7ee6d3d471cc6a768442aa8a0da33fd9488e02cadd98202",
    ]
    key0 = main_manifest_key(BUILDKIT_BASE["digest"], plat)
    key1 = chain_id(diff_ids)
    assert key0 == BUILDKIT_BASE["key0"], f"key0 {key0} != BuildKit's {BUILDKIT_BASE['key0']}"
    assert key1 == BUILDKIT_BASE["key1"], f"key1 {key1} != BuildKit's {BUILDKIT_BASE['key1']}"
    r0 = record_digest(solver_digest(key0))
    r1 = record_digest(solver_digest(key1))
    assert r0 == BUILDKIT_BASE["record0"], f"record0 {r0} != BuildKit's {BUILDKIT_BASE['record0']}"
    assert r1 == BUILDKIT_BASE["record1"], f"record1 {r1} != BuildKit's {BUILDKIT_BASE['record1']}"
    # The JSON shape for the optional fields, written out by hand.
    want = '{"Digest":"sha256:00","OS":"linux","Arch":"arm64","Variant":"v7","Limit":2}'
    got = main_manifest_key("sha256:00", {"os": "linux", "architecture": "arm64", "variant": "v7"}, 2)
    assert got == sha256_digest(want.encode()), "main_manifest_key optional fields"
    assert chain_id([]) == ""
    assert normalize_platform({"os": "linux", "architecture": "arm64", "variant": "v8"}) == {
        "os": "linux",
        "architecture": "arm64",
    }


# ---------------------------------------------------------------------------
# Writing layers and layouts.
# ---------------------------------------------------------------------------


def d(path: str) -> tuple:
    return ("dir", path, 0o755, None)


def f(path: str, content: str, mode: int = 0o644) -> tuple:
    return ("file", path, mode, content.encode())


def link(path: str, target: str) -> tuple:
    return ("symlink", path, 0o777, target)


def make_tar(entries: list[tuple]) -> bytes:
    """A deterministic ustar archive: sorted entries, root-owned, fixed mtime."""
    buf = io.BytesIO()
    tw = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    with tw:
        for kind, path, mode, payload in sorted(entries, key=lambda e: e[1]):
            ti = tarfile.TarInfo(path)
            ti.mode = mode
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tw.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tw.addfile(ti)
            else:
                ti.type = tarfile.REGTYPE
                ti.size = len(payload)
                tw.addfile(ti, io.BytesIO(payload))
        end = tw.offset
    # tarfile pads the archive to a 10 KiB record; keep only the two zero
    # blocks that end it, so the fixtures stay small.
    data = buf.getvalue()
    assert data[end:] == bytes(len(data) - end)
    return data[: end + 2 * tarfile.BLOCKSIZE]


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        sys.exit("gen.py: the zstd command is needed for single-zstd (apt-get install -y zstd)")
    return subprocess.run(
        ["zstd", "-q", "-c", "-19", "--no-progress"], input=data, check=True, capture_output=True
    ).stdout


def zstd_decompress(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        sys.exit("gen.py: the zstd command is needed to check single-zstd (apt-get install -y zstd)")
    return subprocess.run(["zstd", "-q", "-d", "-c"], input=data, check=True, capture_output=True).stdout


def canonical(obj) -> bytes:
    """Compact JSON in insertion order, as most image tools write it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def desc(media_type: str, data: bytes, **extra) -> dict:
    out = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    out.update(extra)
    return out


class Layout:
    """An OCI image layout being written."""

    def __init__(self, root: str):
        self.root = root
        if os.path.exists(root):
            shutil.rmtree(root)
        os.makedirs(os.path.join(root, "blobs", "sha256"))
        with open(os.path.join(root, "oci-layout"), "wb") as fh:
            fh.write(canonical({"imageLayoutVersion": MT_OCI_LAYOUT_VERSION}))

    def blob(self, data: bytes) -> str:
        dg = sha256_digest(data)
        with open(os.path.join(self.root, "blobs", "sha256", dg.split(":", 1)[1]), "wb") as fh:
            fh.write(data)
        return dg

    def add(self, media_type: str, data: bytes, **extra) -> dict:
        self.blob(data)
        return desc(media_type, data, **extra)

    def finish(self, top: dict, ref_name: str = "latest") -> None:
        entry = dict(top)
        entry["annotations"] = {REF_NAME_ANNOTATION: ref_name}
        with open(os.path.join(self.root, "index.json"), "wb") as fh:
            fh.write(canonical({"schemaVersion": 2, "manifests": [entry]}))


# Layer contents. Every layer holds at least a directory, a regular file and a
# symlink.
SINGLE_LAYERS = [
    [
        d("bin"),
        f("bin/hello", "#!/bin/sh\necho hello from a stevedore fixture\n", 0o755),
        d("etc"),
        f("etc/os-release", "NAME=Stevedore fixture\nID=stevedore-fixture\nVERSION_ID=1\n"),
        link("etc/motd", "os-release"),
    ],
    [
        d("app"),
        d("app/releases"),
        d("app/releases/1"),
        f("app/releases/1/README", "release 1 of the fixture app\n"),
        link("app/current", "releases/1"),
    ],
    [
        f("app/releases/1/config.json", '{"greeting":"hello","port":8080}\n'),
        d("usr"),
        d("usr/local"),
        d("usr/local/bin"),
        link("usr/local/bin/hello", "/bin/hello"),
    ],
]

MULTI_AMD64_LAYERS = [
    [
        d("etc"),
        f("etc/arch", "amd64\n"),
        link("etc/machine", "arch"),
    ],
    [
        d("opt"),
        f("opt/tool", "#!/bin/sh\necho tool for amd64\n", 0o755),
        link("opt/tool-latest", "tool"),
    ],
]

MULTI_ARM64_LAYERS = [
    [
        d("etc"),
        f("etc/arch", "arm64\n"),
        link("etc/machine", "arch"),
    ],
    [
        d("opt"),
        f("opt/tool", "#!/bin/sh\necho tool for arm64\n", 0o755),
        link("opt/tool-latest", "tool"),
    ],
    [
        d("opt/data"),
        f("opt/data/table.txt", "arm64 lookup table\n"),
        link("opt/data/current", "table.txt"),
    ],
]


def image_config(
    arch: str,
    diff_ids: list[str],
    created: str,
    labels: dict,
    history: list[str],
    variant: str = "",
    env: list[str] | None = None,
) -> bytes:
    cfg: dict = {"created": created, "architecture": arch}
    if variant:
        cfg["variant"] = variant
    cfg["os"] = "linux"
    cfg["config"] = {
        "Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "Cmd": ["/bin/hello"],
        "Labels": labels,
    }
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    cfg["history"] = [{"created": created, "created_by": h} for h in history]
    return canonical(cfg)


def oci_manifest(config: dict, layers: list[dict], media_type: str = MT_OCI_MANIFEST) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers})


def write_image(out: str, name: str, tars: list[bytes], compress, layer_mt: str, config: bytes,
                config_mt: str = MT_OCI_CONFIG, manifest_mt: str = MT_OCI_MANIFEST) -> None:
    lay = Layout(os.path.join(out, name))
    layers = [lay.add(layer_mt, compress(t)) for t in tars]
    cfg = lay.add(config_mt, config)
    mf = oci_manifest(cfg, layers, manifest_mt)
    lay.finish(lay.add(manifest_mt, mf))


def generate(out: str) -> None:
    single_tars = [make_tar(e) for e in SINGLE_LAYERS]
    single_diff_ids = [sha256_digest(t) for t in single_tars]
    single_history = ["fixture layer 1: /bin and /etc", "fixture layer 2: /app", "fixture layer 3: config"]
    single_config = image_config(
        "amd64", single_diff_ids, CREATED,
        {"org.opencontainers.image.title": "stevedore fixture single"}, single_history)

    # single: OCI manifest, three gzip layers.
    write_image(out, "single", single_tars, gzip_bytes, MT_OCI_LAYER_GZIP, single_config)

    # single-retag: the same layer contents, stored uncompressed, with a
    # different config (created, labels, history, env).
    retag_config = image_config(
        "amd64", single_diff_ids, CREATED_RETAG,
        {"org.opencontainers.image.title": "stevedore fixture single, retagged",
         "org.example.rebuilt": "true"},
        ["rebuilt layer 1", "rebuilt layer 2", "rebuilt layer 3"],
        env=["PATH=/usr/local/bin:/usr/bin:/bin", "REBUILT=1"])
    write_image(out, "single-retag", single_tars, lambda b: b, MT_OCI_LAYER_TAR, retag_config)

    # single-zstd: the same layers and the same config as single, recompressed.
    write_image(out, "single-zstd", single_tars, zstd_bytes, MT_OCI_LAYER_ZSTD, single_config)

    # docker: Docker schema2 manifest and media types, same gzip layers and
    # config bytes as single.
    write_image(out, "docker", single_tars, gzip_bytes, MT_DOCKER_LAYER_GZIP, single_config,
                config_mt=MT_DOCKER_CONFIG, manifest_mt=MT_DOCKER_MANIFEST)

    # multi: an OCI index with linux/amd64 (2 layers) and linux/arm64/v8
    # (3 layers).
    lay = Layout(os.path.join(out, "multi"))
    children = []
    for arch, variant, layer_entries in (
        ("amd64", "", MULTI_AMD64_LAYERS),
        ("arm64", "v8", MULTI_ARM64_LAYERS),
    ):
        tars = [make_tar(e) for e in layer_entries]
        diff_ids = [sha256_digest(t) for t in tars]
        layers = [lay.add(MT_OCI_LAYER_GZIP, gzip_bytes(t)) for t in tars]
        cfg = lay.add(MT_OCI_CONFIG, image_config(
            arch, diff_ids, CREATED, {"org.opencontainers.image.title": f"stevedore fixture multi {arch}"},
            [f"multi {arch} layer {i + 1}" for i in range(len(tars))], variant=variant))
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        children.append(lay.add(MT_OCI_MANIFEST, oci_manifest(cfg, layers), platform=plat))
    index = canonical({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": children})
    lay.finish(lay.add(MT_OCI_INDEX, index))

    # schema1: a minimal (unsigned) schema 1 manifest stored with the signed
    # media type, for testing that it is rejected. Its one fsLayer is the
    # first gzip layer of single, which is stored alongside.
    lay = Layout(os.path.join(out, "schema1"))
    l0 = lay.blob(gzip_bytes(single_tars[0]))
    v1compat = canonical({"id": hashlib.sha256(b"stevedore schema1 fixture").hexdigest(),
                          "created": CREATED, "os": "linux", "architecture": "amd64"}).decode()
    schema1 = json.dumps({
        "schemaVersion": 1,
        "name": "fixture/schema1",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": l0}],
        "history": [{"v1Compatibility": v1compat}],
    }, indent=3).encode()
    lay.finish(lay.add(MT_DOCKER_SCHEMA1_SIGNED, schema1))

    # nolayers: a manifest with no layers and a config with empty diff_ids.
    lay = Layout(os.path.join(out, "nolayers"))
    cfg = lay.add(MT_OCI_CONFIG, image_config(
        "amd64", [], CREATED, {"org.opencontainers.image.title": "stevedore fixture nolayers"}, []))
    lay.finish(lay.add(MT_OCI_MANIFEST, oci_manifest(cfg, [])))


def copy_buildkit_base(src: str, out: str) -> None:
    dst = os.path.join(out, "buildkit-base")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


# ---------------------------------------------------------------------------
# Reading layouts back and computing expected.json. Everything here comes from
# the bytes on disk, not from the generator above.
# ---------------------------------------------------------------------------


class Reader:
    def __init__(self, root: str):
        self.root = root
        paths = sorted(os.listdir(os.path.join(root, "blobs", "sha256")))
        for p in paths:  # every blob must be named after its own digest
            got = hashlib.sha256(self._read(p)).hexdigest()
            assert got == p, f"{root}: blob {p} has digest {got}"

    def _read(self, hexd: str) -> bytes:
        with open(os.path.join(self.root, "blobs", "sha256", hexd), "rb") as fh:
            return fh.read()

    def blob(self, descriptor: dict) -> bytes:
        alg, hexd = descriptor["digest"].split(":", 1)
        assert alg == "sha256"
        data = self._read(hexd)
        assert len(data) == descriptor["size"], f"{descriptor['digest']}: size mismatch"
        return data

    def index_json(self) -> dict:
        with open(os.path.join(self.root, "index.json"), "rb") as fh:
            return json.load(fh)


def uncompressed(media_type: str, data: bytes) -> bytes:
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        return gzip.decompress(data)
    if media_type.endswith("+zstd") or media_type.endswith(".tar.zstd"):
        return zstd_decompress(data)
    if media_type.endswith(".tar") or media_type.endswith(".diff.tar"):
        return data
    raise ValueError(f"unknown layer media type {media_type}")


def platform_entry(r: Reader, top_digest: str, manifest_desc: dict, index_platform: dict | None) -> tuple[str, dict]:
    mf_bytes = r.blob(manifest_desc)
    mf = json.loads(mf_bytes)
    cfg_bytes = r.blob(mf["config"])
    cfg = json.loads(cfg_bytes)
    diff_ids = cfg["rootfs"]["diff_ids"] or []
    assert cfg["rootfs"]["type"] == "layers"
    assert len(diff_ids) == len(mf["layers"]), "mismatched image rootfs and manifest layers"
    for ld, diff_id in zip(mf["layers"], diff_ids):
        got = sha256_digest(uncompressed(ld["mediaType"], r.blob(ld)))
        assert got == diff_id, f"layer {ld['digest']}: diff_id {got}, config says {diff_id}"

    if index_platform is not None:
        declared = dict(index_platform)
    else:
        declared = {"architecture": cfg["architecture"], "os": cfg["os"]}
        if cfg.get("variant"):
            declared["variant"] = cfg["variant"]
    key_platform = normalize_platform(declared)

    e: dict = {
        "manifest": manifest_desc["digest"],
        "manifest_media_type": manifest_desc["mediaType"],
        "manifest_size": manifest_desc["size"],
        "config": mf["config"]["digest"],
        "config_media_type": mf["config"]["mediaType"],
        "layers": [ld["digest"] for ld in mf["layers"]],
        "layer_media_types": [ld["mediaType"] for ld in mf["layers"]],
        "diff_ids": diff_ids,
        "index_platform": index_platform,
        "key_platform": key_platform,
    }
    if index_platform is None:
        del e["index_platform"]

    key0 = main_manifest_key(top_digest, key_platform)
    key1 = chain_id(diff_ids)
    index1 = key1 or key0  # index 1 falls back to the manifest key
    e.update({
        "key0": key0,
        "key1": key1,
        "index1_key": index1,
        "solver0": solver_digest(key0),
        "solver1": solver_digest(index1),
        "record0": record_digest(solver_digest(key0)),
        "record1": record_digest(solver_digest(index1)),
        "key0_manifest": main_manifest_key(manifest_desc["digest"], key_platform),
    })
    for n in range(1, len(diff_ids) + 1):
        k0 = main_manifest_key(top_digest, key_platform, n)
        k1 = chain_id(diff_ids[:n])
        e[f"key0_limit{n}"] = k0
        e[f"key1_limit{n}"] = k1
        e[f"solver0_limit{n}"] = solver_digest(k0)
        e[f"solver1_limit{n}"] = solver_digest(k1)
    return platform_string(key_platform), e


def describe(root: str, name: str) -> dict:
    r = Reader(root)
    idx = r.index_json()
    assert len(idx["manifests"]) == 1, f"{name}: index.json must hold one entry"
    top = idx["manifests"][0]
    img: dict = {
        "path": name,
        "ref_name": top.get("annotations", {}).get(REF_NAME_ANNOTATION, ""),
        "media_type": top["mediaType"],
        "digest": top["digest"],
        "size": top["size"],
    }
    top_bytes = r.blob(top)
    if top["mediaType"] == MT_DOCKER_SCHEMA1_SIGNED:
        img["reject"] = "schema1"
        img["platforms"] = {}
        return img
    platforms: dict = {}
    if top["mediaType"] in INDEX_MEDIA_TYPES:
        for child in json.loads(top_bytes)["manifests"]:
            key, entry = platform_entry(r, top["digest"], child, child["platform"])
            platforms[key] = entry
    elif top["mediaType"] in MANIFEST_MEDIA_TYPES:
        key, entry = platform_entry(r, top["digest"], top, None)
        platforms[key] = entry
    else:
        raise ValueError(f"{name}: unexpected top-level media type {top['mediaType']}")
    img["platforms"] = platforms
    return img


def expected(out: str) -> dict:
    images = {}
    for name in GENERATED:
        images[name] = describe(os.path.join(out, name), name)

    base = describe(os.path.join(out, "buildkit-base"), "buildkit-base")
    assert base["digest"] == BUILDKIT_BASE["digest"], "buildkit-base: not BuildKit's base image"
    pe = base["platforms"][BUILDKIT_BASE["platform"]]
    for k in ("key0", "key1", "record0", "record1"):
        assert pe[k] == BUILDKIT_BASE[k], f"buildkit-base {k}: {pe[k]} != BuildKit's {BUILDKIT_BASE[k]}"
    base["oracle"] = "buildkit"
    base["oracle_fields"] = ["key0", "key1", "record0", "record1"]
    images["buildkit-base"] = base

    # Cross-image facts the fixtures exist to show.
    s, rt, z, dk = (images[n]["platforms"]["linux/amd64"] for n in ("single", "single-retag", "single-zstd", "docker"))
    for other in (rt, z, dk):
        assert other["diff_ids"] == s["diff_ids"] and other["key1"] == s["key1"]
        assert other["key0"] != s["key0"]
    assert set(rt["layers"]).isdisjoint(s["layers"]) and set(z["layers"]).isdisjoint(s["layers"])
    assert dk["layers"] == s["layers"] and dk["config"] == s["config"] and z["config"] == s["config"]
    assert rt["config"] != s["config"]
    m = images["multi"]["platforms"]
    assert len(m["linux/amd64"]["layers"]) == 2 and len(m["linux/arm64"]["layers"]) == 3
    nl = images["nolayers"]["platforms"]["linux/amd64"]
    assert nl["key1"] == "" and nl["index1_key"] == nl["key0"]

    return {
        "comment": "Generated by gen.py from the layouts in this directory; do not edit. See README.md.",
        "solver_cache_type": SOLVER_CACHE_TYPE,
        "images": images,
    }


def write_all(out: str, buildkit_base: str | None) -> None:
    os.makedirs(out, exist_ok=True)
    generate(out)
    if buildkit_base:
        copy_buildkit_base(buildkit_base, out)
    elif out != HERE:
        copy_buildkit_base(os.path.join(HERE, "buildkit-base"), out)
    doc = expected(out)
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def compare(a: str, b: str, names: list[str]) -> list[str]:
    diffs = []
    for name in names:
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if os.path.isfile(pa) or os.path.isfile(pb):
            if not (os.path.isfile(pa) and os.path.isfile(pb) and filecmp.cmp(pa, pb, shallow=False)):
                diffs.append(name)
            continue
        if not (os.path.isdir(pa) and os.path.isdir(pb)):
            diffs.append(name)
            continue
        cmp = filecmp.dircmp(pa, pb)
        stack = [(name, cmp)]
        while stack:
            prefix, c = stack.pop()
            for x in c.left_only + c.right_only + c.funny_files:
                diffs.append(os.path.join(prefix, x))
            _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
            diffs.extend(os.path.join(prefix, x) for x in mismatch + errors)
            stack.extend((os.path.join(prefix, k), v) for k, v in c.subdirs.items())
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary directory and compare with the committed files")
    ap.add_argument("--buildkit-base", metavar="DIR",
                    help="copy BuildKit's base-image OCI layout from DIR into buildkit-base/ first")
    args = ap.parse_args()

    self_check()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write_all(tmp, args.buildkit_base)
            diffs = compare(HERE, tmp, GENERATED + ["buildkit-base", "expected.json"])
        if diffs:
            print("gen.py --check: out of date:\n  " + "\n  ".join(sorted(diffs)), file=sys.stderr)
            return 1
        print("gen.py --check: fixtures are up to date")
        return 0
    write_all(HERE, args.buildkit_base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
