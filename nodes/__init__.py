"""ComfyUI nodes of the AnyTalker pack: thin adapters over ``anytalker_core``.

``NODE_LIST`` holds the node classes that the top-level ``comfy_entrypoint`` registers.
It is empty for now: the nodes land with the node-pack issue. Each node will be a V3
``io.ComfyNode`` subclass with a node id starting ``AnyTalker``.
"""

NODE_LIST: list[type] = []
