"""Where the package's config/ and launch/ live: the source tree when running from one (pip
editable install), else the ament share directory (colcon build), else ``<prefix>/share``."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "mbrl_control"


def share_dir() -> Path:
    source_tree = Path(__file__).resolve().parents[1]
    if (source_tree / "config").is_dir() and (source_tree / "package.xml").is_file():
        return source_tree
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # no ament index, or this package not in it
        return Path(sys.prefix) / "share" / PACKAGE


def config_dir() -> Path:
    return share_dir() / "config"


def resolve_config_path(path: str) -> Path:
    """An absolute path as is; a relative one against the package's config directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else config_dir() / p


# The robot config a launch uses when none is named (a config/<robot>.yaml).
DEFAULT_ROBOT = "cartpole"


def urdf_beside(parameter_file: str | Path, urdf: str) -> str:
    """A robot parameter file's ``urdf``, made absolute when it is relative and the file is found
    beside that parameter file (a user's ``robot:=/path/arm.yaml`` with ``urdf: arm.urdf``);
    otherwise as given (absolute, ``pybullet_data:``, or relative to config/)."""
    folder = Path(parameter_file).expanduser().resolve().parent
    relative = bool(urdf) and not urdf.startswith("pybullet_data:") and not Path(urdf).expanduser().is_absolute()
    if not relative or folder == config_dir().resolve():
        return urdf
    beside = folder / urdf
    return str(beside) if beside.is_file() else urdf


def resolve_urdf(path: str) -> Path:
    """A URDF path as robot configs give it: absolute, relative to config/ (see ``urdf_beside``
    for one beside a parameter file elsewhere), or ``pybullet_data:<path>`` (a file shipped with
    pybullet, e.g. ``kuka_iiwa/model.urdf``)."""
    if path.startswith("pybullet_data:"):
        import pybullet_data

        return Path(pybullet_data.getDataPath()) / path.split(":", 1)[1]
    return resolve_config_path(path)
