"""Steps of one's own: from a step file (``sweep ... --steps-from FILE``) or from an installed package (the entry-point
group ``cnn_sweeps.steps``), checked before anything runs.

A step file is a Python file whose steps are its ``STEPS`` list: each :func:`cnn.zoo.declare` call appends one (a
:class:`cnn.zoo.Step` written out in full, as in the zoo, may be put there too). It imports installed packages only:
it is loaded under a name of its own and never from its folder, so that nothing but the driver needs the file. Its
code reaches the workers inside the runs, by value (``sweeps.runner``). A package declares a module of such steps in
its ``pyproject.toml``, and every command that names steps sees them::

    [project.entry-points."cnn_sweeps.steps"]
    mine = "my_package.steps"

Each step is checked as the zoo's are (tests/test_zoo.py): its name clashes with no zoo step and no other file's; its
recipe is in range (:class:`cnn.zoo.Recipe`); its network maps a batch of 1×28×28 images to (batch, 10)
log-probabilities, run as the trainer runs it. A bad file is one line (:class:`BadStepFile`) naming the file, and the
line where Python points. The loader also finds out whether the network trains with other seeds as one block network
(:mod:`cnn.block`): a forward that mixes the seeds' channels would give every seed of a block wrong numbers, so such a
step trains one seed per trial.

A step from here hashes the code its network runs into its recipe hash (:func:`code_hash`), so that an edited model
never pools with its old rows; ``steps.parquet`` records the file and its SHA-256.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import re
import sys
import textwrap
import traceback
import types
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import torch
from torch import nn

from cnn import zoo
from cnn.block import per_seed, stack, unstackable
from cnn.errors import BadInput
from cnn.train import CHANNELS_LAST
from cnn.zoo import Origin, Step

GROUP = "cnn_sweeps.steps"  # the entry-point group of installed packages' steps
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a step name is a folder name of the results: no '/', '#', ' '


class BadStepFile(BadInput):
    """A step file or package that cannot be used. The message is one line naming the file, and the line where
    Python points."""


def load(paths: Iterable[Path] = ()) -> list[Step]:
    """The steps of the installed packages, then of the step files ``paths`` (each file once), checked."""
    taken = dict.fromkeys(zoo.list_steps(), "a zoo step")
    steps = []
    for ep in entry_points(group=GROUP):
        steps += _checked(*_package(ep), taken)
    for path in dict.fromkeys(Path(p).expanduser().resolve() for p in paths):
        steps += _checked(*_file(path), taken)
    return steps


@contextlib.contextmanager
def using(paths: Iterable[Path] = ()) -> Iterator[list[Step]]:
    """The zoo with the steps of :func:`load` registered too, while the block runs."""
    steps = load(paths)
    with zoo.including(steps):
        yield steps


def _file(path: Path) -> tuple[types.ModuleType, Origin, bytes]:
    """A step file, run as a module of its own name, not importable by any other."""
    if not path.is_file():
        raise BadStepFile(f"no step file at {path}" + (" (a folder)" if path.is_dir() else ""))
    source = path.read_bytes()
    sha = hashlib.sha256(source).hexdigest()
    name = "stepfile_" + re.sub(r"\W", "_", path.stem) + "_" + sha[:12]
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise BadStepFile(f"step file {path}:{e.lineno}: {type(e).__name__}: {e.msg}") from None
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # as an import would, for dataclasses and inspect; and what cloudpickle needs
    try:
        exec(code, module.__dict__)
    except Exception as e:
        del sys.modules[name]
        raise BadStepFile(f"step file {_at(e, str(path))}: {_said(e)}{_hint(e)}") from None
    return module, Origin(str(path), sha, "", name, path.stem), source


def _package(ep: EntryPoint) -> tuple[types.ModuleType, Origin, bytes]:
    """An installed package's steps module, named by an entry point of :data:`GROUP`."""
    label = f"entry point {ep.name} = {ep.value} (group {GROUP}"
    label += f", package {ep.dist.name} {ep.dist.version})" if ep.dist else ")"
    spec = None
    try:
        spec = importlib.util.find_spec(ep.module)
        module = ep.load()
    except Exception as e:
        where = f"{_at(e, spec.origin)}: " if spec and spec.origin else ""
        raise BadStepFile(f"{label}: {where}{_said(e)}") from None
    if not isinstance(module, types.ModuleType) or not getattr(module, "__file__", None):
        raise BadStepFile(f"{label}: names {ep.value!r}, not a module of steps")
    file = Path(module.__file__)
    source = file.read_bytes()
    package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ""
    origin = Origin(str(file), hashlib.sha256(source).hexdigest(), "", ep.module.partition(".")[0], ep.name, package)
    return module, origin, source


