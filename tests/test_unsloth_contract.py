"""The package's contract with Unsloth, checked without a GPU against the pinned wheels.

``unsloth`` and ``unsloth_zoo`` at the versions of the GPU lock files (``requirements-gpu*.txt``) are
downloaded with ``pip download --no-deps`` (never installed: they replace torch) into
``.cache/wheels`` (``$MEDREASON_WHEEL_CACHE``) and read with ``ast``, without importing them.
What is checked is collected from ``medreason_utils`` itself, so a new Unsloth call or attribute
is covered without editing this file:

* every keyword the package passes to an Unsloth function or method (``FastLanguageModel.from_pretrained``,
  ``FastLanguageModel.get_peft_model``, anything imported from ``unsloth`` / ``unsloth_zoo``) is a
  parameter of that function in the pinned version and is read in its body, or, when it lands in
  ``**kwargs``, is read from ``kwargs`` there (forwarding ``**kwargs`` on does not count);
  load-time keywords also reach both loaders the call dispatches to (``FastLlamaModel`` for Llama,
  Qwen, Mistral...; ``FastBaseModel`` for the rest);
* every attribute the package reads on an Unsloth model (``fast_generate``, ``vllm_engine``,
  ``load_lora``, ``max_seq_length``, ...) is attached by Unsloth, and one attached only by
  ``get_peft_model`` (``load_lora``, ``save_lora``) is read only after checking for it, since
  :func:`medreason_utils.models.load_model` returns a model without ``get_peft_model`` when no adapter
  is given (issue 8, defect 3: ``base[0].load_lora`` on such a model);
* Unsloth's rewrite of ``scale_rewards`` under ``loss_type="dr_grpo"`` (``unsloth/models/rl.py``) is
  executed as Unsloth generates it and compared with the guard in
  :meth:`medreason_utils.rewards.RewardSettings.grpo_config_kwargs` (defect 10).

The attachment sites in unsloth 2026.10.5 (read in the wheel, and asserted below):
``FastLlamaModel.from_pretrained`` / ``FastBaseModel.from_pretrained`` set ``model.vllm_engine``,
``model.fast_generate`` and ``model.fast_generate_batches`` (vLLM only with ``fast_inference=True``)
and ``model.max_seq_length``; ``get_peft_model`` calls ``patch_peft_fast_inference(model)``
(``unsloth/models/_utils.py``), which copies the engine onto the peft model and sets
``model.load_lora = functools.partial(unsloth_zoo.vllm_utils.load_lora, model)`` when an engine exists,
and ``model.save_lora``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "medreason_utils"
WHEEL_CACHE = Path(os.environ.get("MEDREASON_WHEEL_CACHE", REPO_ROOT / ".cache" / "wheels"))
#: Used when no lock file pins them: unsloth 2026.10.5 (issue 8: resolves with vllm 0.11.2 and 0.15.1 on
#: the index here) and the newest unsloth_zoo it accepts there (>= 2026.10.5; 2026.10.8+ need certifi >= 2026.10.19).
FALLBACK_PINS = ("2026.10.5", "2026.10.7")
UNSLOTH_PACKAGES = ("unsloth", "unsloth_zoo")
#: Names of variables that hold a model in Unsloth's sources (attachments to other objects are not counted).
_MODEL_VAR = re.compile(r"(^|_)model$|^m$|^internal_model$|^new_model$|^peft_model$")


# ---------------------------------------------------------------------------------------------
# The pinned wheels
# ---------------------------------------------------------------------------------------------


def _lock_pins() -> list[tuple[str, str]]:
    """(unsloth, unsloth_zoo) version pairs pinned by the GPU lock files, or the fallback pair."""
    pairs = set()
    for lock in sorted(REPO_ROOT.glob("requirements-gpu*.txt")):
        pins = {}
        for line in lock.read_text().splitlines():
            m = re.match(r"^\s*(unsloth[-_]zoo|unsloth)\s*==\s*([\w.]+)", line, re.I)
            if m:
                pins[m.group(1).lower().replace("-", "_")] = m.group(2)
        if "unsloth" in pins:
            pairs.add((pins["unsloth"], pins.get("unsloth_zoo", FALLBACK_PINS[1])))
    return sorted(pairs) or [FALLBACK_PINS]


def _wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version`` in the cache, downloaded (no dependencies) when missing."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}-{version}-*.whl"
    found = sorted(WHEEL_CACHE.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(WHEEL_CACHE),
               f"{package}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        found = sorted(WHEEL_CACHE.glob(pattern))
        if done.returncode or not found:
            pytest.fail(f"could not download {package}=={version} ({' '.join(cmd)}): {done.stderr[-800:]}")
    return found[0]


_TOP_LEVEL = re.compile(r"^(class|def|async def)\s+(\w+)", re.M)


@dataclass
class Source:
    """Sources of the unsloth and unsloth_zoo wheels: an index of module-level classes and functions
    (by name), each module parsed with ``ast`` when first needed (the two wheels hold ~370 modules)."""

    texts: dict[str, str] = field(default_factory=dict)
    class_index: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    function_index: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _trees: dict[str, ast.Module] = field(default_factory=dict)
    _imports: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, module: str, text: str) -> None:
        self.texts[module] = text
        for kind, name in _TOP_LEVEL.findall(text):
            (self.class_index if kind == "class" else self.function_index)[name].append(module)

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            self._trees[module] = ast.parse(self.texts[module])
        return self._trees[module]

    @property
    def classes(self) -> dict[str, list[str]]:
        return self.class_index

    def _top(self, module: str, name: str, kind: type) -> list[ast.AST]:
        return [n for n in self.tree(module).body if isinstance(n, kind) and n.name == name]

    def cls(self, name: str) -> tuple[str, ast.ClassDef]:
        """The class ``name`` defined at module level in unsloth / unsloth_zoo. ``unsloth/__init__.py``
        defines stand-ins of the Fast*Model classes for Apple's MLX only (``if _IS_MLX:``, not at module
        level); the CUDA classes are those of ``unsloth.models``, which ``unsloth`` re-exports."""
        found = [(m, c) for m in dict.fromkeys(self.class_index.get(name, [])) for c in self._top(m, name, ast.ClassDef)]
        assert len(found) == 1, f"class {name}: expected one module-level definition, found {[m for m, _ in found]}"
        return found[0]

    def method(self, cls_name: str, name: str) -> tuple[str, str, ast.FunctionDef] | None:
        """(module, defining class, function) of ``cls_name.name`` following the bases (MRO by name)."""
        module, cls = self.cls(cls_name)
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return module, cls_name, node
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in self.class_index:
                hit = self.method(base.id, name)
                if hit:
                    return hit
        return None

    def _functions(self, name: str) -> list[tuple[str, ast.FunctionDef]]:
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
        return [(m, f) for m in dict.fromkeys(self.function_index.get(name, [])) for f in self._top(m, name, kinds)]

    def imports(self, module: str) -> dict[str, str]:
        """``{name: absolute module}`` of the ``from X import name`` statements anywhere in ``module``."""
        if module not in self._imports:
            self._imports[module] = {
                a.asname or a.name: _absolute(module, node)
                for node in ast.walk(self.tree(module)) if isinstance(node, ast.ImportFrom) for a in node.names
            }
        return self._imports[module]

    def function(self, module: str, name: str) -> tuple[str, ast.FunctionDef] | None:
        """A module-level function ``name`` as seen from ``module``: defined there, imported into it by
        ``from X import name``, or defined once in the two packages."""
        hits = self._functions(name)
        for m, fn in hits:
            if m == module:
                return m, fn
        if module in self.texts:
            target = self.imports(module).get(name)
            for m, fn in hits:
                if m == target:
                    return m, fn
        return hits[0] if len(hits) == 1 else None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts[: len(parts) - node.level + (1 if module.endswith("__init__") else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _load(unsloth_version: str, zoo_version: str) -> Source:
    src = Source()
    for package, version in zip(UNSLOTH_PACKAGES, (unsloth_version, zoo_version)):
        with zipfile.ZipFile(_wheel(package, version)) as zf:
            for name in zf.namelist():
                if name.startswith(f"{package}/") and name.endswith(".py"):
                    module = name[:-3].replace("/", ".").removesuffix(".__init__")
                    src.add(module, zf.read(name).decode("utf-8"))
    return src


@pytest.fixture(scope="module", params=_lock_pins(), ids=lambda p: f"unsloth{p[0]}-zoo{p[1]}")
def wheel(request) -> Source:
    return _load(*request.param)


# ---------------------------------------------------------------------------------------------
# What medreason_utils uses
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    where: str  # file:line
    target: tuple[str, ...]  # ("class", Class, method) or ("function", module, name)
    keywords: list[str]
    forwards_kwargs: bool


def _package_trees() -> dict[str, ast.Module]:
    return {str(p.relative_to(REPO_ROOT)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def unsloth_calls() -> list[Call]:
    """Every call in medreason_utils of a name imported from unsloth / unsloth_zoo (``Cls.method(...)`` or ``f(...)``)."""
    calls = []
    for path, tree in _package_trees().items():
        imported: dict[str, tuple[str, str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSLOTH_PACKAGES:
                for a in node.names:
                    imported[a.asname or a.name] = (node.module, a.name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            target = None
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in imported:
                target = ("class", imported[f.value.id][1], f.attr)
            elif isinstance(f, ast.Name) and f.id in imported:
                module, name = imported[f.id]
                target = ("function", module, name)
            if target:
                kws = [k.arg for k in node.keywords if k.arg]
                calls.append(Call(f"{path}:{node.lineno}", target, kws, any(k.arg is None for k in node.keywords)))
    return calls


@dataclass
class AttrUse:
    where: str
    attr: str
    guarded: bool  # read through getattr/hasattr with a fallback, or in a function that checks for it first


def attribute_uses() -> list[AttrUse]:
    """Every attribute read in medreason_utils (``x.attr`` in load context, ``getattr(x, "attr", ...)``,
    ``hasattr(x, "attr")``), with whether it is guarded. Stores (``x.attr = ...``) are the package's own."""
    uses = []
    for path, tree in _package_trees().items():
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        owner: dict[int, ast.AST] = {}
        for fn in sorted(funcs, key=lambda n: (n.lineno, -(n.end_lineno or 0))):  # innermost function wins
            for sub in ast.walk(fn):
                owner[id(sub)] = fn
        checked_in: dict[int, set[str]] = defaultdict(set)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    name = node.args[1].value
                    safe = node.func.id == "hasattr" or len(node.args) >= 3
                    if safe:
                        checked_in[id(owner.get(id(node), tree))].add(name)
                    uses.append(AttrUse(f"{path}:{node.lineno}", name, safe))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                scope = owner.get(id(node), tree)
                uses.append(AttrUse(f"{path}:{node.lineno}", node.attr, node.attr in checked_in[id(scope)]))
    return uses


