"""Whether the pytorch role installs the NVIDIA driver on a host, and why: one pure decision, unit-tested.

pytorch_driver_plan(variant, install, in_container, present, ours, packages, container_type) gives
{"managed": bool, "reason": str, "packages": [...], "error": str}:
  variant         "cpu" or "cuda" (pytorch_variant)
  install         "auto", "always" or "never" (pytorch_nvidia_driver_install)
  in_container    the host is a container: no kernel modules, the host's driver serves
  present         /proc/driver/nvidia/version as read ("NVRM version: NVIDIA UNIX x86_64 Kernel Module
                  570.172.08 ..."), or just the version; "" when no NVIDIA module is loaded
  ours            the role's driver package is installed (dpkg), so a present driver is the role's own
  packages        the role's driver packages for this OS (vars/<distribution>.yml)
A non-empty "error" stops the run before anything changes: "always" over a driver the role did not
install (the Deep Learning AMI's) would put a second driver beside it.
"""

from __future__ import annotations

import re
from typing import Any

# The loaded module's version in /proc/driver/nvidia/version ("... Kernel Module  570.172.08  Release ...").
_MODULE_VERSION = re.compile(r"Kernel Module\s+([0-9][0-9.]*)|^\s*([0-9]+\.[0-9][0-9.]*)\s*$")


def loaded_version(present: str) -> str:
    """The driver version in /proc/driver/nvidia/version's text (or a bare version); "" for none."""
    match = _MODULE_VERSION.search(present or "")
    return (match.group(1) or match.group(2)) if match else ""


def driver_plan(
    variant: str,
    install: str,
    in_container: bool,
    present: str,
    ours: bool,
    packages: list[str],
    container_type: str = "",
) -> dict[str, Any]:
    def plan(managed: bool, reason: str, error: str = "") -> dict[str, Any]:
        return {"managed": managed, "reason": reason, "packages": list(packages) if managed else [], "error": error}

    present = loaded_version(present)
    if install not in ("auto", "always", "never"):
        return plan(False, "refused", f"pytorch_nvidia_driver_install must be auto, always or never, got {install!r}")
    if variant != "cuda":
        return plan(False, "not needed: cpu variant")
    if in_container:
        return plan(
            False, f"skipped: running in a container ({container_type or 'unknown'}); the host provides the driver"
        )
    if install == "never":
        return plan(False, "skipped: pytorch_nvidia_driver_install is never")
    if present and ours:
        return plan(True, f"kept: the role's driver {present} is loaded ({', '.join(packages)})")
    if present and install == "auto":
        return plan(False, f"kept: the image's driver {present} is loaded; auto installs no second driver over it")
    if present:
        return plan(
            False,
            "refused",
            f"pytorch_nvidia_driver_install is always, but driver {present} is loaded and was not installed from "
            f"{', '.join(packages)} (the image's own, e.g. the Deep Learning AMI's): installing a second driver over "
            "it breaks both. Set pytorch_nvidia_driver_install: auto to keep the image's driver.",
        )
    return plan(True, f"installed by this role ({install}): no NVIDIA driver was loaded")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pytorch_driver_plan": driver_plan}
