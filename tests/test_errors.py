import pytest

from rsia_geo import errors


def test_every_error_derives_from_root():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.RsiaError), name


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.InvalidBBoxError, ValueError),
        (errors.RasterError, OSError),
        (errors.TileReadError, OSError),
        (errors.CheckpointNotFoundError, FileNotFoundError),
        (errors.AssetSelectionError, KeyError),
        (errors.DependencyNotFoundError, ImportError),
        (errors.InvalidAudioError, ValueError),
    ],
)
def test_errors_mix_in_builtins(cls, builtin):
    assert issubclass(cls, builtin)


def test_asset_selection_error_message_is_not_quoted():
    assert str(errors.AssetSelectionError("no band 'nir'")) == "no band 'nir'"


def test_lazy_import_names_the_extra():
    from rsia_geo._lazy import lazy_import

    with pytest.raises(errors.DependencyNotFoundError, match=r"pip install"):
        lazy_import("definitely_not_a_module_xyz")


def test_errors_module_imports_no_third_party():
    import subprocess
    import sys

    path = errors.__file__
    code = (
        "import sys, importlib.util as u; "
        f"s=u.spec_from_file_location('e', {path!r}); u.module_from_spec(s); "
        "s.loader.exec_module(u.module_from_spec(s)); "
        "bad=[m for m in ('numpy','rasterio','torch','qdrant_client') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_package_import_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import rsia_geo; "
        "bad=[m for m in ('torch','qdrant_client','geopandas','rasterio') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