# ---------------------------------------------------------------------------------------------
# Where Unsloth attaches model attributes
# ---------------------------------------------------------------------------------------------


def _model_arg(call: ast.Call) -> bool:
    args = list(call.args) + [k.value for k in call.keywords]
    return any(isinstance(a, ast.Name) and _MODEL_VAR.search(a.id) for a in args)


def _attached_here(fn: ast.AST) -> set[str]:
    """Attributes set on a model variable in ``fn``: ``model.x = ...``, ``setattr(model, "x", ...)``."""
    out = set()
    for node in ast.walk(fn):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                if isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name) and _MODEL_VAR.search(el.value.id):
                    out.add(el.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) >= 2:
            obj, name = node.args[0], node.args[1]
            if isinstance(obj, ast.Name) and _MODEL_VAR.search(obj.id) and isinstance(name, ast.Constant):
                out.add(str(name.value))
    return out


def attached_by(src: Source, module: str, fn: ast.FunctionDef, depth: int = 4, seen: set | None = None) -> set[str]:
    """Attributes ``fn`` attaches to a model, directly or through the Unsloth functions and class methods
    it calls with a model argument (``patch_peft_fast_inference(model)``, ``FastLlamaModel.patch_peft_model(model, ...)``)
    or delegates to (``FastBaseModel.from_pretrained`` from ``FastModel.from_pretrained``)."""
    seen = set() if seen is None else seen
    if id(fn) in seen:
        return set()
    seen.add(id(fn))
    out = _attached_here(fn)
    if depth == 0:
        return out
    for node in ast.walk(fn):
        delegates = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == fn.name
        if not (isinstance(node, ast.Call) and (_model_arg(node) or delegates)):
            continue
        hit = None
        if isinstance(node.func, ast.Name):
            hit = src.function(module, node.func.id)
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and node.func.value.id in src.classes:
            found = src.method(node.func.value.id, node.func.attr)
            hit = (found[0], found[2]) if found else None
        if hit:
            out |= attached_by(src, hit[0], hit[1], depth - 1, seen)
    return out


