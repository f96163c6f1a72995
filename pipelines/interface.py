"""The pipeline's interface, made from the parameter declarations: its Python signature and the
docstring whose ``Args`` the KFP UI shows, each step's ``settings`` dict, and README's table.

KFP reads a pipeline function's parameters with ``inspect.signature`` and their descriptions
from its docstring; both are generated here, so that ``imgclf.components.parameters`` stays
the one place a parameter is declared.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from imgclf.components.parameters import Parameter, Settings, parameters

DESCRIPTION = (
    "Image classification: ingest, validate, TFT preprocess, Keras transfer learning, evaluate "
    "against the served model, push to TF Serving when blessed."
)


def pipeline_signature() -> inspect.Signature:
    """Every parameter with its type and default, serving_root (required) first."""
    return inspect.Signature(
        [
            inspect.Parameter(
                parameter.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if parameter.required else parameter.default,
                annotation=parameter.type,
            )
            for parameter in parameters()
        ]
    )


def pipeline_docstring() -> str:
    """The pipeline's docstring: a line on what it does, then each parameter's description."""
    arguments = "".join(f"    {p.name}: {p.description}\n" for p in parameters())
    return f"Trains, judges and publishes an image classifier.\n\nArgs:\n{arguments}"


def step_settings(values: dict[str, Any], *groups: type[Settings]) -> dict[str, Any]:
    """The ``settings`` dict of a step that takes ``groups``: each of their parameters from
    the pipeline's ``values``. KFP writes a dict's values into the step's input as text, which
    breaks a list's JSON, so list parameters travel as their own step parameters."""
    return {
        parameter.name: values[parameter.name]
        for parameter in parameters()
        if parameter.group in groups and parameter.type is not list
    }


def parameters_markdown() -> str:
    """Name, default, the steps that use it and meaning of every pipeline parameter."""
    rows = ["| parameter | default | used by | meaning |", "|---|---|---|---|"]
    for parameter in parameters():
        meaning = " ".join(parameter.description.split()).replace("|", "\\|")
        used_by = ", ".join(parameter.group.USED_BY)
        rows.append(f"| `{parameter.name}` | {_default(parameter)} | {used_by} | {meaning} |")
    return "\n".join(rows)


def _default(parameter: Parameter) -> str:
    if parameter.required:
        return "(required)"
    if isinstance(parameter.default, str):
        return f"`{parameter.default}`" if parameter.default else '`""`'
    return f"`{json.dumps(parameter.default)}`"
