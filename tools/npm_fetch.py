"""Fetches the npm packages a package-lock.json pins, without Node: each tarball from the npm
registry, checked against the lock's sha512 ``integrity``, unpacked under ``OUT/node_modules``.

The console's browser tests inject axe-core (tools/axe/package-lock.json) into each page; make
setup runs ``python tools/npm_fetch.py tools/axe/package-lock.json build/npm``. A tarball whose
digest differs from the lock's is refused and nothing of it is unpacked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"


def fetch(lock_file: Path, out: Path) -> list[str]:
    lock = json.loads(lock_file.read_text())
    done = []
    for path, entry in lock["packages"].items():
        if not path.startswith("node_modules/"):
            continue
        name, version = path[len("node_modules/") :], entry["version"]
        target = out / "node_modules" / name
        stamp = target / ".lepton-integrity"
        if stamp.exists() and stamp.read_text() == entry["integrity"]:
            done.append(f"{name}@{version} (kept)")
            continue
        url = entry.get("resolved") or f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"
        if not url.startswith(f"{REGISTRY}/"):
            raise SystemExit(f"{name}@{version}: {url} is not on {REGISTRY}; only the registry's tarballs are fetched")
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        algorithm, _, expected = entry["integrity"].partition("-")
        if algorithm != "sha512" or base64.b64encode(hashlib.sha512(data).digest()).decode() != expected:
            raise SystemExit(f"{name}@{version}: the tarball from {url} does not match the lock's integrity")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                relative = Path(*Path(member.name).parts[1:])  # npm tarballs hold package/<files>
                if not member.isfile() or not relative.parts or ".." in relative.parts:
                    continue
                dest = target / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                dest.write_bytes(source.read())
        stamp.write_text(entry["integrity"])
        done.append(f"{name}@{version}")
    return done


if __name__ == "__main__":
    print("npm packages:", ", ".join(fetch(Path(sys.argv[1]), Path(sys.argv[2]))))