def dispatch_targets(src: Source) -> list[str]:
    """The classes ``FastLanguageModel.from_pretrained`` hands loading to: every class assigned to
    ``dispatch_model`` (called as ``dispatch_model.from_pretrained``) and the classes whose
    ``from_pretrained`` it calls directly (``FastModel``)."""
    _, _, fn = src.method("FastLanguageModel", "from_pretrained")
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "dispatch_model" for t in node.targets):
            for v in ast.walk(node.value):
                if isinstance(v, ast.Name) and v.id in src.classes:
                    names.add(v.id)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in src.classes):
            names.add(node.func.value.id)
    return sorted(names)


def load_attached(src: Source) -> set[str]:
    """Attributes every model returned by ``FastLanguageModel.from_pretrained`` carries: those set on every
    dispatch path (the intersection over the loaders)."""
    sets = []
    for cls in dispatch_targets(src):
        module, _, fn = src.method(cls, "from_pretrained")
        sets.append(attached_by(src, module, fn))
    return set.intersection(*sets)


def peft_attached(src: Source) -> set[str]:
    module, _, fn = src.method("FastLanguageModel", "get_peft_model")
    return attached_by(src, module, fn)


_OUR_MODEL_VAR = re.compile(r"(^|_)model$")


def _model_receiver(node: ast.expr) -> bool:
    """``model``, ``*_model``, ``self.model``, ``base[0]`` / ``spec[0]``: how medreason_utils names a loaded model."""
    if isinstance(node, ast.Name):
        return bool(_OUR_MODEL_VAR.search(node.id))
    if isinstance(node, ast.Attribute):
        return node.attr == "model" and isinstance(node.value, ast.Name) and node.value.id == "self"
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("base", "spec")


