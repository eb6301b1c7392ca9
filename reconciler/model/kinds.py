"""Kind name -> spec model, a view over the registry (`reconciler.model.registry`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydantic import BaseModel

from reconciler.model.registry import kind, kinds


class _KindSpecs(Mapping[str, type[BaseModel]]):
    """Every declared kind's spec model; kinds registered later show up too."""

    def __getitem__(self, name: str) -> type[BaseModel]:
        declared = kind(name)
        if declared is None:
            raise KeyError(name)
        return declared.spec

    def __iter__(self) -> Iterator[str]:
        return iter(kinds())

    def __len__(self) -> int:
        return len(kinds())


KIND_SPECS: Mapping[str, type[BaseModel]] = _KindSpecs()


def spec_model(name: str) -> type[BaseModel] | None:
    declared = kind(name)
    return declared.spec if declared is not None else None