def _checked(module: types.ModuleType, origin: Origin, source: bytes, taken: dict[str, str]) -> list[Step]:
    """The module's steps, each with its origin (code hash, and whether it trains in a block); ``taken``: the names
    already declared, and where."""
    where = origin.file
    steps = module.__dict__.get("STEPS")
    if not steps:
        raise BadStepFile(f"step file {where} declares no step: declare one with cnn.zoo.declare(name, build, ...)")
    if not isinstance(steps, list) or not all(isinstance(s, Step) for s in steps):
        raise BadStepFile(f"step file {where}: STEPS must be a list of steps (cnn.zoo.declare appends to it)")
    tree = ast.parse(source)
    out = []
    for step in steps:
        if not NAME.fullmatch(step.name) or step.name == "all":
            raise BadStepFile(
                f"step file {where}: step name {step.name!r} is not a name for a folder: use letters, digits, '-', "
                "'_' and '.', and not 'all'"
            )
        if step.name in taken:
            clash = "is declared twice there" if taken[step.name] == where else f"is also {taken[step.name]}"
            raise BadStepFile(f"step file {where}: step {step.name!r} {clash}: rename it")
        taken[step.name] = f"declared in {where}"
        model, block = check_network(step, where)
        code = code_hash(tree, origin.file, module.__name__, step, model)
        out.append(dataclasses.replace(step, origin=dataclasses.replace(origin, code=code, block=block)))
    return out


