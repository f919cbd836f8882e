"""``serving.model_roots``: which base paths a client may name, escapes included."""
from __future__ import annotations

import os

import pytest

from serving.errors import PermissionDenied
from serving.model_roots import ModelRoots, default_roots
from serving.settings import ModelConfig, Settings


@pytest.fixture
def tree(tmp_path):
    """tmp/models/{a,b}, tmp/models-evil/x, tmp/outside/evil, and tmp/models/link -> outside."""
    for folder in ("models/a", "models/b", "models-evil/x", "outside/evil"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "models" / "link").symlink_to(tmp_path / "outside" / "evil")
    (tmp_path / "models" / "up").symlink_to(tmp_path / "outside")
    return tmp_path


def test_local_paths_inside_a_root(tree):
    roots = ModelRoots([str(tree / "models")])
    for inside in ("models", "models/", "models/a", "models/a/", "models//a", "models/./a",
                   "models/a/../b", "models/not-there-yet"):
        assert roots.contains(f"{tree}/{inside}"), inside


@pytest.mark.parametrize("escape", [
    "outside/evil",                  # plainly elsewhere
    "models/../outside/evil",        # '..' out
    "models/a/../../outside/evil",   # '..' out from deeper
    "models/../outside/evil/",       # '..' out, trailing slash
    "models/link",                   # a symlink inside the root that points out
    "models/link/",
    "models/up/evil",                # through a symlinked folder
    "models/link/../evil",           # '..' after a symlink: resolved from the link's target
    "models-evil/x",                 # a sibling whose name starts with the root's
    "models-evil",
    "",                              # the parent of everything
])
def test_local_escapes_are_refused(tree, escape):
    assert not ModelRoots([str(tree / "models")]).contains(f"{tree}/{escape}")


def test_refused_paths_never_reach_the_file_system(tree, monkeypatch):
    asked: list[str] = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path, **kw: asked.append(path) or real(path, **kw))
    roots = ModelRoots([str(tree / "models")])
    assert not roots.contains("/etc/passwd") and not roots.contains(f"{tree}/models/../outside")
    assert asked == []


def test_nul_bytes_and_relative_tricks(tree, monkeypatch):
    roots = ModelRoots([str(tree / "models")])
    assert not roots.contains(f"{tree}/models/a\0")
    monkeypatch.chdir(tree / "models")
    assert roots.contains("a") and not roots.contains("../outside/evil")


def test_a_symlinked_root_accepts_paths_through_it(tree):
    (tree / "current").symlink_to(tree / "models")
    roots = ModelRoots([str(tree / "current")])
    assert roots.contains(f"{tree}/current/a")
    assert not roots.contains(f"{tree}/current/link")


@pytest.mark.parametrize(("path", "inside"), [
    ("gs://bucket/models", True),
    ("gs://bucket/models/", True),
    ("gs://bucket/models/natality", True),
    ("gs://bucket/models//natality/", True),
    ("GS://bucket/models/natality", True),          # the scheme is case-insensitive
    ("gs://bucket/models/../secret", False),        # '..' is refused outright
    ("gs://bucket/models/./natality", False),
    ("gs://bucket/models-evil/natality", False),    # prefix as a string, not as segments
    ("gs://bucket/modelsx", False),
    ("gs://bucket/", False),
    ("gs://bucket", False),
    ("gs://other/models/natality", False),
    ("gs://bucket-other/models/natality", False),
    ("s3://bucket/models/natality", False),         # another scheme
    ("/bucket/models/natality", False),             # a local path is never inside a URL root
    ("gs:///models/natality", False),               # no bucket
])
def test_object_store_roots_compare_bucket_and_prefix(path, inside):
    assert ModelRoots(["gs://bucket/models/"]).contains(path) is inside


def test_a_url_is_never_inside_a_local_root(tree):
    assert not ModelRoots([str(tree)]).contains(f"file://{tree}/models")


def test_default_roots_are_the_folders_holding_the_models(tree):
    assert default_roots([str(tree / "models" / "a"), f"{tree}/models/b/"]) == (str(tree / "models"),)
    assert default_roots(["gs://b/models/natality", "gs://b/natality"]) == (
        "gs://b/models", "gs://b/natality")  # never a whole bucket


def test_default_roots_are_the_base_path_itself_under_slash_or_a_folder_anyone_can_write(tree):
    writable = tree / "writable"
    (writable / "m").mkdir(parents=True)
    writable.chmod(0o1777)  # like /tmp
    assert default_roots([str(writable / "m"), "/natality"]) == (str(writable / "m"), "/natality")


def test_explicit_roots_win_and_split_on_commas(tree):
    models = (ModelConfig(name="a", base_path=str(tree / "models" / "a")),)
    explicit = Settings(models=models, model_roots=f" {tree}/outside , gs://b/m ")
    assert explicit.model_roots == (f"{tree}/outside", "gs://b/m")
    roots = ModelRoots.from_settings(explicit)
    assert roots.contains(f"{tree}/outside/evil") and not roots.contains(f"{tree}/models/b")
    default = ModelRoots.from_settings(Settings(models=models))
    assert default.contains(f"{tree}/models/b") and not default.contains(f"{tree}/outside/evil")


def test_check_names_the_model_and_refuses(tree):
    roots = ModelRoots([str(tree / "models")])
    configs = [ModelConfig(name="a", base_path=str(tree / "models" / "a")),
               ModelConfig(name="evil", base_path=str(tree / "models" / "link"))]
    with pytest.raises(PermissionDenied, match="model 'evil': base_path .*link' is outside the model roots"):
        roots.check(configs, "ReloadConfigRequest")
    roots.check(configs[:1], "ReloadConfigRequest")


def test_malformed_url_roots_are_refused():
    with pytest.raises(ValueError, match="'..'"):
        ModelRoots(["gs://b/models/.."])
    with pytest.raises(ValueError, match="SCHEME://BUCKET"):
        ModelRoots(["gs://"])
