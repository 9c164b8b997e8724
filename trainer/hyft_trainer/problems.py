"""pydantic's validation errors worded the way the API server words its own: 'spec.env[0].name: message'.
One wording for the CRD's models, the trainer config and the Kubernetes objects a spec carries."""
from __future__ import annotations

import re

from pydantic import ValidationError

_FIELD = re.compile(r"^([A-Za-z][\w.\[\]]*): (.*)$", re.S)


def _path_suffix(loc: tuple[str | int, ...]) -> str:
    """('spec', 'env', 0, 'name') -> '.spec.env[0].name', to append to a path."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def describe(err: ValidationError, at: str = "", whole: str = "spec") -> list[str]:
    """One 'path: message' line per problem, paths under `at`; a problem of the whole object is named
    `whole`. A validator's message 'a.b: why; c: why' (one check naming several fields) is split."""
    out = []
    for error in err.errors():
        loc = at + _path_suffix(error["loc"])
        text = error["msg"].removeprefix("Value error, ")
        for part in text.split("; ") if error["type"] == "value_error" else [text]:
            match = _FIELD.match(part)
            path, message = (f"{loc}.{match[1]}", match[2]) if match else (loc, part)
            out.append(f"{path.lstrip('.') or whole}: {message}")
    return out
