"""docs/architecture.md against the code: every folder and top-level module named, the router table true."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from helpers import make_settings

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "kodo"
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_every_package_and_top_level_module_is_named() -> None:
    """Each package under src/kodo/ and each module at its top level appears in the doc as `kodo.<name>`."""
    packages = {
        "kodo." + ".".join(path.parent.relative_to(SOURCE).parts)
        for path in SOURCE.rglob("__init__.py")
        if path.parent != SOURCE
    }
    modules = {f"kodo.{path.stem}" for path in SOURCE.glob("*.py") if path.stem != "__init__"}
    missing = sorted(name for name in packages | modules if f"`{name}`" not in DOC and f"`{name} " not in DOC)
    assert missing == []


def test_the_router_table_is_what_the_app_mounts(tmp_path: Path) -> None:
    """The Routers section lists each router the API and console mount, with its number of routes, and the sums."""
    from kodo.api.deps import ApiContext
    from kodo.main import create_app

    settings = make_settings("postgresql://nobody@127.0.0.1:1/none", tmp_path / "home")
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected: routes only
    app = create_app(ApiContext(settings=settings, engine=engine, client=None, role="api"))  # type: ignore[arg-type]
    mounted: Counter[str] = Counter()
    routers = [route.original_router for route in app.routes if hasattr(route, "original_router")]
    for router in routers:
        for route in router.routes:
            mounted[route.endpoint.__module__.removeprefix("kodo.")] += 1  # type: ignore[attr-defined]
    section = DOC.split("## Routers", 1)[1].split("\n## ", 1)[0]
    table = {name: int(count) for name, count in re.findall(r"^\| `((?:api|ui)\.\w+)` \| (\d+) \|", section, re.M)}
    assert table == dict(mounted)
    api_routers = sum(1 for name in table if name.startswith("api."))
    total = sum(table.values())
    assert f"mounts {api_routers} routers" in section and f"{total} routes in all" in section
    assert len(routers) == len(table)
