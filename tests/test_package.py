"""Packaging rules: the core stays host-free, torch stays the host's, and the pack registers the V3 way."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE = REPO_ROOT / "anytalker_core"

# Top-level modules that belong to the ComfyUI host. Anything starting with "comfy" counts too
# (comfy, comfy_api, comfy_extras, comfy_execution, comfy_config, ...).
HOST_MODULES = ("folder_paths", "server", "nodes", "execution", "node_helpers", "latent_preview")
HOST_OWNED_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}


def _is_host_module(name: str) -> bool:
    root = name.split(".")[0]
    return root.startswith("comfy") or root in HOST_MODULES


def _requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a requirements file, without comments, blanks or pip options (-r, --index-url, ...)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def _project_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, f"cannot read a package name from requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_core_imports_without_comfyui():
    """Import anytalker_core and all its submodules while every host module is made unimportable."""
    assert CORE.is_dir(), f"{CORE} does not exist"
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        HOST_MODULES = {HOST_MODULES!r}

        class BlockHost:
            def find_spec(self, name, path=None, target=None):
                root = name.split(".")[0]
                if root.startswith("comfy") or root in HOST_MODULES:
                    raise ImportError(f"anytalker_core must not import the ComfyUI host module {{name!r}}")
                return None

        sys.meta_path.insert(0, BlockHost())
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import anytalker_core
        for info in pkgutil.walk_packages(anytalker_core.__path__, "anytalker_core."):
            if not info.name.endswith("__main__"):  # importing __main__ would run the CLI
                importlib.import_module(info.name)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, f"importing anytalker_core without ComfyUI failed:\n{result.stderr}"


def test_core_source_never_imports_comfyui():
    """Catch host imports anywhere in the core, including ones inside functions that an import test never runs."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {n}" for n in names if _is_host_module(n)
            ]
    assert not offenders, "anytalker_core must stay host-free:\n" + "\n".join(offenders)


def test_requirements_never_name_torch():
    names = {_project_name(req) for req in _requirement_lines(REPO_ROOT / "requirements.txt")}
    clash = names & HOST_OWNED_REQUIREMENTS
    assert not clash, f"requirements.txt names {sorted(clash)}; the ComfyUI host owns torch, remove them"


def _load_pack(name: str) -> types.ModuleType:
    """Import the repo root the way ComfyUI does: as a package under a name of the host's choosing."""
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pack():
    name = "ComfyUI_AnyTalker"  # ComfyUI derives the name from the pack's path; any name must work
    yield _load_pack(name)
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def test_pack_imports_outside_comfyui(pack):
    assert inspect.iscoroutinefunction(pack.comfy_entrypoint)
    assert "comfy_api" not in sys.modules, "importing the pack must not import comfy_api"
    # ComfyUI's loader ignores comfy_entrypoint when NODE_CLASS_MAPPINGS exists.
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")


def test_entrypoint_registers_node_list(pack, monkeypatch, tmp_path):
    """Run comfy_entrypoint against stand-ins for comfy_api.latest and folder_paths; it returns the nodes/ registry."""
    import hoststub

    hoststub.install(monkeypatch, tmp_path)
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, sys.modules["comfy_api.latest"].ComfyExtension)
    node_list = asyncio.run(extension.get_node_list())
    assert node_list == list(sys.modules["ComfyUI_AnyTalker.nodes"].NODE_LIST) and node_list


def test_pyproject_metadata():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    comfy = pyproject["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert comfy.get(key), f"pyproject.toml [tool.comfy] {key} is empty"
    assert comfy.get("requires-comfyui") == ">=0.3.64"
    dependencies = pyproject["project"]["dependencies"]
    requirements = _requirement_lines(REPO_ROOT / "requirements.txt")
    assert sorted(dependencies) == sorted(requirements), (
        f"pyproject.toml dependencies {dependencies} differ from requirements.txt {requirements}"
    )


def test_the_registry_icon_is_a_file_in_the_repository():
    icon = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    repository = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), icon
    path = REPO_ROOT / icon.removeprefix(prefix)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
