"""Weights fetched on first use, the ecosystem's way, and an offline mode that reads caches only.

torchvision's files go where ``torch.hub`` keeps them (``$TORCH_HOME/hub/checkpoints``, the
name carrying a sha256 prefix that the download is checked against), so a file torchvision
or any other tool fetched is reused, and one fetched here is theirs too. timm's weights come
through ``huggingface_hub`` (``$HF_HOME``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``), which keeps
its own cache and resumes its own downloads.

A download is written to ``NAME.<pid>.partial`` beside the target, checked (length, then
hash), then renamed into place, so a partial or corrupt file is never used and a killed
download leaves a partial file that the next attempt removes before it starts again.

``--offline`` / ``FEATCACHE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``: caches only, and a miss names
where it looked. ``--weights-mirror URL`` / ``FEATCACHE_WEIGHTS_MIRROR`` replaces
``https://download.pytorch.org`` in torchvision's URLs (an internal mirror, an air-gapped
site's file server).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featcache.common.errors import BadInput

OFFLINE_ENV = "FEATCACHE_OFFLINE"
MIRROR_ENV = "FEATCACHE_WEIGHTS_MIRROR"
TORCHVISION_HOST = "https://download.pytorch.org"
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # torch.hub's convention: resnet18-f37072fd.pth
TIMEOUT_S = 60.0
CHUNK = 1 << 20


class WeightsError(BadInput):
    """Weights that cannot be had (offline miss, wrong hash, no network); the message says what to do."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """Caches only: ``--offline`` (which sets FEATCACHE_OFFLINE) or Hugging Face's own HF_HUB_OFFLINE."""
    return _truthy(os.environ.get(OFFLINE_ENV)) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def set_options(offline_mode: bool | None = None, mirror: str | None = None) -> None:
    """Apply ``--offline`` / ``--weights-mirror`` for this process and the workers it starts."""
    if offline_mode:
        os.environ[OFFLINE_ENV] = "1"
    if mirror:
        if not re.match(r"^(https?|file)://", mirror):
            raise WeightsError(f"--weights-mirror {mirror!r}: expected an http(s):// or file:// URL")
        os.environ[MIRROR_ENV] = mirror.rstrip("/")


def mirrored(url: str) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    if mirror and url.startswith(TORCHVISION_HOST):
        return mirror + url[len(TORCHVISION_HOST):]
    return url


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file of ``url``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_command(backbone: str) -> str:
    return f"`pipeline.py backbones --fetch {backbone}` on a machine with internet"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_partials(dest: Path) -> None:
    """A killed download's ``NAME.<pid>.partial``: removed once its process is gone."""
    for part in dest.parent.glob(dest.name + ".*.partial"):
        pid = part.name[len(dest.name) + 1:-len(".partial")]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)


def download(url: str, dest: Path, sha256_prefix: str | None, progress: bool = True) -> Path:
    """``url`` to ``dest``, atomically, checked against ``sha256_prefix`` (None: length only)."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(dest)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    got = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "featcache"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r, open(part, "wb") as f:
            size = r.headers.get("Content-Length")
            size = int(size) if size and size.isdigit() else None
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress, file=sys.stderr) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        if size is not None and got != size:
            raise WeightsError(f"{url}: the download stopped at {got} of {size} bytes; nothing was cached, run again")
        hexd = digest.hexdigest()
        if sha256_prefix and not hexd.startswith(sha256_prefix):
            raise WeightsError(f"{url}: sha256 {hexd[:16]}... does not match the expected {sha256_prefix} "
                               "(a corrupt or substituted file); nothing was cached")
        os.replace(part, dest)
    except urllib.error.HTTPError as e:
        raise WeightsError(f"{url}: HTTP {e.code} {e.reason}; nothing was cached") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        why = getattr(e, "reason", e)
        raise WeightsError(f"{url}: cannot be fetched ({why}); nothing was cached. Without internet: --offline "
                           f"with a filled cache, --weights-mirror URL, or --weights FILE") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def fetch_torchvision(url: str, what: str, progress: bool = True) -> Path:
    """The torch hub cache's copy of ``url``: downloaded (from the mirror, when set) on a miss."""
    dest = hub_checkpoint(url)
    if dest.is_file():
        return dest
    if offline():
        raise WeightsError(f"{what}: not in the torch hub cache (looked for {dest}) and offline mode is on; "
                           f"run {fetch_command(what.split()[0])}, or copy {dest.name} there")
    m = HASH_IN_NAME.search(dest.name)
    return download(mirrored(url), dest, m.group(1) if m else None, progress)


@contextmanager
def hf_mode() -> Iterator[None]:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: apply this process's mode to it."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hf_cached_file(repo_id: str) -> Path | None:
    """The cached weights file of a hub repo (safetensors first, as timm reads them), or None."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None

