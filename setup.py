"""ament_python package ``motus_ros``: installs the ``motus_ros`` nodes, the ROS-free ``motus_core``
library, and the share files (launch, config, urdf) so ``ros2 launch motus_ros ...`` finds them."""
import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "motus_ros"
HERE = Path(__file__).resolve().parent


def _table(name):
    # motus_ros/executables.py is pure data; read it without importing the package.
    scope = {}
    exec((HERE / "motus_ros" / "executables.py").read_text(), scope)
    return scope[name]


def _tree(src):
    """data_files entries for every file under ``src``, keeping the directory layout."""
    entries = {}
    for path in glob(f"{src}/**/*", recursive=True):
        if os.path.isfile(path) and "__pycache__" not in path:
            entries.setdefault(os.path.join("share", PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["motus_ros", "motus_ros.*", "motus_core", "motus_core.*"]),
    package_data={"motus_core": ["stats/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_tree("launch"),
        *_tree("config"),
        *_tree("urdf"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="motus-ros developers",
    maintainer_email="dev@motus-ros.invalid",
    description="Motus and MoLA robot foundation models on ROS 2 dual-arm robots.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in {**_table("EXECUTABLES"), **_table("TOOLS")}.items()],
    },
)
