"""Dataset presets (`presets/datasets.yaml`): hub datasets by name, with their label words and prompt.

A preset gives a task its verbalizers and template; with no training file it also says where on the Hugging Face
Hub the data lives and how its columns map. Hub access is optional: when the hub is off (`HF_HUB_OFFLINE=1`)
only a cached copy can load, and anything else fails at once with one sentence instead of a retry loop.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from curlora.data.csvfile import Table, show
from curlora.data.labels import canonical_label
from curlora.errors import CurloraError
from curlora.paths import PRESETS, hub_offline

PRESETS_FILE = PRESETS / "datasets.yaml"


@dataclass(frozen=True)
class HubSource:
    """Where a preset's data lives on the hub and which of its columns are text, text pair and label."""

    path: str
    text: str
    label: str
    config: str | None = None
    text_pair: str | None = None
    train_split: str = "train"
    eval_split: str | None = None
    relabel: dict[str, str] = field(default_factory=dict)  # hub label -> label used by local CSVs
    exclude_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    description: str
    verbalizers: dict[str, str]
    template: str
    hub: HubSource | None = None


_PRESET_KEYS = {"description", "verbalizers", "template", "hub"}
_HUB_KEYS = {"path", "config", "text", "text_pair", "label", "train_split", "eval_split", "relabel",
             "exclude_labels"}


def load_presets(path: str | os.PathLike | None = None) -> dict[str, DatasetPreset]:
    path = Path(path) if path else PRESETS_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CurloraError(f"{path.name}: the dataset presets can't be read ({err}).") from None
    if not isinstance(raw, dict):
        raise CurloraError(f"{path.name}: expected a mapping of preset names to presets.")
    return {str(name): _parse_preset(str(name), body, path.name) for name, body in raw.items()}


def _parse_preset(name: str, body: object, source: str) -> DatasetPreset:
    where = f"{source}: preset '{name}'"
    if not isinstance(body, dict):
        raise CurloraError(f"{where} must be a mapping.")
    unknown = sorted(set(body) - _PRESET_KEYS)
    if unknown:
        raise CurloraError(f"{where} has unknown key '{unknown[0]}'; known keys are {', '.join(sorted(_PRESET_KEYS))}.")
    hub = body.get("hub")
    if hub is not None:
        if not isinstance(hub, dict):
            raise CurloraError(f"{where}: 'hub' must be a mapping.")
        unknown = sorted(set(hub) - _HUB_KEYS)
        if unknown:
            raise CurloraError(f"{where}: hub has unknown key '{unknown[0]}'; known keys are "
                               f"{', '.join(sorted(_HUB_KEYS))}.")
        missing = [k for k in ("path", "text", "label") if not hub.get(k)]
        if missing:
            raise CurloraError(f"{where}: hub needs '{missing[0]}'.")
        hub = HubSource(
            path=str(hub["path"]), text=str(hub["text"]), label=str(hub["label"]),
            config=hub.get("config"), text_pair=hub.get("text_pair"),
            train_split=str(hub.get("train_split", "train")), eval_split=hub.get("eval_split"),
            relabel={canonical_label(k): canonical_label(v) for k, v in (hub.get("relabel") or {}).items()},
            exclude_labels=tuple(canonical_label(x) for x in hub.get("exclude_labels") or ()),
        )
    return DatasetPreset(
        name=name, description=str(body.get("description", "")),
        verbalizers={canonical_label(k): str(v) for k, v in (body.get("verbalizers") or {}).items()},
        template=str(body.get("template", "")), hub=hub,
    )


def get_preset(name: str, path: str | os.PathLike | None = None) -> DatasetPreset:
    presets = load_presets(path)
    if name not in presets:
        import difflib

        guess = difflib.get_close_matches(name, list(presets), n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise CurloraError(f"no dataset preset named '{show(name)}'; {hint}presets are: {', '.join(presets)}.")
    return presets[name]


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True, host
    except OSError:
        return False, host


def load_hub_split(preset: DatasetPreset, split: str, *, text: str | None = None, text_pair: str | None = None,
                   label: str | None = None) -> Table:
    """One split of a preset's hub dataset as a `Table` of strings (columns: text[, text_pair], label).

    Offline, only the local `datasets` cache is tried; online, an unreachable hub fails within seconds.
    """
    hub = preset.hub
    if hub is None:
        raise CurloraError(f"dataset preset '{preset.name}' has no hub source; give it a training CSV file.")
    ident = hub.path + (f" ({hub.config})" if hub.config else "")
    from huggingface_hub import constants

    if hub_offline() and not constants.HF_HUB_OFFLINE:
        # The variable was set after huggingface_hub was imported, so `datasets` would still go online and retry.
        raise CurloraError(f"dataset preset '{preset.name}' needs {ident} from the Hugging Face Hub, but the hub is "
                           "switched off (HF_HUB_OFFLINE); download it once with the hub on, or use a local CSV.")
    if not hub_offline():
        ok, host = _hub_reachable()
        if not ok:
            raise CurloraError(f"dataset preset '{preset.name}' needs {ident} from the Hugging Face Hub, but {host} "
                               "can't be reached; check the network, or set HF_HUB_OFFLINE=1 to use a cached copy, "
                               "or use a local CSV.")
    import datasets

    try:
        ds = datasets.load_dataset(hub.path, hub.config, split=split)
    except (OSError, ValueError, RuntimeError, ImportError, KeyError, datasets.exceptions.DatasetsError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if hub_offline():
            raise CurloraError(f"dataset preset '{preset.name}' needs {ident} from the Hugging Face Hub, which is not "
                               "in the local cache and HF_HUB_OFFLINE=1 is set; unset HF_HUB_OFFLINE to download it "
                               "once, or use a local CSV.") from None
        raise CurloraError(f"dataset preset '{preset.name}': loading {ident} split '{split}' from the hub failed "
                           f"({first}); use a local CSV with this preset instead.") from None
    return hub_table(ds, preset, split, text=text or hub.text, text_pair=text_pair or hub.text_pair,
                     label=label or hub.label)


def hub_table(ds, preset: DatasetPreset, split: str, *, text: str, text_pair: str | None, label: str) -> Table:
    """A loaded `datasets.Dataset` as a Table; class-label ids stay ids ("0", "1"), then `relabel` applies."""
    source = f"{preset.hub.path}[{split}]"
    wanted = [c for c in (text, text_pair, label) if c]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise CurloraError(f"{source}: column '{missing[0]}' not found; columns are: {', '.join(ds.column_names)}.")
    relabel = preset.hub.relabel
    cols = ds.select_columns(wanted)[:]  # plain lists; a datasets Column indexed row by row is very slow
    rows = []
    for values in zip(*(cols[c] for c in wanted)):
        row = ["" if v is None else str(v) for v in values]
        row[-1] = relabel.get(canonical_label(row[-1]), row[-1])
        rows.append(tuple(row))
    return Table(source=source, columns=wanted, rows=rows, lines=list(range(1, len(rows) + 1)), unit="row")
