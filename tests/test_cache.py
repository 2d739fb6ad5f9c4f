"""The persistent compilation cache of the command line (jloss.cache): on by default, in
$JLOSS_CACHE_DIR; off with --no-cache or JLOSS_NO_CACHE=1; never turned on by ``import jloss``."""

import os
import subprocess
import sys

import pytest

from jloss import cache, demo


@pytest.fixture(scope="module")
def videos_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache-csv") / "videos.csv"
    demo.make_videos(seed=0).to_csv(str(path))
    return path


def jloss(*argv, env):
    full = {k: v for k, v in os.environ.items() if k not in ("JLOSS_NO_CACHE", "JLOSS_CACHE_DIR")} | env
    proc = subprocess.run([sys.executable, "-m", "jloss", *argv], capture_output=True, text=True, env=full,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


FIT = ("fit", "--csv", None, "--target", "views_k", "--loss", "mse", "--steps", "50", "--no-progress")


def fit_argv(csv, *extra):
    return tuple(str(csv) if a is None else a for a in FIT) + extra


def entries(path):
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_fit_twice_fills_and_then_reads_the_cache(tmp_path, videos_csv):
    d = tmp_path / "xla"
    first = jloss(*fit_argv(videos_csv), env={"JLOSS_CACHE_DIR": str(d)})
    written = entries(d)
    assert written, "the first run wrote no cache entry"
    second = jloss(*fit_argv(videos_csv), env={"JLOSS_CACHE_DIR": str(d)})
    assert second.stdout == first.stdout
    assert entries(d) == written  # the second run compiled nothing new


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_off_switches_leave_the_directory_empty(tmp_path, videos_csv, how):
    d = tmp_path / "xla"
    if how == "flag":
        jloss("--no-cache", *fit_argv(videos_csv), env={"JLOSS_CACHE_DIR": str(d)})
    else:
        jloss(*fit_argv(videos_csv), env={"JLOSS_CACHE_DIR": str(d), "JLOSS_NO_CACHE": "1"})
    assert entries(d) == []


def test_import_jloss_changes_no_jax_setting():
    code = ("import jax, jloss, jloss.cli, jloss.bench; "
            "assert jax.config.jax_compilation_cache_dir is None, jax.config.jax_compilation_cache_dir; "
            "assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0")
    env = {k: v for k, v in os.environ.items() if k not in ("JLOSS_NO_CACHE",)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_cache_dir_precedence(tmp_path):
    assert cache.cache_dir({"JLOSS_CACHE_DIR": "/a/b", "XDG_CACHE_HOME": "/x"}) == cache.Path("/a/b")
    assert cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == cache.Path("/x/jloss/xla")
    assert cache.cache_dir({}).parts[-3:] == (".cache", "jloss", "xla")
    assert cache.disabled_by_env({"JLOSS_NO_CACHE": "1"})
    assert not cache.disabled_by_env({"JLOSS_NO_CACHE": "0"})
    assert not cache.disabled_by_env({})
