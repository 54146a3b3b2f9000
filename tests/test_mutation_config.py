"""``make mutation`` runs the tests in a copy of the project (mutmut's mutants/): the copy must
hold every package the tests import, or every mutant 'dies' of an ImportError and the kill rate
means nothing. A package added later must be added to ``[tool.mutmut] also_copy`` too."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_IMPORTED_BY_TESTS = {"tests", "docs", "var", "mutants"}


def _mutmut_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]


def test_every_top_level_package_and_module_is_copied_for_mutation_testing():
    config = _mutmut_config()
    copied = {entry.rstrip("/") for entry in config["also_copy"] + config["source_paths"]}
    packages = {
        path.name
        for path in ROOT.iterdir()
        if path.is_dir() and (path / "__init__.py").exists() and path.name not in NOT_IMPORTED_BY_TESTS
    }
    modules = {path.name for path in ROOT.glob("*.py")}
    assert packages | modules <= copied, sorted((packages | modules) - copied)


def test_only_the_sync_core_is_mutated_and_every_selected_test_file_exists():
    config = _mutmut_config()
    assert sorted(config["only_mutate"]) == [
        "catalog/mapping.py",
        "catalog/retry.py",
        "catalog/sweep.py",
        "catalog/sync.py",
        "catalog/throttle.py",
    ]
    selected = [arg for arg in config["pytest_add_cli_args_test_selection"] if arg.endswith(".py")]
    assert selected and all((ROOT / name).is_file() for name in selected)
    assert not any("integration" in name for name in selected)  # fast unit tests only
