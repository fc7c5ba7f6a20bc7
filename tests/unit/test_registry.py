from __future__ import annotations

from pathlib import Path

import pytest

from caprl_kit.errors import CaprlError
from caprl_kit.registry import Registry, UnknownName


def test_lazy_entries_import_on_first_use() -> None:
    r = Registry("thing")
    r.register("dumps", target="json:dumps")
    assert r._entries["dumps"] == "json:dumps"
    assert r.get("dumps")({"a": 1}) == '{"a": 1}'
    assert callable(r._entries["dumps"])  # cached after import


def test_decorator_and_object_registration() -> None:
    r = Registry("reward")

    @r.register("double")
    def double(x: int) -> int:
        return 2 * x

    r.register("const", 3)
    assert r.get("double")(4) == 8
    assert r.get("const") == 3
    assert r.names() == ["const", "double"]


def test_unknown_name_suggests_and_lists() -> None:
    r = Registry("reward")
    r.register("qa_accuracy", 1)
    r.register("length", 2)
    with pytest.raises(UnknownName) as err:
        r.get("qa_acuracy")
    assert "did you mean 'qa_accuracy'?" in str(err.value)
    assert "Available: length, qa_accuracy" in str(err.value)


def test_file_entries_load_user_code(tmp_path: Path) -> None:
    code = tmp_path / "my_rewards.py"
    code.write_text("def my_reward(xs):\n    return [len(x) for x in xs]\n")
    r = Registry("reward")
    assert f"file:{code}:my_reward" in r
    assert r.get(f"file:{code}:my_reward")(["ab", "c"]) == [2, 1]
    with pytest.raises(CaprlError, match="defines no 'nope'"):
        r.get(f"file:{code}:nope")
    with pytest.raises(CaprlError, match="does not exist"):
        r.get(f"file:{tmp_path}/absent.py:x")