def model_attribute_reads() -> tuple[dict[str, list[str]], set[str]]:
    """Attributes medreason_utils reads on a model (``{attr: [file:line]}``) and those it sets on one itself."""
    reads: dict[str, list[str]] = defaultdict(list)
    own: set[str] = set()
    for path, tree in _package_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _model_receiver(node.value):
                if isinstance(node.ctx, ast.Store):
                    own.add(node.attr)
                else:
                    reads[node.attr].append(f"{path}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2 and _model_receiver(node.args[0]) and isinstance(node.args[1], ast.Constant)):
                reads[str(node.args[1].value)].append(f"{path}:{node.lineno}")
    return reads, own


def _non_unsloth_attributes() -> set[str]:
    """Attribute names a model has without Unsloth: those of a real (tiny) transformers Llama and of its
    peft LoRA wrapper, instances included (``training``, ``config``, ``name_or_path``, ``peft_config``), and
    of the LoraModel the wrapper forwards unknown names to (``merge_and_unload``)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    tiny = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    names = set(dir(tiny))
    wrapped = peft.get_peft_model(tiny, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    names |= set(dir(wrapped)) | set(dir(wrapped.base_model))
    return names


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def _kwargs_reads(fn: ast.FunctionDef, kwargs_name: str) -> set[str]:
    """Keys read from ``**kwargs_name`` in ``fn``: ``kwargs.get("x")``, ``.pop``, ``.setdefault``,
    ``kwargs["x"]``, ``"x" in kwargs``."""
    out = set()
    for n in ast.walk(fn):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("get", "pop", "setdefault")
                and isinstance(n.func.value, ast.Name) and n.func.value.id == kwargs_name and n.args
                and isinstance(n.args[0], ast.Constant)):
            out.add(n.args[0].value)
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == kwargs_name and isinstance(n.slice, ast.Constant):
            out.add(n.slice.value)
        if (isinstance(n, ast.Compare) and isinstance(n.left, ast.Constant) and len(n.comparators) == 1
                and isinstance(n.comparators[0], ast.Name) and n.comparators[0].id == kwargs_name):
            out.add(n.left.value)
    return out


def _forward_targets(src: Source, module: str, fn: ast.FunctionDef, kwargs_name: str):
    """Functions ``fn`` passes its ``**kwargs_name`` on to (``Cls.method(..., **kwargs)`` or ``f(..., **kwargs)``)."""
    for n in ast.walk(fn):
        if not (isinstance(n, ast.Call) and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs_name
                                                for k in n.keywords)):
            continue
        if isinstance(n.func, ast.Name):
            hit = src.function(module, n.func.id)
            if hit:
                yield hit[0], hit[1]
        elif isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name) and n.func.value.id in src.classes:
            hit = src.method(n.func.value.id, n.func.attr)
            if hit:
                yield hit[0], hit[2]


def _keyword_problem(src: Source, module: str, fn: ast.FunctionDef, kw: str, depth: int = 3) -> str | None:
    """Why ``kw`` passed to ``fn`` is not used, or None: it must be a parameter the body reads, or be read
    from ``**kwargs``, or be forwarded in ``**kwargs`` to a function (of unsloth / unsloth_zoo) that uses it."""
    a = fn.args
    params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    if kw in params:
        read = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        return None if kw in read or "locals" in read else f"{kw!r} is a parameter of {fn.name} that its body never reads"
    if not a.kwarg:
        return f"{kw!r} is not a parameter of {fn.name}({', '.join(sorted(params))})"
    if kw in _kwargs_reads(fn, a.kwarg.arg):
        return None
    if depth > 0:
        for m, target in _forward_targets(src, module, fn, a.kwarg.arg):
            if _keyword_problem(src, m, target, kw, depth - 1) is None:
                return None
    return f"{kw!r} lands in **{a.kwarg.arg} of {fn.name} ({module}) and nothing it is forwarded to reads it"


def _signature_check(src: Source, module: str, fn: ast.FunctionDef, keywords: list[str]) -> list[str]:
    return [p for kw in keywords if (p := _keyword_problem(src, module, fn, kw))]


def _resolve(src: Source, call: Call):
    if call.target[0] == "class":
        hit = src.method(call.target[1], call.target[2])
        return (hit[0], f"{hit[1]}.{hit[2].name}", hit[2]) if hit else None
    _, module, name = call.target
    hit = src.function(module, name)
    return (hit[0], name, hit[1]) if hit else None


def test_the_package_calls_unsloth_where_expected():
    """The collection below sees the calls it must check (a collector that finds nothing would pass anything)."""
    targets = {c.target for c in unsloth_calls()}
    assert ("class", "FastLanguageModel", "from_pretrained") in targets
    assert ("class", "FastLanguageModel", "get_peft_model") in targets


def test_every_keyword_passed_to_unsloth_exists_and_is_read(wheel):
    problems = []
    for call in unsloth_calls():
        hit = _resolve(wheel, call)
        if hit is None:
            problems.append(f"{call.where}: {'.'.join(call.target[1:])} does not exist in the pinned unsloth/unsloth_zoo")
            continue
        module, qualname, fn = hit
        problems += [f"{call.where}: {qualname} ({module}): {p}" for p in _signature_check(wheel, module, fn, call.keywords)]
    assert not problems, "\n".join(problems)


def test_load_keywords_reach_every_loader_from_pretrained_dispatches_to(wheel):
    """FastLanguageModel.from_pretrained hands its arguments to FastLlamaModel (Llama, Qwen, Mistral, ...)
    or FastModel/FastBaseModel (Gemma 3, other architectures): both must take what the package passes."""
    targets = dispatch_targets(wheel)
    assert "FastLlamaModel" in targets or any(wheel.method(t, "from_pretrained")[1] == "FastLlamaModel" for t in targets)
    assert "FastModel" in targets
    # keywords the loader renames on the way (load_in_4bit is passed as load_in_4bit=load_in_4bit_kwargs) keep their name
    calls = [c for c in unsloth_calls() if c.target == ("class", "FastLanguageModel", "from_pretrained")]
    problems = []
    for cls in targets:
        module, owner, fn = wheel.method(cls, "from_pretrained")
        for call in calls:
            kws = [k for k in call.keywords if k != "model_name"]
            problems += [f"{call.where} -> {cls}.from_pretrained (defined in {owner}, {module}): {p}" for p in _signature_check(wheel, module, fn, kws)]
    assert not problems, "\n".join(problems)


def test_unsloth_attaches_the_model_attributes_where_the_package_expects_them(wheel):
    on_load, on_peft = load_attached(wheel), peft_attached(wheel)
    # the real places, as read in the wheel (module docstring)
    assert {"vllm_engine", "fast_generate", "max_seq_length"} <= on_load
    assert {"load_lora", "save_lora", "vllm_engine", "fast_generate"} <= on_peft
    assert "load_lora" not in on_load, "Unsloth now attaches load_lora at load time: the guard below can be relaxed"
    zoo_load_lora = wheel.function("unsloth_zoo.vllm_utils", "load_lora")
    assert zoo_load_lora is not None
    _, _, fn = wheel.method("FastLlamaModel", "get_peft_model")
    assert "patch_peft_fast_inference" in ast.unparse(fn)

    unsloth_only = (on_load | on_peft) - _non_unsloth_attributes()
    uses = [u for u in attribute_uses() if u.attr in unsloth_only]
    used = {u.attr for u in uses}
    # the package reaches vLLM through model.vllm_engine (medreason_utils.generation.vllm_engine), not fast_generate
    assert "vllm_engine" in used, f"the collector found only {sorted(used)}"
    problems = [
        f"{u.where}: reads .{u.attr} without checking for it; Unsloth attaches it only in get_peft_model "
        f"(patch_peft_fast_inference), and load_model(adapter=None) returns a model without it"
        for u in uses
        if u.attr in on_peft - on_load and not u.guarded
    ]
    assert not problems, "\n".join(problems)


def test_every_attribute_read_on_a_model_is_attached_by_someone(wheel):
    """A name nobody attaches (a typo, or an attribute of another Unsloth version) would raise AttributeError only
    on a GPU: each must exist on torch / transformers / peft models, be set by the package itself, or be
    attached by Unsloth's from_pretrained or get_peft_model in the pinned version."""
    reads, own = model_attribute_reads()
    assert "vllm_engine" in reads, f"the collector found only {sorted(reads)}"
    known = _non_unsloth_attributes() | own | load_attached(wheel) | peft_attached(wheel)
    unknown = {attr: where for attr, where in reads.items() if attr not in known}
    assert not unknown, f"attributes read on a model that nothing attaches in the pinned unsloth: {unknown}"


def _dr_grpo_rewrite(src: Source) -> str:
    """The code Unsloth's GRPOConfig runs on ``loss_type`` / ``scale_rewards`` (a string constant in
    ``unsloth/models/rl.py`` assigned to ``check_dr_grpo``)."""
    tree = src.tree("unsloth.models.rl")
    found = [
        n.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "check_dr_grpo" for t in n.targets)
        and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
    ]
    assert len(found) == 1, f"expected one check_dr_grpo string in unsloth/models/rl.py, found {len(found)}"
    return found[0]


