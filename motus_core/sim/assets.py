"""Where the simulated robot's assets come from, and the mesh utilities the model builder needs.

The ViperX 300 bimanual scene ships inside the ``gym-aloha`` wheel (Apache-2.0; the arm meshes are
Interbotix', BSD-3). Only its files are used: the package is found with ``importlib`` and never
imported, so neither gym nor dm_control is needed.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np


class SimAssetsError(RuntimeError):
    """The gym-aloha assets are missing or unreadable."""


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    """Directory of gym-aloha's MJCF files and STL meshes."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise SimAssetsError(
            "the simulated robot needs the MuJoCo assets of gym-aloha: pip install --no-deps gym-aloha==0.1.5"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not (path / "bimanual_viperx_transfer_cube.xml").is_file():
        raise SimAssetsError(f"gym-aloha is installed but its assets are missing under {path}")
    return path


_STL_TRIANGLE = np.dtype([("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])


def read_binary_stl(path: str | Path) -> np.ndarray:
    """Triangles of a binary STL file as an (n, 3, 3) float64 array (file units)."""
    data = Path(path).read_bytes()
    if len(data) < 84:
        raise SimAssetsError(f"{path} is too short to be a binary STL file")
    n = int(np.frombuffer(data, np.uint32, 1, 80)[0])
    if len(data) < 84 + n * _STL_TRIANGLE.itemsize:
        raise SimAssetsError(f"{path}: header announces {n} triangles but the file is truncated (ASCII STL is not supported)")
    return np.frombuffer(data, _STL_TRIANGLE, n, 84)["vertices"].astype(np.float64)


def cluster_decimate(triangles: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify a triangle soup by vertex clustering on a grid of ``cell`` (same unit as the vertices).

    Vertices falling into one grid cell are merged into their mean; triangles that collapse or
    duplicate are dropped. Crude but fast and dependency-free. It is used only for the *rendered*
    copies of the densest arm meshes: their triangle count, not the pixel count, dominates the cost
    of software (llvmpipe) rendering. Returns (vertices (v, 3), faces (f, 3) int).
    """
    if cell <= 0:
        raise ValueError("cell must be > 0")
    v = triangles.reshape(-1, 3)
    keys = np.floor(v / cell).astype(np.int64)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inverse, v)
    verts = sums / np.bincount(inverse, minlength=len(uniq))[:, None]
    faces = inverse.reshape(-1, 3)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]
