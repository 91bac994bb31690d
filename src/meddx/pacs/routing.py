"""Which RUN reads which series: rules on modality, body part and series description (YAML), first match wins.

```yaml
default: demo_cls            # optional: the RUN for series no rule matches (omitted: they are skipped)
rules:
  - model: ct_liver          # a RUN given with --model: its path or its folder name
    modality: CT             # regular expressions, case-insensitive; modality and body_part match whole
    body_part: ABDOMEN|LIVER
    series_description: portal|venous   # searched anywhere in the description
    heatmap_seg: true        # classifiers: also store the heatmap's lesion candidates as a DICOM SEG
```
Without a rules file a single RUN reads every image series. Non-image series (SR, SEG, PDF documents, key
objects, presentation states, RT objects) are never routed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from meddx.errors import ConfigError

NON_IMAGE = frozenset({"SR", "SEG", "DOC", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "FID",
                       "PLAN", "AU", "ECG", "HD", "RWV", "OT-DOC"})
_FIELDS = {"modality": ("modality", True), "body_part": ("body_part", True),
           "series_description": ("description", False)}


@dataclass
class Rule:
    """One routing rule: the RUN name and the patterns a series must match (all of them)."""

    model: str
    patterns: dict[str, re.Pattern[str]] = field(default_factory=dict)
    heatmap_seg: bool = False

    def matches(self, series: dict[str, Any]) -> bool:
        for key, pattern in self.patterns.items():
            attr, whole = _FIELDS[key]
            text = str(series.get(attr) or "")
            if not (pattern.fullmatch(text) if whole else pattern.search(text)):
                return False
        return True


@dataclass
class Routing:
    """Rules in order, and the default RUN name (or None: unmatched series are skipped)."""

    rules: list[Rule]
    default: str | None
    default_heatmap_seg: bool = False

    def choose(self, series: dict[str, Any]) -> tuple[str, bool] | None:
        """(RUN name, heatmap_seg) for a series, or None when no RUN should read it."""
        if str(series.get("modality") or "").upper() in NON_IMAGE:
            return None
        for rule in self.rules:
            if rule.matches(series):
                return rule.model, rule.heatmap_seg
        return (self.default, self.default_heatmap_seg) if self.default else None


def _compile(text: Any, where: str) -> re.Pattern[str]:
    try:
        return re.compile(str(text), re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: bad regular expression: {exc}") from None


def parse_routing(doc: Any, names: Sequence[str], source: str = "routing") -> Routing:
    """Validate a routing document (the YAML's content) against the RUN names available."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("routing must be a mapping with 'rules' (and optional 'default')", source)
    unknown = set(doc) - {"rules", "default", "heatmap_seg"}
    if unknown:
        raise ConfigError(f"unknown routing keys: {', '.join(sorted(unknown))}", source)

    def known(name: Any, where: str) -> str:
        if str(name) not in names:
            raise ConfigError(f"{where}: model '{name}' is not one of the --model RUNs ({', '.join(names)})", source)
        return str(name)

    rules = []
    for i, r in enumerate(doc.get("rules") or [], start=1):
        where = f"rule {i}"
        if not isinstance(r, dict) or "model" not in r:
            raise ConfigError(f"{where}: needs a 'model'", source)
        bad = set(r) - {"model", "heatmap_seg", *_FIELDS}
        if bad:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(bad))}", source)
        pats = {k: _compile(r[k], where) for k in _FIELDS if r.get(k) is not None}
        rules.append(Rule(known(r["model"], where), pats, bool(r.get("heatmap_seg", False))))
    default = doc.get("default")
    if default is None and not rules and len(names) == 1:
        default = names[0]
    return Routing(rules, known(default, "default") if default is not None else None,
                   bool(doc.get("heatmap_seg", False)))


def load_routing(path: str | Path | None, names: Sequence[str]) -> Routing:
    """Rules from a YAML file; without one, the single RUN reads every image series."""
    if path is None:
        if len(names) != 1:
            raise ConfigError(f"{len(names)} models given: --routing must say which reads which series")
        return Routing([], names[0])
    try:
        import yaml
    except ImportError:
        raise ConfigError("--routing needs PyYAML: pip install 'meddx[serve]'") from None

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", p) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {' '.join(str(exc).split())}", p) from None
    return parse_routing(doc, names, str(p))
