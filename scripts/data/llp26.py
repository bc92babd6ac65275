"""The LLP26 shape model (PyPI ``musculoskeletal-models`` 0.2.4, MPL-2.0): safe reading, its 26 subjects, surfaces.

LLP26 (Zhang, Fernandez, Hislop-Jambrich, Besier, J Biomech 2016; Auckland Bioengineering
Institute) is a PCA model of the left lower limb and pelvis of 26 adults, built from CT
segmentations. ``shape_models/LLP26_rigid.pc`` is a pickled dict of numpy arrays: ``mean`` (3N,),
``modes`` (3N, 26), ``weights`` (26 eigenvalues) and ``projectedWeights`` (26, 26); a node vector
is all x, then all y, then all z over N = 3225 nodes, and ``mean + modes @ projectedWeights[:, j]``
is training subject ``j``. Node ranges: pelvis 0-1945 (right and left hemipelvis and sacrum, three
closed surfaces), left femur 1946-2579, patella, tibia/fibula. Units mm, frame of the original CT
("LLP26 frame"): +x patient left, +y posterior, +z superior. :func:`llp26_to_ras` turns it into the
bundle's RAS+ world (+x patient right, +y anterior): a half turn about z, so handedness and face
winding are kept.

Surfaces: ``atlas_meshes/*.mesh`` (topology: elements and which element nodes coincide), ``*.ens``
(basis per element type, ensemble node order) are JSON descriptions of 2D Lagrange elements on
those nodes (bicubic ``quad44``, quartic-by-cubic ``quad54``, biquartic ``quad55``, cubic ``tri10``
and quartic ``tri15`` simplices with equispaced nodes). Evaluating them at a fixed parametric grid
is a fixed linear map from nodes to surface vertices: :func:`surface_map` builds it once per process
(about a second) and :meth:`SurfaceMap.vertices` applies it (a sparse product). The original
evaluator (gias3) is not used.

The pickle is read with :class:`ArrayUnpickler`, which admits numpy arrays and dtypes (and
builtin containers, which need no import) and refuses every other global: unpickling cannot run
code from the file.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import trimesh
from scripts.geometry import LPS_TO_RAS
from scripts.io.files import InputFileError, PathLike

PACKAGE = "musculoskeletal.models"
MODEL_FILE = "shape_models/LLP26_rigid.pc"
N_SUBJECTS = 26
NOTICE = (  # kept with everything derived from LLP26's shapes (phantom cases, shape models): MPL-2.0, section 3.2
    "Derived from the LLP26 shape model (PyPI package musculoskeletal-models 0.2.4, Auckland Bioengineering "
    "Institute; Zhang, Fernandez, Hislop-Jambrich, Besier, J Biomech 2016), Mozilla Public License 2.0 "
    "(https://mozilla.org/MPL/2.0/). Source form: that package, unmodified."
)
PELVIS_NODES = slice(0, 1946)
FEMUR_NODES = slice(1946, 2580)
PELVIS_MESH = ("atlas_meshes/pelvis_combined_cubic_flat.mesh", "atlas_meshes/pelvis_combined_cubic_flat.ens")
FEMUR_MESH = ("atlas_meshes/femur_left_quartic_flat.mesh", "atlas_meshes/femur_left_quartic_flat.ens")
LLP26_TO_RAS = LPS_TO_RAS[:3, :3]  # the package's frame is LPS: +x left -> +x right, +y posterior -> +y anterior

# (element type) -> (shape, degrees): quads have (p, q) equispaced nodes per direction, simplices total degree p
ELEMENT_TYPES = {
    "quad44": ("quad", (3, 3)),
    "quad54": ("quad", (4, 3)),
    "quad55": ("quad", (4, 4)),
    "tri10": ("simplex", (3, 3)),
    "tri15": ("simplex", (4, 4)),
}
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


def package_file(name: str) -> Path:
    """Absolute path of a file of the installed ``musculoskeletal-models`` package (``InputFileError`` when absent)."""
    try:
        path = Path(str(resources.files(PACKAGE).joinpath(name)))
    except ModuleNotFoundError:
        raise InputFileError(
            name, "package musculoskeletal-models is not installed (pip install -r requirements.txt)"
        ) from None
    if not path.is_file():
        raise InputFileError(path, "missing from the musculoskeletal-models package")
    return path


# ---------------------------------------------------------------------- safe pickle reading
class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays, dtypes and builtin containers only; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (numpy arrays only)")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor, whatever its module
        return getattr(np, name)


def load_array_pickle(path: PathLike) -> dict[str, np.ndarray]:
    """A pickled dict of numpy arrays, read without running code; object arrays and other values are refused."""
    path = Path(path)
    try:
        data = ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise InputFileError(path, f"not a pickle of numpy arrays ({e})") from None
    if not isinstance(data, dict):
        raise InputFileError(path, f"expected a dict of arrays, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[str(key)] = value
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            raise InputFileError(path, f"entry {key!r} is a {type(value).__name__}, not a numeric array")
    return out


@dataclass(frozen=True)
class LLP26Model:
    """The PCA model in the LLP26 frame: ``mean`` (N, 3) mm, ``modes`` (K, N, 3), ``weights`` (K,) eigenvalues (mm^2),
    ``projected`` (K, S): column ``j`` holds the coefficients of training subject ``j``."""

    mean: np.ndarray
    modes: np.ndarray
    weights: np.ndarray
    projected: np.ndarray

    def shape(self, coeffs: np.ndarray) -> np.ndarray:
        """Nodes (N, 3) mm, LLP26 frame, for coefficients (K,) in the units of ``projected``."""
        return self.mean + np.tensordot(np.asarray(coeffs, dtype=np.float64), self.modes, axes=1)

    def subject(self, j: int) -> np.ndarray:
        """Nodes (N, 3) mm, LLP26 frame, of training subject ``j`` (0 .. 25)."""
        if not 0 <= j < self.projected.shape[1]:
            raise IndexError(f"LLP26 subject {j} out of range 0..{self.projected.shape[1] - 1}")
        return self.shape(self.projected[:, j])


@functools.lru_cache(maxsize=None)
def load_model(path: PathLike | None = None) -> LLP26Model:
    """Read LLP26 (default: the installed package's ``LLP26_rigid.pc``), checked for consistent shapes."""
    path = Path(path) if path is not None else package_file(MODEL_FILE)
    raw = load_array_pickle(path)
    try:
        mean, modes, weights, projected = (
            np.asarray(raw[k], dtype=np.float64) for k in ("mean", "modes", "weights", "projectedWeights")
        )
    except KeyError as e:
        raise InputFileError(path, f"missing array {e}") from None
    n3, k = modes.shape
    if mean.shape != (n3,) or n3 % 3 or weights.shape != (k,) or projected.shape[0] != k:
        raise InputFileError(
            path,
            f"inconsistent shapes: mean {mean.shape}, modes {modes.shape}, weights {weights.shape}, "
            f"projectedWeights {projected.shape}",
        )
    n = n3 // 3
    return LLP26Model(
        mean.reshape(3, n).T.copy(), modes.T.reshape(k, 3, n).transpose(0, 2, 1).copy(), weights, projected
    )


def llp26_to_ras(points: np.ndarray) -> np.ndarray:
    """Points (..., 3) from the LLP26 frame (+x left, +y posterior, +z superior) to RAS+ (mm, same origin)."""
    return np.asarray(points, dtype=np.float64) @ LLP26_TO_RAS.T


# ---------------------------------------------------------------------- Lagrange elements
def element_node_positions(kind: str) -> np.ndarray:
    """Parametric (xi1, xi2) positions (M, 2) of an element type's nodes, in its node order.

    Quads: xi1 fastest, ``(i / p, j / q)``; simplices: rows of constant xi2, ``(i / p, j / p)`` with i + j <= p.
    """
    shape, (p, q) = ELEMENT_TYPES[kind]
    if shape == "quad":
        return np.array([(i / p, j / q) for j in range(q + 1) for i in range(p + 1)])
    return np.array([(i / p, j / p) for j in range(p + 1) for i in range(p + 1 - j)])


def _monomials(kind: str, xi: np.ndarray) -> np.ndarray:
    """Monomials xi1^a xi2^b spanning the element's polynomial space, evaluated at (P, 2) points -> (P, M)."""
    shape, (p, q) = ELEMENT_TYPES[kind]
    powers = (
        [(a, b) for b in range(q + 1) for a in range(p + 1)]
        if shape == "quad"
        else [(a, b) for b in range(p + 1) for a in range(p + 1 - b)]
    )
    return np.stack([xi[:, 0] ** a * xi[:, 1] ** b for a, b in powers], 1)


@functools.lru_cache(maxsize=None)
def _basis_coefficients(kind: str) -> np.ndarray:
    return np.linalg.inv(_monomials(kind, element_node_positions(kind)))


def lagrange_basis(kind: str, xi: np.ndarray) -> np.ndarray:
    """Lagrange basis (P, M) of element type ``kind`` at parametric points ``xi`` (P, 2): row p weighs the M nodes."""
    return _monomials(kind, np.atleast_2d(np.asarray(xi, dtype=np.float64))) @ _basis_coefficients(kind)


def sample_grid(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Parametric sample points (P, 2) of an element, ``n`` intervals per edge, and their triangles (T, 3).

    Triangles are counter-clockwise in (xi1, xi2), so their normals follow the element's d/dxi1 x d/dxi2.
    """
    shape, _ = ELEMENT_TYPES[kind]
    if shape == "quad":
        pts = np.array([(i / n, j / n) for j in range(n + 1) for i in range(n + 1)])
        idx = lambda i, j: j * (n + 1) + i  # noqa: E731
        tris = [
            t
            for j in range(n)
            for i in range(n)
            for t in ((idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)))
        ]
    else:
        rows = [0]
        for j in range(n + 1):
            rows.append(rows[-1] + n + 1 - j)
        pts = np.array([(i / n, j / n) for j in range(n + 1) for i in range(n + 1 - j)])
        idx = lambda i, j: rows[j] + i  # noqa: E731
        tris = []
        for j in range(n):
            for i in range(n - j):
                tris.append((idx(i, j), idx(i + 1, j), idx(i, j + 1)))
                if i < n - j - 1:
                    tris.append((idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)))
    return pts, np.array(tris, dtype=np.int64)


@dataclass(frozen=True)
class ElementMesh:
    """Elements of one atlas mesh: per element its type and the model node index of each element node."""

    types: list[str]
    nodes: list[np.ndarray]
    n_nodes: int


def read_element_mesh(mesh_file: PathLike, ens_file: PathLike) -> ElementMesh:
    """Elements of a ``.mesh``/``.ens`` pair; element nodes numbered as the ensemble (geof / model) nodes.

    Element points that the ``connectivity`` joins form one ensemble point; ensemble points are numbered
    in the order of their smallest (element, point) pair, then renumbered by the ``custom_map`` of the ``.ens``.
    """
    mesh_file, ens_file = Path(mesh_file), Path(ens_file)
    try:
        mesh, ens = json.loads(mesh_file.read_text()), json.loads(ens_file.read_text())
        elements = {int(k): v.split() for k, v in mesh["elements"].items()}
        if any(flag != "0" for flag, _ in elements.values()):
            raise ValueError("nested sub-meshes are not supported")
        types = [elements[e][1] for e in sorted(elements)]
        unknown = sorted(set(types) - set(ELEMENT_TYPES))
        if unknown or sorted(elements) != list(range(len(elements))):
            raise ValueError(f"unsupported element types {unknown} or element numbering")
        sizes = [len(element_node_positions(t)) for t in types]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        parent = np.arange(offsets[-1])

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for key, value in mesh["connectivity"].items():
            e, p = map(int, key.split("_"))
            for other in value.split():
                f, q = map(int, other.split("_"))
                a, b = find(offsets[e] + p), find(offsets[f] + q)
                parent[max(a, b)] = min(a, b)  # the root is the group's smallest (element, point)
        roots = np.array([find(i) for i in range(offsets[-1])])
        _, ensemble = np.unique(roots, return_inverse=True)
        n_points = int(mesh["number_of_points"])
        if ensemble.max() + 1 != n_points:
            raise ValueError(f"connectivity gives {ensemble.max() + 1} points, file says {n_points}")
        custom = ens.get("custom_map")
        if custom:
            lut = np.array([int(custom[str(i)]) for i in range(n_points)])
            ensemble = lut[ensemble]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputFileError(mesh_file, f"not a readable Lagrange element mesh ({type(e).__name__}: {e})") from None
    return ElementMesh(types, [ensemble[offsets[i] : offsets[i + 1]] for i in range(len(types))], n_points)


@dataclass(frozen=True)
class SurfaceMap:
    """Fixed linear map from element nodes (N, 3) to triangle-mesh vertices: ``vertices = weights @ nodes``.

    ``faces`` (F, 3) are oriented so that the surfaces of the model's mean shape have outward normals.
    """

    weights: sp.csr_matrix  # (V, N)
    faces: np.ndarray

    def vertices(self, nodes: np.ndarray) -> np.ndarray:
        """Mesh vertices (V, 3) for element nodes (N, 3) (same frame and units)."""
        return np.asarray(self.weights @ np.asarray(nodes, dtype=np.float64))

    def mesh(self, nodes: np.ndarray) -> trimesh.Trimesh:
        """Triangle mesh of the surface through ``nodes`` (N, 3)."""
        return trimesh.Trimesh(self.vertices(nodes), self.faces, process=False)


def build_surface_map(elements: ElementMesh, reference_nodes: np.ndarray, n: int, tol_mm: float = 1e-4) -> SurfaceMap:
    """Sample every element on an ``n``-interval grid, merge the samples the elements share, orient outward.

    Samples of neighbouring elements coincide on their shared edges (the edge curve depends on the
    edge nodes only); they are merged by position on ``reference_nodes`` (N, 3) mm (within ``tol_mm``)
    and must carry the same weights there. Each closed surface (connected component) is oriented so
    that its enclosed volume is positive on the reference shape.
    """
    rows, tris, start = [], [], 0
    for kind, nodes in zip(elements.types, elements.nodes, strict=True):
        xi, t = sample_grid(kind, n)
        w = lagrange_basis(kind, xi)
        w[np.abs(w) < 1e-12] = 0.0
        rows.append(
            sp.csr_matrix(
                (w.ravel(), (np.repeat(np.arange(len(xi)), w.shape[1]), np.tile(nodes, len(xi)))),
                shape=(len(xi), elements.n_nodes),
            )
        )
        tris.append(t + start)
        start += len(xi)
    weights = sp.vstack(rows).tocsr()
    faces = np.concatenate(tris)
    points = np.asarray(weights @ reference_nodes)
    key = np.round(points / tol_mm).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    merged = weights[first]
    if abs(weights - merged[inverse]).max() > 1e-9:
        raise ValueError("samples merged by position carry different node weights: element numbering is wrong")
    faces = inverse[faces]
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    ]  # collapsed edges
    mesh = trimesh.Trimesh(np.asarray(merged @ reference_nodes), faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    for c in np.unique(labels):
        part = trimesh.Trimesh(mesh.vertices, faces[labels == c], process=False)
        if part.volume < 0:
            faces[labels == c] = faces[labels == c][:, ::-1]
    used = np.unique(faces)
    remap = np.full(merged.shape[0], -1)
    remap[used] = np.arange(len(used))
    return SurfaceMap(merged[used].tocsr(), remap[faces])


@functools.lru_cache(maxsize=None)
def bone_surface_map(bone: str, n: int | None = None) -> SurfaceMap:
    """Surface map of ``"pelvis"`` or ``"femur"`` over ALL model nodes (N, 3): rows only touch that bone's nodes.

    ``n`` intervals per element edge (default: pelvis 6, femur 8, about 4 mm between vertices).
    """
    files, count = {"pelvis": (PELVIS_MESH, 6), "femur": (FEMUR_MESH, 8)}[bone]
    elements = read_element_mesh(package_file(files[0]), package_file(files[1]))
    nodes = {"pelvis": PELVIS_NODES, "femur": FEMUR_NODES}[bone]
    model = load_model()
    reference = model.mean[nodes]
    if len(reference) != elements.n_nodes:
        raise InputFileError(
            package_file(files[0]), f"{elements.n_nodes} nodes, the model's {bone} has {len(reference)}"
        )
    local = build_surface_map(elements, reference, n or count)
    full = sp.csr_matrix(
        (local.weights.data, local.weights.indices + nodes.start, local.weights.indptr),
        shape=(local.weights.shape[0], len(model.mean)),
    )
    return SurfaceMap(full, local.faces)