def test_unsloth_rewrites_group_scaling_under_dr_grpo_and_our_guard_matches(wheel):
    """unsloth/models/rl.py (2026.10.5) generates, into UnslothGRPOConfig.__init__::

        if loss_type.lower() == 'dr_grpo':
            if scale_rewards == None:
                scale_rewards = True
            elif scale_rewards == True or scale_rewards == 'group':
                print('Unsloth: The Dr GRPO paper recommends setting `scale_rewards` to False! Will override. ...')
                scale_rewards = False

    The snippet is run here as Unsloth writes it, for each value the playground offers; the guard in
    ``RewardSettings.grpo_config_kwargs`` must refuse exactly the values Unsloth changes.
    """
    from medreason_utils.ui.playground import SCALE_OPTIONS, RewardSettings

    code = "_unsloth_default_loss_type = False\n" + _dr_grpo_rewrite(wheel)
    assert "scale_rewards = False" in code
    changed = {}
    for loss_type in ("dr_grpo", "grpo", "dapo", "bnpo"):
        for value in SCALE_OPTIONS:
            env = {"loss_type": loss_type, "scale_rewards": value, "mask_truncated_completions": None,
                   "epsilon_high": None, "beta": 0.0, "print": lambda *a, **k: None}
            exec(compile(code, "unsloth/models/rl.py:check_dr_grpo", "exec"), env)  # noqa: S102 - the wheel's own text
            changed[loss_type, value] = env["scale_rewards"] != value
            refused = False
            try:
                RewardSettings(scale_rewards=value).grpo_config_kwargs(loss_type=loss_type)
            except ValueError:
                refused = True
            assert refused == changed[loss_type, value], (loss_type, value, env["scale_rewards"])
    assert changed["dr_grpo", "group"] and not changed["dr_grpo", "batch"] and not changed["dr_grpo", "none"]
