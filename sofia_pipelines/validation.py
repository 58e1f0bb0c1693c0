"""Configuration files validated by their pydantic model, with an error that names the file and every bad field:
"<file>: field '<path>': <what is wrong> (got <value>)"."""

from pydantic import BaseModel, ValidationError

MAX_SHOWN = 80  # characters of a bad value quoted in the error


def field_path(loc: tuple) -> str:
    """A pydantic location as a path: ('trading', 0, 'tiers', 1, 'maker') -> trading[0].tiers[1].maker."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _problem(error: dict) -> str:
    msg = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    got = ""
    if "input" in error and not isinstance(value, dict | list):  # a missing field's input is its parent
        shown = repr(value)
        got = f" (got {shown[:MAX_SHOWN] + '…' if len(shown) > MAX_SHOWN else shown})"
    where = field_path(error["loc"])
    return f"field '{where}': {msg}{got}" if where else f"{msg}{got}"


def validated(model: type[BaseModel], raw, origin: str):
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        raise ValueError(f"{origin}: " + "; ".join(_problem(e) for e in exc.errors())) from None
