"""Configuration files validated by their pydantic model, with an error that names the file and every bad field."""

from pydantic import BaseModel, ValidationError


def validated(model: type[BaseModel], raw, origin: str):
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(str(p) for p in e['loc']) or '(top)'}': {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{origin}: {problems}") from None
