"""AnyTalker for ComfyUI: the package ComfyUI imports. It only registers nodes.

ComfyUI imports this file as a package and awaits ``comfy_entrypoint()`` (V3 node API).
The model code lives in ``anytalker_core/`` (no ComfyUI imports); the node classes live in ``nodes/``.

Two rules keep this file safe to import anywhere:
- Nothing is imported at module level. ``comfy_api`` and ``.nodes`` are imported inside the
  entrypoint, so the package also imports outside ComfyUI. pytest imports this file on its own
  (as a bare module, without a parent package) when it collects ``tests/``.
- No ``NODE_CLASS_MAPPINGS`` here: ComfyUI's loader returns before looking at ``comfy_entrypoint``
  when a module defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfy_api.latest import ComfyExtension


async def comfy_entrypoint() -> ComfyExtension:
    """Called by ComfyUI (0.3.64 or newer) when it loads the pack."""
    from comfy_api.latest import ComfyExtension, io

    from .nodes import NODE_LIST, register_model_folder

    register_model_folder()

    class AnyTalkerExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return list(NODE_LIST)

    return AnyTalkerExtension()