def check_network(step: Step, where: str) -> tuple[nn.Module, str]:
    """The step's network, built; raise :class:`BadStepFile` unless it maps a batch of 1×28×28 images to (batch, 10)
    log-probabilities, run as the trainer runs it (channels_last). The second value says why it cannot train in a
    block of seeds, or is "": a block of two, built by :func:`cnn.block.stack`, computes what its seeds compute
    alone. The global random generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            nets = [step.model().to(memory_format=CHANNELS_LAST).eval() for _ in range(2)]  # two seeds' networks
        except Exception as e:
            raise BadStepFile(
                f"step file {_at(e, where)}: step {step.name!r}: its network fails to build: {_said(e)}"
            ) from None
        x = torch.rand(4, 2, 28, 28)  # (B, seeds, H, W): seed s's images are channel s
        try:
            with torch.no_grad():
                alone = [net(x[:, s : s + 1].contiguous(memory_format=CHANNELS_LAST)) for s, net in enumerate(nets)]
        except Exception as e:
            raise BadStepFile(
                f"step file {_at(e, where)}: step {step.name!r}: its network fails on a 1×28×28 input: {_said(e)}"
            ) from None
        out = alone[0]
        if tuple(out.shape) != (4, 10):
            raise BadStepFile(
                f"step file {where}: step {step.name!r}: its network maps a batch of 4 images of 1×28×28 to shape "
                f"{list(out.shape)}, not [4, 10]"
            )
        if not torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-3):
            raise BadStepFile(
                f"step file {where}: step {step.name!r}: its network returns scores, not log-probabilities: end its "
                "forward with F.log_softmax(x, dim=-1), since the trainer's loss is nll_loss"
            )
        return nets[0], _block(nets, x, torch.stack(alone, 1))  # stack() draws, to initialise what it replaces


def _block(nets: list[nn.Module], x: torch.Tensor, alone: torch.Tensor) -> str:
    """Why ``nets`` (two seeds' networks) do not train as one block network; "" where they do."""
    layer = unstackable(nets[0])
    if layer:
        return f"its {layer} cannot be split per seed"
    try:
        block = stack(nets).to(memory_format=CHANNELS_LAST).eval()
        with torch.no_grad():
            together = per_seed(block(x.contiguous(memory_format=CHANNELS_LAST)), len(nets))
    except Exception as e:
        return f"its network does not stack into a block: {_said(e)}"
    if together.shape != alone.shape or not torch.allclose(together, alone, atol=1e-4):
        return (
            "its forward mixes the seeds of a block network: end it with F.log_softmax(x.view(-1, 10), dim=-1), as "
            "the zoo's networks do, so that each seed's 10 scores stay its own"
        )
    return ""


# --- the code a network runs ------------------------------------------------------------------------------------------


def code_hash(tree: ast.Module, file: str, module: str, step: Step, model: nn.Module) -> str:
    """12 hex digits over the code the step's network runs, comments, docstrings and layout aside.

    In the step file (``tree``, run as ``module``): the definitions of its builder and of its layers' classes, and every
    top-level statement that binds a name they use, followed name by name; so another step, a comment or a claim can
    change without splitting the step's rows, and a helper or a constant its network uses cannot. Outside the file:
    the source of its layers' classes that are not torch's. Where the builder is not defined in the file, the whole
    file counts."""
    build = step.build.build if isinstance(step.build, zoo.OwnDropout) else step.build
    classes = {type(m) for m in model.modules()}
    own = {c.__qualname__.split(".")[0] for c in classes | {build} if isinstance(c, type) and c.__module__ == module}
    code = getattr(build, "__code__", None)
    first = code.co_firstlineno if code is not None and code.co_filename == file else None
    roots = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in own]
    roots += [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        and first in (n.lineno, *(d.lineno for d in getattr(n, "decorator_list", ())))
    ]
    if first is None and getattr(build, "__qualname__", "").split(".")[0] not in own:
        roots = list(tree.body)
    binders = [(stmt, _binds(stmt)) for stmt in tree.body]
    kept, todo, seen = {id(n): n for n in roots}, list(roots), set()
    while todo:
        for name in _uses(todo.pop()) - seen:
            seen.add(name)
            for stmt, names in binders:
                if name in names and id(stmt) not in kept:
                    kept[id(stmt)] = stmt
                    todo.append(stmt)
    parts = [_code(n) for n in sorted(kept.values(), key=lambda n: (n.lineno, n.col_offset))]
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        if cls.__module__ != module and cls.__module__.partition(".")[0] != "torch":
            try:
                parts.append(_code(ast.parse(textwrap.dedent(inspect.getsource(cls)))))
            except (OSError, TypeError, SyntaxError):  # no source to read: its name at least
                parts.append(f"{cls.__module__}.{cls.__qualname__}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _binds(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {a.asname or a.name.partition(".")[0] for a in stmt.names}
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
        n.name for n in ast.walk(stmt) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


def _uses(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _code(node: ast.AST) -> str:
    """The node's code without docstrings, as ``ast.unparse`` writes it (no comments, one layout)."""
    node = copy.deepcopy(node)
    for n in ast.walk(node):
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body:
            first = n.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                n.body = n.body[1:] or [ast.Pass()]
    return ast.unparse(node)


# --- one line per error ---------------------------------------------------------------------------------------------


def _at(e: BaseException, file: str) -> str:
    """``file:line`` of the innermost frame of ``e`` in ``file`` (a syntax error's own line), or ``file``."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == file]
    if isinstance(e, SyntaxError) and e.filename == file:
        lines.append(e.lineno)
    return f"{file}:{lines[-1]}" if lines else file


def _said(e: BaseException) -> str:
    """The error's type and the first line of its message; a BadInput's message alone (it is one line already)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, BadInput) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def _hint(e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError):
        return " (a step file imports installed packages only: nothing beside it travels with it)"
    return ""
