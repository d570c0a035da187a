"""The pytorch role's NVIDIA driver decision (filter_plugins/pytorch_driver.py), case by case.

GPU hosts on the Deep Learning AMI come with a driver: the role must keep it (auto), never put a second
one over it (always is refused before any change), and install its own only where none is loaded. The
container case is also run for real by the pytorch-cuda scenario.
"""

from __future__ import annotations

import pytest
from conftest import load_plugin

driver = load_plugin("pytorch", "filter_plugins", "pytorch_driver")

UBUNTU = ["nvidia-driver-570-server", "nvidia-utils-570-server"]


def plan(
    variant: str = "cuda", install: str = "auto", *, container: bool = False, present: str = "", ours: bool = False
):
    return driver.driver_plan(variant, install, container, present, ours, UBUNTU, "docker" if container else "")


@pytest.mark.parametrize("install", ["auto", "always", "never"])
def test_cpu_hosts_never_get_a_driver(install: str) -> None:
    assert plan("cpu", install) == {"managed": False, "reason": "not needed: cpu variant", "packages": [], "error": ""}


@pytest.mark.parametrize("install", ["auto", "always", "never"])
def test_containers_never_get_a_driver(install: str) -> None:
    result = plan(install=install, container=True, present="570.1")
    assert (result["managed"], result["error"]) == (False, "")
    assert result["reason"].startswith("skipped: running in a container (docker)")


def test_auto_keeps_the_amis_driver() -> None:
    result = plan(present="570.172.08")
    assert (result["managed"], result["packages"], result["error"]) == (False, [], "")
    assert "the image's driver 570.172.08" in result["reason"]


def test_auto_installs_where_no_driver_is_loaded() -> None:
    result = plan()
    assert (result["managed"], result["packages"], result["error"]) == (True, UBUNTU, "")


@pytest.mark.parametrize("install", ["auto", "always"])
def test_a_driver_the_role_installed_is_kept_up_to_date(install: str) -> None:
    result = plan(install=install, present="570.172.08", ours=True)
    assert (result["managed"], result["packages"], result["error"]) == (True, UBUNTU, "")


def test_always_is_refused_over_a_foreign_driver() -> None:
    result = plan(install="always", present="550.54.15")
    assert result["managed"] is False
    assert "driver 550.54.15 is loaded" in result["error"]
    assert "pytorch_nvidia_driver_install: auto" in result["error"]


def test_always_installs_where_none_is_loaded() -> None:
    assert plan(install="always")["managed"] is True


def test_never_leaves_a_gpu_host_alone() -> None:
    for present in ("", "570.1"):
        result = plan(install="never", present=present)
        assert (result["managed"], result["error"]) == (False, "")


def test_an_unknown_setting_is_refused_naming_it() -> None:
    result = plan(install="true")
    assert "pytorch_nvidia_driver_install must be auto, always or never, got 'true'" in result["error"]


def test_the_loaded_version_is_read_from_proc() -> None:
    proc = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 18:11:57 UTC 2025\n"
        "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n"
    )
    assert driver.loaded_version(proc) == "570.172.08"
    assert driver.loaded_version("") == ""
    assert driver.loaded_version("no module here") == ""
    assert "the image's driver 570.172.08" in plan(present=proc)["reason"]
    assert plan(present="")["managed"] is True
