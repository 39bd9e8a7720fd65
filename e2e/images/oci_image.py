#!/usr/bin/env python3
"""Write a one-layer container image as an OCI image-layout tar archive, straight from host files.

No container engine, no registry: the archive is what `ctr -n k8s.io images import FILE` (containerd 2.x) takes,
and the image it creates is named exactly `--name` (the index descriptor carries `io.containerd.image.name`).

    oci_image.py --name ferry.local/ferry:e2e --output ferry.tar \\
        --binary target/release/ferry:/usr/bin/ferry \\
        --entrypoint '["/usr/bin/ferry"]' --cmd '["run"]' --user 65532:65532 --expose 9090

`--binary` also stores every shared library the ELF needs (from `ldd`), the dynamic loader included, at the same
absolute paths as on the host: symlinks the loader looks up by name are kept as symlinks and the files they point
to are stored too. The image always has /etc/passwd and /etc/group (root, nobody, nonroot = 65532), /tmp (1777),
/root, /home/nonroot and, when the host has it, /etc/ssl/certs/ca-certificates.crt - a distroless-like base.

The output is byte-for-byte reproducible for the same inputs: sorted entries, mtime 0, owner 0:0 unless given,
gzip without a timestamp or file name, canonical JSON. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
NONROOT = 65532
CHUNK = 1 << 20

PASSWD = """\
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
GROUP = """\
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
"""
NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
"""


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    """One member of the layer. `source` is a host file to copy, `data` literal content, `link` a symlink target."""

    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    source: str | None = None
    data: bytes | None = None
    link: str | None = None
    explicit: bool = True  # False for parent directories added implicitly


def image_path(path: str, what: str) -> str:
    """Normalises an absolute path inside the image; refuses relative paths and `..`."""
    if not path.startswith("/"):
        raise ImageError(f"{what}: {path!r} is not an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{what}: {path!r} contains '..'")
    if not parts:
        raise ImageError(f"{what}: {path!r} names the root directory")
    return "/" + "/".join(parts)


def parse_mode(text: str, what: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ImageError(f"{what}: mode {text!r} is not octal (e.g. 0755)") from None
    if not 0 <= mode <= 0o7777:
        raise ImageError(f"{what}: mode {text!r} is out of range")
    return mode


def parse_id(text: str, what: str) -> int:
    if not text.isdigit():
        raise ImageError(f"{what}: {text!r} is not a numeric uid/gid")
    return int(text)


class Layer:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _parents(self, path: str) -> None:
        parent = str(PurePosixPath(path).parent)
        while parent != "/":
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = Entry("dir", 0o755, explicit=False)
            elif existing.kind != "dir":
                raise ImageError(f"{parent} is a {existing.kind} in the image but {path} needs it as a directory")
            parent = str(PurePosixPath(parent).parent)

    def add(self, path: str, entry: Entry) -> None:
        existing = self.entries.get(path)
        if existing is not None:
            if existing.kind == "dir" and entry.kind == "dir":
                # An explicit --dir wins over an implied parent; two explicit ones must agree.
                if existing.explicit and entry.explicit and existing != entry:
                    raise ImageError(f"{path}: added twice as directories with different mode or owner")
                if existing.explicit:
                    return
            elif existing != entry:
                raise ImageError(f"{path}: added twice with different content ({existing.kind} and {entry.kind})")
        # Every parent of an entry is an entry itself (`_parents`), so a file over a needed directory met the
        # check above.
        self._parents(path)
        self.entries[path] = entry

    def add_file(self, source: str, dest: str, mode: int | None = None, uid: int = 0, gid: int = 0) -> None:
        real = os.path.realpath(source)
        if not os.path.isfile(real):
            raise ImageError(f"{source}: no such file")
        if mode is None:
            mode = 0o755 if os.stat(real).st_mode & 0o111 else 0o644
        self.add(dest, Entry("file", mode, uid, gid, source=real))

    def add_data(self, dest: str, data: bytes, mode: int = 0o644) -> None:
        self.add(dest, Entry("file", mode, data=data))

    def add_host_path(self, path: str, seen: set[str] | None = None) -> None:
        """Stores a host path at the same path in the image, following symlinks and keeping them as symlinks."""
        seen = set() if seen is None else seen
        path = os.path.normpath(path)
        if path in seen:
            return
        seen.add(path)
        directory, name = os.path.split(path)
        real_directory = os.path.realpath(directory)
        host = os.path.join(real_directory, name)
        if os.path.islink(host):
            target = os.readlink(host)
            if os.path.isabs(target):
                link = os.path.normpath(target)
                resolved = link
            elif ".." in PurePosixPath(target).parts:
                # `..` from a directory that is itself a symlink on the host (merged /usr) would go elsewhere in
                # the image, where that directory is real: pin the target the host resolves to.
                link = os.path.normpath(os.path.join(real_directory, target))
                resolved = link
            else:
                link = target
                resolved = os.path.normpath(os.path.join(directory, target))
            self.add(image_path(path, "library"), Entry("symlink", 0o777, link=link))
            self.add_host_path(resolved, seen)
        elif os.path.isfile(host):
            self.add(image_path(path, "library"), Entry("file", stat.S_IMODE(os.stat(host).st_mode), source=host))
        else:
            raise ImageError(f"{path}: needed by a binary but missing on the host")

    def add_ldd_deps(self, elf: str) -> None:
        for library in ldd(elf):
            self.add_host_path(library)

    def add_tree(self, source: str, dest: str, exclude: set[str]) -> None:
        """Copies the host directory `source` to `dest`: files, directories and the symlinks that stay inside it,
        skipping directories named in `exclude`; every shared object in it brings the host libraries it needs
        from outside the tree."""
        source = os.path.realpath(source)
        if not os.path.isdir(source):
            raise ImageError(f"{source}: no such directory")
        bundled = frozenset(name for _, _, files in os.walk(source) for name in files if ".so" in name)
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in exclude)
            relative = os.path.relpath(root, source)
            base = dest if relative == "." else os.path.join(dest, relative)
            self.add(image_path(base, f"--tree {source}"), Entry("dir", 0o755))
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                host = os.path.join(root, name)
                target = os.path.join(base, name)
                if os.path.islink(host):
                    resolved = os.path.realpath(host)
                    if resolved == source or resolved.startswith(source + os.sep):
                        self.add(image_path(target, "--tree"), Entry("symlink", 0o777, link=os.readlink(host)))
                    continue
                mode = stat.S_IMODE(os.stat(host).st_mode)
                self.add(image_path(target, "--tree"), Entry("file", mode, source=host))
                if ".so" in name and is_elf(host):
                    for library in ldd(host, bundled):
                        if not os.path.realpath(library).startswith(source + os.sep):
                            self.add_host_path(library)


def is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(.*?)\s*(\(0x[0-9a-f]+\))?\s*$")
LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def ldd(elf: str, bundled: frozenset[str] = frozenset()) -> list[str]:
    """The absolute paths of the shared libraries `elf` needs, the loader included; none for a static file.
    Names in `bundled` may be unresolved: a wheel's vendored libraries find each other through the RPATH of the
    module that loads them, not their own."""
    if not os.path.isfile(elf):
        raise ImageError(f"{elf}: no such file")
    result = subprocess.run(["ldd", elf], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    output = result.stdout + result.stderr
    if "not a dynamic executable" in output or "statically linked" in output:
        return []
    if result.returncode != 0:
        raise ImageError(f"ldd {elf} failed (exit {result.returncode}):\n{output}")
    libraries: list[str] = []
    missing: list[str] = []
    for line in result.stdout.splitlines():
        if not line.strip() or "linux-vdso" in line or "linux-gate" in line:
            continue
        arrow = LDD_ARROW.match(line)
        if arrow:
            target = arrow.group(2)
            if target == "not found":
                missing.append(arrow.group(1))
            elif target.startswith("/"):
                libraries.append(target)
            continue
        plain = LDD_PLAIN.match(line)
        if plain:
            libraries.append(plain.group(1))
            continue
        raise ImageError(f"ldd {elf}: cannot parse {line.strip()!r}")
    missing = [m for m in missing if m not in bundled]
    if missing:
        raise ImageError(f"{elf} needs libraries the host does not have: {', '.join(missing)}")
    return libraries


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to `target`."""

    def __init__(self, target) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def tar_info(name: str, kind: str, mode: int, uid: int, gid: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[kind]
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = 0
    info.size = size
    info.linkname = link
    return info


def write_layer(layer: Layer, out) -> None:
    """Writes the layer tar (sorted, parents first, relative names as Docker writes them) to a binary file."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layer.entries, key=lambda p: p.split("/")):
            entry = layer.entries[path]
            name = path.lstrip("/")
            if entry.kind == "file":
                if entry.data is not None:
                    tar.addfile(tar_info(name, "file", entry.mode, entry.uid, entry.gid, len(entry.data)),
                                io.BytesIO(entry.data))
                else:
                    with open(entry.source, "rb") as source:
                        size = os.fstat(source.fileno()).st_size
                        tar.addfile(tar_info(name, "file", entry.mode, entry.uid, entry.gid, size), source)
            else:
                tar.addfile(tar_info(name, entry.kind, entry.mode, entry.uid, entry.gid, link=entry.link or ""))


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def split_reference(name: str) -> str:
    """Checks a full image reference `[registry/]repository:tag` and returns the tag."""
    if "@" in name:
        raise ImageError(f"--name {name!r}: digest references cannot be written, give a tag")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ImageError(f"--name {name!r}: give a full reference with a tag, e.g. ferry.local/ferry:e2e")
    repository, tag = name.rsplit(":", 1)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise ImageError(f"--name {name!r}: invalid tag {tag!r}")
    path_component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    domain = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)?"
    if not re.fullmatch(domain + path_component + r"(?:/" + path_component + r")*", repository):
        raise ImageError(f"--name {name!r}: invalid repository {repository!r}")
    return tag


def parse_json_array(text: str, what: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImageError(f"{what}: not JSON ({error})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"{what}: must be a JSON array of strings, e.g. '[\"/usr/bin/ferry\"]'")
    return value


def parse_pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ImageError(f"{what}: {text!r} is not KEY=VALUE")
    return key, value


def build_layer(args: argparse.Namespace) -> Layer:
    layer = Layer()
    layer.add_data("/etc/passwd", PASSWD.encode())
    layer.add_data("/etc/group", GROUP.encode())
    layer.add_data("/etc/nsswitch.conf", NSSWITCH.encode())
    layer.add("/tmp", Entry("dir", 0o1777))
    layer.add("/root", Entry("dir", 0o700))
    layer.add("/home/nonroot", Entry("dir", 0o700, NONROOT, NONROOT))
    if os.path.isfile(CA_BUNDLE):
        layer.add_file(CA_BUNDLE, CA_BUNDLE, 0o644)

    for spec in args.dir:
        parts = spec.split(":")
        dest = image_path(parts[0], f"--dir {spec}")
        mode, uid, gid = 0o755, 0, 0
        if len(parts) == 2:
            mode = parse_mode(parts[1], f"--dir {spec}")
        elif len(parts) == 3:
            uid, gid = parse_id(parts[1], f"--dir {spec}"), parse_id(parts[2], f"--dir {spec}")
        elif len(parts) == 4:
            mode = parse_mode(parts[1], f"--dir {spec}")
            uid, gid = parse_id(parts[2], f"--dir {spec}"), parse_id(parts[3], f"--dir {spec}")
        elif len(parts) != 1:
            raise ImageError(f"--dir {spec}: expected DEST[:MODE][:UID:GID]")
        layer.add(dest, Entry("dir", mode, uid, gid))

    for spec in args.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ImageError(f"--file {spec}: expected SRC:DEST[:MODE]")
        mode = parse_mode(parts[2], f"--file {spec}") if len(parts) == 3 else None
        layer.add_file(parts[0], image_path(parts[1], f"--file {spec}"), mode)

    for spec in args.binary:
        parts = spec.split(":")
        if len(parts) != 2:
            raise ImageError(f"--binary {spec}: expected SRC:DEST")
        layer.add_file(parts[0], image_path(parts[1], f"--binary {spec}"), 0o755)
        layer.add_ldd_deps(parts[0])

    for source in args.lib_from:
        layer.add_ldd_deps(source)

    for spec in args.tree:
        parts = spec.split(":")
        if len(parts) != 2:
            raise ImageError(f"--tree {spec}: expected SRC:DEST")
        layer.add_tree(parts[0], image_path(parts[1], f"--tree {spec}"), set(args.tree_exclude))
    return layer


def build_config(args: argparse.Namespace, diff_id: str) -> dict:
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    if os.path.isfile(CA_BUNDLE):
        env["SSL_CERT_FILE"] = CA_BUNDLE
    for item in args.env:
        key, value = parse_pair(item, "--env")
        env[key] = value
    config: dict = {"Env": [f"{k}={v}" for k, v in env.items()]}
    if args.entrypoint is not None:
        config["Entrypoint"] = parse_json_array(args.entrypoint, "--entrypoint")
    if args.cmd is not None:
        config["Cmd"] = parse_json_array(args.cmd, "--cmd")
    if args.user:
        config["User"] = args.user
    if args.workdir:
        config["WorkingDir"] = image_path(args.workdir, "--workdir")
    if args.expose:
        ports = {}
        for port in args.expose:
            number, _, protocol = port.partition("/")
            if not number.isdigit() or not 0 < int(number) < 65536 or protocol not in ("", "tcp", "udp", "sctp"):
                raise ImageError(f"--expose {port}: expected PORT or PORT/PROTOCOL")
            ports[f"{int(number)}/{protocol or 'tcp'}"] = {}
        config["ExposedPorts"] = ports
    if args.label:
        config["Labels"] = dict(parse_pair(item, "--label") for item in args.label)
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/images/oci_image.py"}],
    }


def add_blob(archive: tarfile.TarFile, digest: str, path: str | None = None, data: bytes | None = None) -> None:
    name = "blobs/sha256/" + digest.split(":", 1)[1]
    if data is not None:
        archive.addfile(tar_info(name, "file", 0o644, 0, 0, len(data)), io.BytesIO(data))
    else:
        with open(path, "rb") as source:
            archive.addfile(tar_info(name, "file", 0o644, 0, 0, os.fstat(source.fileno()).st_size), source)


def write_image(args: argparse.Namespace) -> str:
    tag = split_reference(args.name)
    layer = build_layer(args)
    output = os.path.abspath(args.output)
    out_dir = os.path.dirname(output)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".oci-image-", dir=out_dir) as scratch:
        # The uncompressed layer, its digest (the diff_id) taken as it is written.
        raw_path = os.path.join(scratch, "layer.tar")
        with open(raw_path, "wb") as raw:
            hashing = HashingWriter(raw)
            write_layer(layer, hashing)
        diff_id = hashing.digest()
        if args.compression == "gzip":
            layer_path = os.path.join(scratch, "layer.tar.gz")
            with open(layer_path, "wb") as compressed:
                hashing = HashingWriter(compressed)
                with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=6) as gz, \
                        open(raw_path, "rb") as raw:
                    shutil.copyfileobj(raw, gz, CHUNK)
            os.unlink(raw_path)
            layer_digest, layer_size, layer_type = hashing.digest(), hashing.size, MEDIA_LAYER_GZIP
        else:
            layer_path = raw_path
            layer_digest, layer_size, layer_type = diff_id, hashing.size, MEDIA_LAYER

        config = canonical_json(build_config(args, diff_id))
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = canonical_json({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer_size}],
        })
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canonical_json({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        })
        layout = canonical_json({"imageLayoutVersion": "1.0.0"})

        partial = os.path.join(scratch, "image.tar")
        with open(partial, "wb") as out, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            archive.addfile(tar_info("oci-layout", "file", 0o644, 0, 0, len(layout)), io.BytesIO(layout))
            archive.addfile(tar_info("index.json", "file", 0o644, 0, 0, len(index)), io.BytesIO(index))
            archive.addfile(tar_info("blobs", "dir", 0o755, 0, 0))
            archive.addfile(tar_info("blobs/sha256", "dir", 0o755, 0, 0))
            blobs = {manifest_digest: (None, manifest), config_digest: (None, config), layer_digest: (layer_path, None)}
            for digest in sorted(blobs):
                add_blob(archive, digest, *blobs[digest])
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    return manifest_digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a one-layer OCI image-layout tar archive for `ctr images import` from host files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--name", required=True, help="full image reference, e.g. ferry.local/ferry-server:e2e")
    parser.add_argument("--output", required=True, help="the archive to write (replaced atomically)")
    parser.add_argument("--file", action="append", default=[], metavar="SRC:DEST[:MODE]",
                        help="copy a host file to the absolute path DEST (mode: octal, default 0644 or 0755 "
                             "when the host file is executable)")
    parser.add_argument("--binary", action="append", default=[], metavar="SRC:DEST",
                        help="like --file with mode 0755, plus every shared library `ldd SRC` lists")
    parser.add_argument("--lib-from", action="append", default=[], metavar="SRC",
                        help="add the shared libraries `ldd SRC` lists (e.g. for a dlopen'ed library)")
    parser.add_argument("--tree", action="append", default=[], metavar="SRC:DEST",
                        help="copy a host directory tree to DEST (symlinks inside it kept, others dropped), plus "
                             "the host libraries its shared objects need")
    parser.add_argument("--tree-exclude", action="append", default=[], metavar="NAME",
                        help="directory names --tree skips (e.g. __pycache__, tests)")
    parser.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE][:UID:GID]",
                        help="an empty directory (default 0755 root:root)")
    parser.add_argument("--entrypoint", metavar="JSON", help="entrypoint as a JSON array")
    parser.add_argument("--cmd", metavar="JSON", help="command as a JSON array")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help=f"environment variable (PATH defaults to {DEFAULT_PATH})")
    parser.add_argument("--user", help="user, e.g. 65532:65532")
    parser.add_argument("--workdir", help="working directory")
    parser.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]", help="exposed port")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="image label")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                        help="layer compression (default gzip)")
    args = parser.parse_args(argv)
    try:
        digest = write_image(args)
    except (ImageError, OSError) as error:
        print(f"oci_image.py: {error}", file=sys.stderr)
        return 1
    print(f"{args.name} {digest} {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
