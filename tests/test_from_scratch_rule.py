"""The handout's rule, enforced on the reference-path sources: no torch.nn.functional, no torch.nn layers,
no torch.optim except the Optimizer base class. Allowed from torch.nn: Parameter, the containers, and
init.trunc_normal_. PyTorch's ready-made versions of the ops we build (torch.softmax, Tensor.softmax, ...)
are refused as well, since using them would defeat the exercise.

The fast path (scratchlm/nn/sdpa.py and later fused kernels) is exempt by design and not listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scratchlm"
REFERENCE_PATH = [
    "nn/functional.py",
    "nn/layers.py",
    "nn/ffn.py",
    "nn/positions.py",
    "nn/attention.py",
    "model.py",
    "optim.py",
]
ALLOWED_NN = {"Module", "ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict", "Parameter"}
ALLOWED_NN_INIT = {"trunc_normal_"}
ALLOWED_OPTIM = {"Optimizer"}
BUILTIN_OPS = {
    "softmax", "log_softmax", "layer_norm", "rms_norm", "embedding", "dropout", "silu", "sigmoid_",
    "cross_entropy", "nll_loss", "scaled_dot_product_attention", "batch_norm", "group_norm", "linear",
}  # fmt: skip
FORBIDDEN_METHODS = {"softmax", "log_softmax"}


def violations(source: str) -> list[str]:
    """Every forbidden use in `source`, as 'line N: dotted.name'."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                found += [f"line {node.lineno}: import {a.name}"] * _forbidden(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                found += [f"line {node.lineno}: from {node.module} import {a.name}"] * _forbidden(full)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node, aliases)
            if dotted and _forbidden(dotted):
                found.append(f"line {node.lineno}: {dotted}")
            if isinstance(node.ctx, ast.Load) and node.attr in FORBIDDEN_METHODS and not dotted:
                found.append(f"line {node.lineno}: .{node.attr}()")
    return sorted(set(found))


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _forbidden(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[:3] == ["torch", "nn", "functional"]:
        return True
    if parts[:2] == ["torch", "nn"] and len(parts) > 2:
        if parts[2] == "init":
            return len(parts) > 3 and parts[3] not in ALLOWED_NN_INIT
        return parts[2] not in ALLOWED_NN
    if parts[:2] == ["torch", "optim"] and len(parts) > 2:
        return parts[2] not in ALLOWED_OPTIM
    return len(parts) == 2 and parts[0] == "torch" and parts[1] in BUILTIN_OPS


@pytest.mark.parametrize("relative", REFERENCE_PATH)
def test_reference_path_file_is_from_scratch(relative: str) -> None:
    assert violations((SRC / relative).read_text()) == []


def test_the_checker_catches_each_kind_of_violation() -> None:
    bad = """
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.nn import Linear
x = F.relu(y)
layer = nn.Linear(3, 4)
norm = torch.nn.LayerNorm(4)
opt = torch.optim.Adam([])
opt2 = optim.SGD([])
p = torch.softmax(z, -1)
q = z.softmax(-1)
nn.init.xavier_uniform_(w)
"""
    found = "\n".join(violations(bad))
    expected = [
        "import torch.nn.functional", "torch.nn.functional.relu", "torch.nn.Linear", "torch.nn.LayerNorm",
        "torch.optim.Adam", "torch.optim.SGD", "torch.softmax", ".softmax()", "xavier_uniform_",
    ]  # fmt: skip
    for needle in expected:
        assert needle in found, needle
    ok = """
import torch
from torch import nn
class M(nn.Module):
    def __init__(self):
        self.w = nn.Parameter(torch.empty(3))
        self.blocks = nn.ModuleList([])
        nn.init.trunc_normal_(self.w)
class O(torch.optim.Optimizer):
    pass
"""
    assert violations(ok) == []
