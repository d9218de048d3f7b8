"""Every public name has a docstring and a place in the API reference."""

import inspect
import pathlib
import re

import pytest

import equisae as eqs

MODULES = {
    "equisae": eqs,
    "equisae.data": eqs.data,
    "equisae.metrics": eqs.metrics,
    "equisae.train": eqs.train,
    "equisae.plotting": eqs.plotting,
    "equisae.operators": eqs.operators,
}
API = pathlib.Path(__file__).parents[1] / "docs" / "api"


def _home(value) -> str:
    """The public module a name is documented under: its defining module without the private
    part (`equisae._grid` -> `equisae`, `equisae.data._generative` -> `equisae.data`)."""
    parts = getattr(value, "__module__", "").split(".")
    return ".".join(p for p in parts if not p.startswith("_"))


def _public(module):
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        home = _home(value)
        if home == module.__name__ or (module is eqs and home.startswith("equisae")):
            yield name, value


PUBLIC = sorted({(m, n) for m, module in MODULES.items() for n, _ in _public(module)})


def _documented_members(cls):
    """Methods and properties a user calls: defined in the class (or an equisae base)."""
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            yield name, member


@pytest.mark.parametrize("module,name", PUBLIC)
def test_every_public_name_has_a_docstring(module, name):
    value = getattr(MODULES[module], name)
    assert inspect.getdoc(value), f"{module}.{name} has no docstring"
    if inspect.isclass(value):
        for member_name, member in _documented_members(value):
            doc = inspect.getdoc(member.fget if isinstance(member, property) else member)
            if not doc:  # an override documented on the abstract base is fine
                doc = next(
                    (
                        inspect.getdoc(getattr(base, member_name))
                        for base in value.__mro__[1:]
                        if member_name in vars(base)
                    ),
                    None,
                )
            assert doc, f"{module}.{name}.{member_name} has no docstring"


def test_every_public_name_is_in_the_api_reference():
    documented = set()
    for page in API.glob("*.md"):
        documented |= set(re.findall(r"^::: (equisae[\w.]*)", page.read_text(), flags=re.M))
    missing = [
        f"{module}.{name}"
        for module, name in PUBLIC
        if f"{_home(getattr(MODULES[module], name))}.{name}" not in documented
    ]
    assert not missing, f"not in docs/api: {missing}"


@pytest.mark.parametrize(
    "path", sorted((pathlib.Path(__file__).parents[1] / "equisae").rglob("*.py")), ids=str
)
def test_the_sources_have_no_invalid_escapes(path):
    """Docstrings hold LaTeX: a single backslash is an escape (`\\b` in `\\bar` is a backspace,
    `\\|` a SyntaxWarning on Python 3.12), so the maths must be written `\\\\bar`."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")
