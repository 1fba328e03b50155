"""``torch.compile`` of the DiT: the same prediction, and no graph break inside a block.

The compiler here is ``aot_eager`` (dynamo's tracing and autograd's graphs, no code generation), so the test
takes seconds; ``tests/tools/host_seams.py`` runs the host's TorchCompileModel (inductor) and counts the graph
breaks of the host's forward (``inproc``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch._dynamo as dynamo

from micro import micro_inputs, micro_model


@pytest.mark.parametrize("cached", [False, True])
def test_compiled_model_predicts_the_same_and_breaks_only_outside_the_blocks(cached):
    model = micro_model("af")
    inputs = micro_inputs(model.config, identities=2)
    x, t = inputs.pop("x"), inputs.pop("t")
    dynamo.reset()
    with torch.no_grad(), model.context_cache(1 << 30) if cached else contextlib.nullcontext():
        eager = model(x, t, **inputs)
        explained = dynamo.explain(model)(x, t, **inputs)
        compiled = torch.compile(model, backend="aot_eager")
        for _ in range(2):
            assert (compiled(x, t, **inputs) - eager).abs().max() <= 1e-4
    assert isinstance(model.blocks, torch.nn.ModuleList)
    # the only breaks: the face boxes (Python ints) or, with the cache, finding the conditioning's entry
    where = {frame.name for reason in explained.break_reasons for frame in reason.user_stack}
    assert explained.break_reasons and where <= {"forward", "_context_parts", "_identities", "mask_boxes", "entry",
                                                 "_same", "<genexpr>"}, where  # fmt: skip
