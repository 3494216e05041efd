"""``sifm methods`` / editors listing."""
from __future__ import annotations

from ..attacks import METHODS, get_method
from ..editors import EDITORS, get_editor_class


def add_parser(sub, help: str):
    return sub.add_parser("methods", help=help,
                          description="List the immunization methods (with their PGD defaults) and the editors.")


def run(args) -> int:
    print("methods:")
    for name in METHODS:
        cls = get_method(name)
        print(f"  {name:22s} {cls.summary}  defaults={cls.pgd_defaults}")
    print("editors:")
    for name in EDITORS:
        cls = get_editor_class(name)
        print(f"  {name:22s} {cls.pipeline_class}")
    return 0
