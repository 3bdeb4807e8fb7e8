"""The import rules of docs/architecture.md, checked on the source: the hub imports no protocol,
the shared codecs import no protocol, protocols do not import each other, and only the runtime
imports them all."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = {"rtmp": ("rtmp",), "http-flv": ("media.flv",), "hls": ("media.hls",), "webrtc": ("sfu",)}
THIRD_PARTY_MEDIA = ("aiortc", "aioice", "av", "django", "live", "channels")


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module or "")
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_hub_imports_no_protocol_and_no_framework():
    for path in modules("media/hub"):
        for name in imports(path):
            assert not under(name, sum(PROTOCOLS.values(), ()) + THIRD_PARTY_MEDIA + ("media.codecs",)), \
                f"{path.relative_to(ROOT)} imports {name}"


def test_shared_codecs_import_no_protocol():
    for path in modules("media/codecs"):
        for name in imports(path):
            assert not under(name, sum(PROTOCOLS.values(), ()) + THIRD_PARTY_MEDIA), \
                f"{path.relative_to(ROOT)} imports {name}"


def test_bridges_import_no_protocol():
    """Renditions are hub streams: every protocol's reader joins them like any stream."""
    for path in modules("media/bridges"):
        for name in imports(path):
            assert not under(name, sum(PROTOCOLS.values(), ())), f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_protocol_imports_the_hub_not_another_protocol(protocol):
    own = PROTOCOLS[protocol]
    others = tuple(p for name, prefixes in PROTOCOLS.items() if name != protocol for p in prefixes)
    paths = [p for prefix in own for p in modules(prefix.replace(".", "/"))]
    assert paths
    used = set()
    for path in paths:
        for name in imports(path):
            assert not under(name, others), f"{path.relative_to(ROOT)} imports {name}"
            used.add(name)
    assert any(under(name, ("media.hub",)) for name in used), f"{protocol} never meets the hub"
    edges = {p.stem for p in paths}
    assert "from_hub" in edges, f"{protocol} has no from_hub edge"


def test_only_the_runtime_imports_every_protocol():
    importers = []
    for folder in ("media", "rtmp", "sfu", "live", "microvibe"):
        for path in modules(folder):
            names = imports(path)
            if all(any(under(n, prefixes) for n in names) for prefixes in (("rtmp",), ("sfu",))):
                importers.append(str(path.relative_to(ROOT)))
    assert set(importers) <= {"media/runtime.py"}, importers
