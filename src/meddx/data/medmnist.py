"""Download the official MedMNIST (28 px) `.npz` files from Zenodo, with MD5 verification.

For users with internet only; nothing else in meddx needs the network. Failures (offline,
timeout, HTTP error, checksum mismatch) raise `NetworkError` with one clear line.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from meddx.errors import ConfigError, NetworkError

# Source: MedMNIST/MedMNIST `medmnist/info.py`, __version__ "3.0.2" (commit 3bb56be69bca38e5f105b21e4d6482b91354d3a4),
# the INFO dict entries "url" and "MD5" (the 28-px files, Zenodo record 10519652), plus its
# "task", "n_channels", "n_samples" and "label" fields. The older info.py of MedMNIST 2.1.0
# (Zenodo record 6496656) lists the same MD5s except organamnist, organcmnist, organsmnist,
# organmnist3d and vesselmnist3d, whose files were re-issued in record 10519652.
_ZENODO = "https://zenodo.org/records/10519652/files/{flag}.npz?download=1"


def _entry(flag: str, md5: str, task: str, n_channels: int, n_samples: tuple[int, int, int],
           labels: list[str]) -> dict[str, Any]:
    return {"url": _ZENODO.format(flag=flag), "md5": md5, "task": task, "n_channels": n_channels,
            "n_samples": dict(zip(("train", "val", "test"), n_samples)), "labels": labels}


_ORGANS_2D = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
              "lung-left", "lung-right", "pancreas", "spleen"]

MEDMNIST_INFO: dict[str, dict[str, Any]] = {
    "pathmnist": _entry("pathmnist", "a8b06965200029087d5bd730944a56c1", "multi-class", 3, (89996, 10004, 7180),
                        ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                         "normal colon mucosa", "cancer-associated stroma",
                         "colorectal adenocarcinoma epithelium"]),
    "chestmnist": _entry("chestmnist", "02c8a6516a18b556561a56cbdd36c4a8", "multi-label, binary-class", 1,
                         (78468, 11219, 22433),
                         ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                          "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]),
    "dermamnist": _entry("dermamnist", "0744692d530f8e62ec473284d019b0c7", "multi-class", 3, (7007, 1003, 2005),
                         ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                          "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                          "vascular lesions"]),
    "octmnist": _entry("octmnist", "c68d92d5b585d8d81f7112f81e2d0842", "multi-class", 1, (97477, 10832, 1000),
                       ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]),
    "pneumoniamnist": _entry("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", "binary-class", 1,
                             (4708, 524, 624), ["normal", "pneumonia"]),
    "retinamnist": _entry("retinamnist", "bd4c0672f1bba3e3a89f0e4e876791e4", "ordinal-regression", 3,
                          (1080, 120, 400), ["0", "1", "2", "3", "4"]),
    "breastmnist": _entry("breastmnist", "750601b1f35ba3300ea97c75c52ff8f6", "binary-class", 1, (546, 78, 156),
                          ["malignant", "normal, benign"]),
    "bloodmnist": _entry("bloodmnist", "7053d0359d879ad8a5505303e11de1dc", "multi-class", 3, (11959, 1712, 3421),
                         ["basophil", "eosinophil", "erythroblast",
                          "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                          "monocyte", "neutrophil", "platelet"]),
    "tissuemnist": _entry("tissuemnist", "ebe78ee8b05294063de985d821c1c34b", "multi-class", 1,
                          (165466, 23640, 47280),
                          ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                           "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                           "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"]),
    "organamnist": _entry("organamnist", "68e3f8846a6bd62f0c9bf841c0d9eacc", "multi-class", 1,
                          (34561, 6491, 17778), _ORGANS_2D),
    "organcmnist": _entry("organcmnist", "b9ceb9546e10131b32923c5bbeaea2b1", "multi-class", 1,
                          (12975, 2392, 8216), _ORGANS_2D),
    "organsmnist": _entry("organsmnist", "9ab87b696fb54e2a387ebe992d6ed5f1", "multi-class", 1,
                          (13932, 2452, 8827), _ORGANS_2D),
    "organmnist3d": _entry("organmnist3d", "a0c5a1ff56af4f155c46d46fbb45a2fe", "multi-class", 1, (971, 161, 610),
                           ["liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart",
                            "lung-right", "lung-left", "spleen", "pancreas"]),
    "nodulemnist3d": _entry("nodulemnist3d", "8755a7e9e05a4d9ce80a24c3e7a256f3", "binary-class", 1,
                            (1158, 165, 310), ["benign", "malignant"]),
    "adrenalmnist3d": _entry("adrenalmnist3d", "bbd3c5a5576322bc4cdfea780653b1ce", "binary-class", 1,
                             (1188, 98, 298), ["normal", "hyperplasia"]),
    "fracturemnist3d": _entry("fracturemnist3d", "6aa7b0143a6b42da40027a9dda61302f", "multi-class", 1,
                              (1027, 103, 240),
                              ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"]),
    "vesselmnist3d": _entry("vesselmnist3d", "b41fd4f7e7e2feedddb201585ecafa1b", "binary-class", 1,
                            (1335, 191, 382), ["vessel", "aneurysm"]),
    "synapsemnist3d": _entry("synapsemnist3d", "1235b78a3cd6280881dd7850a78eadb6", "binary-class", 1,
                             (1230, 177, 352), ["inhibitory synapse", "excitatory synapse"]),
}

DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def default_root() -> Path:
    """Where downloads go by default: $MEDDX_DATA or ~/.meddx/medmnist."""
    env = os.environ.get("MEDDX_DATA")
    return Path(env) / "medmnist" if env else Path.home() / ".meddx" / "medmnist"


def md5sum(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def medmnist_info(flag: str) -> dict[str, Any]:
    """The table entry for `flag` (url, md5, task, n_channels, n_samples, labels)."""
    key = flag.strip().lower()
    if key not in MEDMNIST_INFO:
        raise ConfigError(f"unknown MedMNIST dataset '{flag}' (known: {', '.join(sorted(MEDMNIST_INFO))})")
    return MEDMNIST_INFO[key]


def download_medmnist(flag: str, root: str | Path | None = None, force: bool = False, *,
                      url: str | None = None, md5: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                      progress: bool = True, opener: Callable[..., Any] | None = None) -> Path:
    """Download `<root>/<flag>.npz` from Zenodo and check its MD5; return its path.

    An existing file with the right MD5 is kept (no network). `url`/`md5` override the table
    (mirrors, tests); `opener` replaces `urllib.request.urlopen`. Any failure raises
    `NetworkError` and leaves no partial file at the target.
    """
    key = flag.strip().lower()
    info = medmnist_info(key) if (url is None or md5 is None) else {}
    url = url or info["url"]
    expected = (md5 or info["md5"]).lower()
    target = Path(root if root is not None else default_root()) / f"{key}.npz"

    if target.exists() and not force:
        if md5sum(target) == expected:
            return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetworkError(f"cannot create download folder: {exc.strerror or exc}", target.parent) from None

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    hint = f"check your network or download it by hand to {target}"
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, timeout=timeout, progress=progress, desc=key, opener=opener)
        if got != expected:
            raise NetworkError(f"MD5 mismatch for downloaded {target.name} from {url}: expected {expected}, got {got}; "
                               f"the file was deleted", target)
        os.replace(tmp, target)
    except NetworkError:
        raise
    except urllib.error.HTTPError as exc:
        raise NetworkError(f"could not download {key} from {url}: HTTP {exc.code} {exc.reason}; {hint}") from None
    except urllib.error.URLError as exc:
        raise NetworkError(f"could not download {key} from {url}: {_reason(exc.reason)}; {hint}") from None
    except (socket.timeout, TimeoutError) as exc:
        raise NetworkError(f"could not download {key} from {url}: timed out ({exc or timeout}); {hint}") from None
    except (OSError, ValueError) as exc:
        raise NetworkError(f"could not download {key} from {url}: {_reason(exc)}; {hint}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _reason(exc: Any) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def _stream(url: str, out: Any, *, timeout: float, progress: bool, desc: str,
            opener: Callable[..., Any] | None) -> str:
    """Copy `url` to the open file `out` with a tqdm bar; return the MD5 of what was written."""
    from tqdm.auto import tqdm

    open_url = opener or urllib.request.urlopen
    req = urllib.request.Request(url, headers={"User-Agent": "meddx"}) if url.startswith("http") else url
    h = hashlib.md5()
    with open_url(req, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) is not None else None
        with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False) as bar:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                out.write(block)
                h.update(block)
                bar.update(len(block))
    return h.hexdigest()


def label_names_for(filename: str) -> list[str] | None:
    """MedMNIST's published class names when `filename` starts with a known flag (e.g. breastmnist_trainval.npz)."""
    stem = Path(filename).name.lower()
    for flag in sorted(MEDMNIST_INFO, key=len, reverse=True):
        if stem.startswith(flag):
            return list(MEDMNIST_INFO[flag]["labels"])
    return None
