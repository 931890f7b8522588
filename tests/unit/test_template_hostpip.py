"""What a template build inherits from the host's pip set-up: which host paths are bound, where,
and what is dropped with a warning before the build starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcastle.runtime.templates.buildenv import BuildSandbox
from sandcastle.runtime.templates.hostpip import (
    HostRef,
    inspect_host_pip,
    parse_pip_config_list,
    plan,
)
from sandcastle.runtime.templates.recipes import Run


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host tree with a constraint file, a requirements file, wheels and a file:// index."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "constraints.txt").write_text("numpy<2\n")
    (tmp_path / "etc" / "reqs.txt").write_text("-c base.txt\n--requirement=more.txt  # both\n")
    (tmp_path / "etc" / "base.txt").write_text("pandas<3\n")
    (tmp_path / "etc" / "more.txt").write_text("-r gone.txt\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "index" / "simple" / "six").mkdir(parents=True)
    (tmp_path / "index" / "files").mkdir()
    return tmp_path


def test_files_and_directories_named_by_pip_settings_are_bound(host: Path) -> None:
    config = {
        "global": {
            "constraint": f"{host}/etc/constraints.txt",
            "find-links": f"{host}/wheels https://wheels.example/",
            "extra-index-url": f"file://{host}/index/simple https://pypi.example/simple",
            "timeout": "60",
        }
    }
    setup = plan(config, {"PIP_REQUIREMENT": f"{host}/etc/reqs.txt"})

    assert setup.host_paths == [
        f"{host}/etc/base.txt",
        f"{host}/etc/constraints.txt",
        f"{host}/etc/more.txt",
        f"{host}/etc/reqs.txt",
        # The index's parent: its pages link ../../files/.
        f"{host}/index",
        f"{host}/wheels",
    ]
    # The requirements file includes one that does not exist: said, not bound.
    assert setup.warnings == (f"{host}/etc/more.txt includes {host}/etc/gone.txt, which does not "
                              "exist on this host",)  # fmt: skip
    index = next(s for s in setup.settings if s.key == "extra-index-url")
    assert index.tokens == (HostRef(f"{host}/index", "/simple", url=True),
                            "https://pypi.example/simple")  # fmt: skip


def test_a_missing_path_is_dropped_from_its_setting_with_a_warning(host: Path) -> None:
    config = {
        "global": {
            "constraint": f"{host}/nope.txt",
            "find-links": f"{host}/wheels {host}/gone",
            "cert": "relative/ca.pem",
        },
        "install": {"log": f"{host}/pip.log"},
    }
    setup = plan(config, {"PIP_CLIENT_CERT": f"{host}/client.pem"})

    keys = {s.key: s.tokens for s in setup.settings}
    assert keys == {"find-links": (HostRef(f"{host}/wheels"),)}
    assert len(setup.warnings) == 5
    said = "\n".join(setup.warnings)
    for named in ("[global] constraint", "[global] find-links", "[global] cert",
                  "[install] log", "PIP_CLIENT_CERT"):  # fmt: skip
        assert named in said
    assert f"{host}/nope.txt is dropped: it does not exist on this host" in said
    assert "never writes there" in said


def test_render_rewrites_each_path_for_where_it_is_bound(host: Path) -> None:
    config = {"global": {"extra-index-url": f"file://{host}/index/simple"}}
    setup = plan(config, {"PIP_CONSTRAINT": f"{host}/etc/constraints.txt"})
    place = {f"{host}/index": "/tmp/.b/host/index", f"{host}/etc/constraints.txt": "/c.txt"}

    rendered_config, env = setup.render(place)

    assert rendered_config == {"global": {"extra-index-url": "file:///tmp/.b/host/index/simple"}}
    assert env == {"PIP_CONSTRAINT": "/c.txt"}


def test_pip_config_list_output_is_parsed_without_env_entries() -> None:
    text = (
        ":env:.find-links='/opt/wheels'\n"
        "global.constraint='/etc/pip/c.txt'\n"
        "install.extra-index-url='file:///a/simple file:///b/simple'\n"
        "garbage line\n"
    )
    assert parse_pip_config_list(text) == {
        "global": {"constraint": "/etc/pip/c.txt"},
        "install": {"extra-index-url": "file:///a/simple file:///b/simple"},
    }


async def test_the_hosts_effective_configuration_comes_from_pip_itself(host: Path) -> None:
    conf = host / "pip.conf"
    conf.write_text(f"[global]\nconstraint = {host}/etc/constraints.txt {host}/missing.txt\n")

    setup = await inspect_host_pip({"PIP_CONFIG_FILE": str(conf), "PIP_NO_INPUT": "1"})

    assert f"{host}/etc/constraints.txt" in setup.host_paths
    assert any(f"{host}/missing.txt is dropped" in w for w in setup.warnings)
    # The host's config file is not forwarded by name: the build gets its own.
    assert all(s.key != "PIP_CONFIG_FILE" for s in setup.settings)
    assert any(s.key == "PIP_NO_INPUT" for s in setup.settings)


def test_build_sandbox_binds_at_the_same_path_unless_the_template_has_one(
    host: Path, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    # The template has its own file where the host's constraint file is, so it moves aside.
    taken = rootfs / str(host / "etc" / "constraints.txt").lstrip("/")
    taken.parent.mkdir(parents=True)
    taken.write_text("the template's own\n")
    config = {"global": {"constraint": f"{host}/etc/constraints.txt"}}
    setup = plan(config, {"PIP_FIND_LINKS": f"{host}/wheels"})

    sandbox = BuildSandbox.prepare(rootfs, tmp_path, setup)

    moved = f"/tmp/.sandcastle-build/host{host}/etc/constraints.txt"
    assert sorted(sandbox.binds) == sorted(
        [(f"{host}/etc/constraints.txt", moved), (f"{host}/wheels", f"{host}/wheels")]
    )
    assert sandbox.pip_conf is not None
    assert f"constraint = {moved}" in sandbox.pip_conf.read_text()
    step = Run("pip", ("pip", "install", "x"))
    assert sandbox.env(step)["PIP_FIND_LINKS"] == f"{host}/wheels"
    argv = sandbox.argv(step)
    assert ["--ro-bind", f"{host}/etc/constraints.txt", moved] == argv[
        argv.index(f"{host}/etc/constraints.txt") - 1 : argv.index(moved) + 1
    ]

    # bwrap creates mount points in the rootfs; tidy removes them and nothing else.
    mount_point = rootfs / str(host / "wheels").lstrip("/")
    mount_point.mkdir(parents=True)
    sandbox.tidy()
    assert not mount_point.exists()
    assert taken.read_text() == "the template's own\n"
    assert not sandbox.pip_conf.exists()


def test_a_path_reached_through_a_link_in_the_rootfs_is_moved_aside(
    host: Path, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    top = str(host).lstrip("/").split("/")[0]
    # e.g. bookworm's /lib -> usr/lib: binding through it would land somewhere else.
    (rootfs / top).symlink_to("/elsewhere")

    sandbox = BuildSandbox.prepare(rootfs, tmp_path, plan({}, {"PIP_FIND_LINKS": f"{host}/wheels"}))

    assert sandbox.binds == [(f"{host}/wheels", f"/tmp/.sandcastle-build/host{host}/wheels")]
    assert sandbox.mount_points == []
