"""Per-shape mesh pipeline: mesh file -> ``mesh``-kind cache ``.npz`` (the original's
``preprocess_modelnet40.preprocess_one``, KohsukeIde/3D-NEPA @ 737d98f).

Layers (side effects only at the edges):

- :func:`load_mesh`          file -> raw ``(vertices, faces)`` (trimesh, no processing; PLY
  triangle strips and binary PLY lists of varying length through our own reader,
  :mod:`nepa3d.data.mesh_files`); a file without triangle faces fails with the reason in words
  (:func:`faceless_reason`: empty file, header only, nothing parsable, a point cloud, only
  lines).
- :func:`load_mesh_as_original` file -> ``(vertices, faces)`` the way the original code loaded
  it (``--mesh_cleanup none``, below).
- :func:`clean_mesh`         pure: validate, merge vertices (tolerance relative to the mesh
  size below :data:`MERGE_MIN_EXTENT`), drop degenerate / duplicate faces.
- :func:`compute_mesh_arrays` pure: normalised mesh + config + generator -> every cache array.
- :func:`preprocess_mesh`    the worker entry point: load, clean, normalise, compute, save;
  returns ``(status, reason)`` and never raises for a bad mesh.

Mesh cleanup (``MeshCacheConfig.mesh_cleanup``):

- ``clean`` (default): :func:`load_mesh` + :func:`clean_mesh`.
- ``none``: what the labs' caches were built from. The original calls
  ``trimesh.load(path, force='mesh')`` (trimesh's default processing: per body, drop
  non-finite vertices and merge vertices equal after rounding to 1e-8, position and, where the
  file has them, UV / vertex normal) and then a cleanup whose first call
  (``remove_degenerate_faces``) no longer exists in trimesh, so the exception is swallowed and
  nothing else is cleaned. Duplicate faces (double-sided sheets: twice the sampling weight,
  half the normals flipped), degenerate faces and the absolute merge tolerance stay. Zero-area
  faces are never sampled and get zero normals. Three departures, all for files the original
  turned into garbage or silently changed: non-finite vertex coordinates fail (trimesh would
  drop them and their faces), and so do coordinates beyond ``±MAX_ABS_COORD``; OBJ relative
  (negative) face indices name the vertices above the face, as the OBJ format says (trimesh
  counts them from the end of the whole file, which moves the faces of every body but the
  last), and a face index 0 fails (both cleanups:
  :func:`~nepa3d.data.mesh_files.obj_absolute_indices`). Also in both: OFF comments are cut
  before trimesh reads the text (its comment stripping repeats part of the body), and an OFF or
  ASCII PLY file with fewer rows than its header declares fails instead of loading partially.

Differences from the reference implementation, on purpose:

- Randomness comes from a per-shape ``np.random.Generator`` seeded with ``seed`` (the global
  numpy state is never touched), so results do not depend on the worker or task order.
- Surface sampling is our own area-weighted sampler (same distribution as trimesh's).
- ``pt_dist_mode='mesh'`` uses an exact AABB-tree point-to-triangle distance (no
  approximation); ``trimesh.proximity.closest_point`` stays available as a reference in
  :mod:`nepa3d.geometry.distance`.
- A mesh with non-finite vertex coordinates fails (``('fail', reason)``) instead of being
  silently repaired; so does a mesh whose faces are all degenerate.
- No silent fallbacks: a failure of the kdtree distance, the UDF or the ray casting fails the
  shape instead of writing a different quantity.
- ``pc_xyz``, ``pt_xyz_pool`` and the ray origins / directions are rounded to float32 *before*
  anything is derived from them, so every stored distance and ray answer is exactly
  consistent with the stored inputs.
- ``pt_dist_pc_pool`` (observation-derived distance) is written at preprocessing time.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import trimesh  # module level: pool workers forked from the CLI inherit the import

from nepa3d.data.cache import save_cache
from nepa3d.data.mesh_files import (MeshError, declared_counts, faceless_reason,
                                     obj_absolute_indices, off_without_comments, read_ply,
                                     truncation_reason)
from nepa3d.geometry.distance import TriangleDistanceIndex, nearest_neighbors, sanitize_distances
from nepa3d.geometry.normalize import normalize_bbox_unit_sphere
from nepa3d.geometry.pools import face_normals, point_query_pool, sample_surface, triangle_areas
from nepa3d.geometry.rays import cast_rays_mesh, pinhole_rays, pointcloud_rays, require_embree
from nepa3d.geometry.udf import occupancy_from_points, trilinear_sample, udf_from_occupancy

PT_DIST_MODES = ("kdtree", "mesh")
MESH_CLEANUPS = ("clean", "none")  # ours / as the original code ran with a current trimesh
MERGE_DIGITS = 8  # vertex merge tolerance 1e-8 (trimesh's tol.merge) for meshes of normal size
#: Bounding-box extent below which the merge tolerance shrinks with the mesh: merge keys are
#: rounded after scaling by a power of two that brings the extent to [0.01, 0.02), so the
#: tolerance is 5e-7 to 1e-6 of the extent (about 8-16 float32 steps at the mesh's size), never
#: coarser than the absolute 1e-8, which is the same relative tolerance at extent 0.01. Meshes
#: of extent >= 0.01 (every ShapeNet model_normalized.obj: extent >= 1/sqrt(3)) merge exactly as
#: before; a 1e-7 mesh no longer collapses onto a 1e-8 grid.
MERGE_MIN_EXTENT = 0.01
#: Coordinates beyond +-1e150 (no float32 file holds them) would overflow float64 areas and
#: norms; smaller meshes than 1e-150 have no power-of-two rescale within float64 range.
MAX_ABS_COORD = 1e150
MIN_EXTENT = 1e-150


@dataclass
class MeshCacheConfig:
    """Every knob of the mesh cache profile (defaults = the lab's ShapeNet cache profile)."""

    pc_points: int = 2048          # N surface samples (pc_xyz / pc_n)
    pt_pool: int = 20000           # P query points
    ray_pool: int = 8000           # M rays
    n_views: int = 20              # spiral cameras
    rays_per_view: int = 400       # raised to ceil(M / n_views) when smaller
    pc_grid: int = 64              # point-cloud occupancy grid for the DDA rays
    pc_dilate: int = 1
    pc_max_steps: int = 0          # DDA voxel budget; 0 = 3 * pc_grid
    df_grid: int = 64              # UDF grid side G
    df_dilate: int = 1
    pt_surface_ratio: float = 0.5  # near-surface fraction of the point pool
    pt_surface_sigma: float = 0.02  # near-surface jitter std
    pt_dist_mode: str = "kdtree"   # 'kdtree': NN to surface samples; 'mesh': exact
    dist_ref_points: int = 8192    # kdtree reference size (pc_xyz reused when N >= this)
    compute_udf: bool = True
    compute_pc_rays: bool = True
    pt_query_chunk: int = 2048     # query rows per distance call
    ray_query_chunk: int = 2048    # rays per Embree call
    mesh_cleanup: str = "clean"    # 'clean': ours; 'none': as the original (module docstring)

    def validate(self) -> "MeshCacheConfig":
        """Raise ``ValueError`` on an unusable setting; returns ``self``."""
        for name in ("pc_points", "n_views"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pt_pool", "ray_pool", "rays_per_view", "pc_dilate", "df_dilate",
                     "dist_ref_points", "pt_query_chunk", "ray_query_chunk", "df_grid"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.compute_pc_rays and int(self.pc_grid) < 1:
            raise ValueError(f"pc_grid must be >= 1 when pc rays are on, got {self.pc_grid}")
        if not 0.0 <= float(self.pt_surface_ratio) <= 1.0:
            raise ValueError(f"pt_surface_ratio must be in [0, 1], got {self.pt_surface_ratio}")
        if not (np.isfinite(self.pt_surface_sigma) and float(self.pt_surface_sigma) >= 0.0):
            raise ValueError(f"pt_surface_sigma must be >= 0, got {self.pt_surface_sigma}")
        if self.pt_dist_mode not in PT_DIST_MODES:
            raise ValueError(f"pt_dist_mode must be one of {PT_DIST_MODES}, got {self.pt_dist_mode!r}")
        if self.mesh_cleanup not in MESH_CLEANUPS:
            raise ValueError(f"mesh_cleanup must be one of {MESH_CLEANUPS}, "
                             f"got {self.mesh_cleanup!r}")
        if self.pt_dist_mode == "kdtree" and int(self.dist_ref_points) < 1:
            raise ValueError("dist_ref_points must be >= 1 in kdtree mode")
        return self

    @property
    def udf_enabled(self) -> bool:
        return bool(self.compute_udf) and int(self.df_grid) > 0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------
# loading and cleaning


#: Text formats read through a rewrite where trimesh misreads the file as written: OBJ
#: relative face indices, OFF comments below the second line (``None``: read the file itself).
TEXT_REWRITES = {".obj": obj_absolute_indices, ".off": off_without_comments}


def _rewritten_text(path: str | os.PathLike) -> io.BytesIO | None:
    """The file's text through its :data:`TEXT_REWRITES` entry, or None when there is none or
    it leaves the file as it is."""
    rewrite = TEXT_REWRITES.get(os.path.splitext(str(path))[1].lower())
    if rewrite is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise MeshError(f"cannot read file ({type(e).__name__}: {e})") from e
    fixed = rewrite(data)
    return None if fixed is None else io.BytesIO(fixed)


def _load_scene(path: str | os.PathLike, process: bool, **kwargs) -> trimesh.Scene:
    """``trimesh.load_scene`` (every body of the file; ``trimesh.load(force='mesh')`` is this
    followed by ``to_mesh()``); a loader exception, or an empty file, becomes
    :class:`MeshError`."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise MeshError(faceless_reason(path))
    source = _rewritten_text(path)
    if source is not None:  # the same file, rewritten; materials are looked up beside it
        kwargs = {**kwargs, "file_type": os.path.splitext(str(path))[1].lower()[1:],
                  "resolver": trimesh.resolvers.FilePathResolver(str(path))}
    try:
        scene = trimesh.load_scene(str(path) if source is None else source, process=process,
                                   **kwargs)
    except Exception as e:  # trimesh raises many types for malformed files
        raise MeshError(f"cannot load mesh ({type(e).__name__}: {e})") from e
    why = truncation_reason(path)
    if why:
        raise MeshError(why)
    return scene


def _mesh_arrays(path: str | os.PathLike, mesh) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices (V, 3) float64, faces (F, 3) int64)`` of a loaded mesh; no faces fails."""
    if mesh is None or not hasattr(mesh, "vertices") or not hasattr(mesh, "faces"):
        raise MeshError(f"not a triangle mesh (loaded {type(mesh).__name__})")
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise MeshError(faceless_reason(path, len(v)))
    return v, f


def _scene_arrays(path: str | os.PathLike, scene: trimesh.Scene
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mesh_arrays` of every body of ``scene`` (transforms applied); a scene file
    (glTF and the like: no counts :func:`faceless_reason` could name) whose bodies are all
    point clouds or lines fails naming them, not as an unparsable file."""
    kinds = sorted({type(g).__name__ for g in scene.geometry.values()})
    faceless = not any(isinstance(g, trimesh.Trimesh) and len(g.faces)
                       for g in scene.geometry.values())
    if faceless and set(kinds) - {"Trimesh"} and not declared_counts(path):
        raise MeshError(f"no triangle faces: the file holds only {', '.join(kinds)} geometry")
    return _mesh_arrays(path, scene.to_mesh())


def _load_ply_ourselves(path: str | os.PathLike, trimesh_error: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """A PLY through :func:`~nepa3d.data.mesh_files.read_ply` (strips, varying-length binary
    lists); ``trimesh_error``: why trimesh could not read it, named if ours cannot either."""
    try:
        ply = read_ply(path)
    except MeshError as e:
        if trimesh_error is None:
            raise MeshError(f"cannot load mesh ({e})") from e
        raise MeshError(f"cannot load mesh ({e}; trimesh: {trimesh_error})") from e
    if len(ply.faces) == 0:
        lists = {k: n for k, n in ply.counts.items() if k in ("face", "tristrips") and n}
        if len(ply.vertices) and lists:
            listed = ", ".join(f"{n} '{k}'" for k, n in sorted(lists.items()))
            raise MeshError(f"no triangle faces: {len(ply.vertices)} vertices, and the "
                            f"{listed} give no triangle (fewer than 3 indices each)")
        raise MeshError(faceless_reason(path, len(ply.vertices)))
    return ply.vertices, ply.faces


def load_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file as raw arrays (``mesh_cleanup='clean'``): every body of the file
    concatenated (``trimesh.load(force='mesh', process=False)``; polygons fan-triangulated).

    Materials / textures are not read (geometry only). PLY files with a ``tristrips`` element,
    and PLY files trimesh cannot read (binary lists of varying length), go through our reader.

    Returns:
        ``(vertices (V, 3) float64, faces (F, 3) int64)``, unprocessed.

    Raises:
        MeshError: unreadable file or not a triangle mesh (the reason in words).
    """
    is_ply = str(path).lower().endswith(".ply")
    if is_ply and declared_counts(path).get("tristrips"):
        return _load_ply_ourselves(path)
    kwargs = {"skip_materials": True} if str(path).lower().endswith(".obj") else {}
    try:
        scene = _load_scene(path, process=False, **kwargs)
    except MeshError as e:
        if is_ply and e.__cause__ is not None:  # trimesh failed on a non-empty file
            return _load_ply_ourselves(path, f"{type(e.__cause__).__name__}: {e.__cause__}")
        raise
    return _scene_arrays(path, scene)


def _nonfinite_reason(vertices: np.ndarray) -> str | None:
    bad = ~np.all(np.isfinite(vertices), axis=1)
    return f"{int(bad.sum())} of {len(vertices)} vertices have non-finite coordinates" \
        if bad.any() else None


def load_mesh_as_original(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh the way the original code did (``mesh_cleanup='none'``): exactly
    ``trimesh.load(path, force='mesh')``, i.e. every body processed by trimesh's defaults
    (non-finite vertices dropped, vertices merged at 1e-8, see the module docstring), then
    concatenated; no further cleaning.

    The file is loaded unprocessed first and each body processed afterwards (what the trimesh
    constructor does last), so that a face on a non-finite vertex fails instead of vanishing.

    Returns:
        ``(vertices (V, 3) float64, faces (F, 3) int64)``.

    Raises:
        MeshError: unreadable file, no triangle faces, non-finite coordinates on a face.
    """
    scene = _load_scene(path, process=False)
    for geom in scene.geometry.values():
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            _check_face_indices(len(geom.vertices), geom.faces)  # before -1 wraps around
            used = np.asarray(geom.vertices)[np.unique(geom.faces)]
            why = _nonfinite_reason(used)
            if why:
                raise MeshError(f"{why} (trimesh would drop them and their faces)")
            _check_magnitude(used)  # before trimesh's merge keys overflow
            geom.process()
    return _scene_arrays(path, scene)


def bbox_extent(vertices: np.ndarray) -> float:
    """Largest side of the axis-aligned bounding box of ``(V, 3)`` vertices (0 if empty)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    return float((v.max(axis=0) - v.min(axis=0)).max()) if len(v) else 0.0


def size_factor(extent: float) -> float:
    """The power of two ``2**k >= 1`` that brings a mesh of bounding-box ``extent`` to at
    least :data:`MERGE_MIN_EXTENT` (1 from that size up, or for extent 0). Multiplying by it is
    exact in float64, and the unit-sphere normalisation of a mesh is unchanged bit for bit by
    it (every step commutes with a power-of-two scale)."""
    if not extent > 0.0 or extent >= MERGE_MIN_EXTENT:
        return 1.0
    k = max(int(np.ceil(np.log2(MERGE_MIN_EXTENT / extent))), 0)
    while extent * 2.0 ** k < MERGE_MIN_EXTENT:  # log2 rounding
        k += 1
    return 2.0 ** k


def _check_magnitude(vertices: np.ndarray) -> None:
    big = float(np.abs(vertices).max()) if len(vertices) else 0.0
    if big > MAX_ABS_COORD:
        raise MeshError(f"coordinates too large: max |x| = {big:.3g} > {MAX_ABS_COORD:g} "
                        "(float64 areas and norms would overflow)")


def _check_face_indices(n_vertices: int, faces: np.ndarray) -> None:
    f = np.asarray(faces)
    if len(f) and (f.min() < 0 or f.max() >= n_vertices):
        raise MeshError(f"face indices out of range [0, {n_vertices}): "
                        f"min {int(f.min())}, max {int(f.max())}")


def check_coordinates(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Raise :class:`MeshError` for non-finite or out-of-range coordinates (``|x| >
    MAX_ABS_COORD``, extent below ``MIN_EXTENT``) and face indices outside ``[0, V)``."""
    v, f = np.asarray(vertices), np.asarray(faces)
    why = _nonfinite_reason(v)
    if why:
        raise MeshError(why)
    _check_face_indices(len(v), f)
    _check_magnitude(v)
    extent = bbox_extent(v[f.reshape(-1)])
    if 0.0 < extent < MIN_EXTENT:
        raise MeshError(f"mesh too small: bounding-box extent {extent:.3g} < {MIN_EXTENT:g}")


def clean_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and clean a raw triangle mesh (pure).

    Steps: reject empty / non-finite / out-of-range input (:func:`check_coordinates`); merge
    vertices equal after rounding to 1e-8 (coordinates first scaled by
    :func:`size_factor` of the mesh extent, so the tolerance is relative below extent 0.01);
    drop faces with a repeated vertex or zero area, and duplicate faces (same vertex set); drop
    unreferenced vertices.

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)`` int.

    Returns:
        ``(vertices (V', 3) float64, faces (F', 3) int64)`` with ``F' >= 1``, in the input's
        units (merged vertices keep the coordinates of their first occurrence).

    Raises:
        MeshError: with a human-readable reason.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise MeshError("mesh has no vertices")
    if len(f) == 0:
        raise MeshError("mesh has no faces")
    check_coordinates(v, f)
    scale = size_factor(bbox_extent(v[f.reshape(-1)]))
    vs = v if scale == 1.0 else v * scale  # exact: a power of two
    # merge vertices on rounded coordinates
    _, first, inverse = np.unique(np.round(vs, MERGE_DIGITS), axis=0, return_index=True,
                                  return_inverse=True)
    v, vs = v[first], vs[first]
    f = inverse.reshape(-1)[f]
    # degenerate faces: repeated index or zero area
    distinct = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[distinct]
    if len(f):
        f = f[triangle_areas(vs, f) > 0.0]
    if len(f) == 0:
        raise MeshError("all faces are degenerate (zero area)")
    # duplicate faces (same vertex set, any order / orientation): keep the first
    _, keep = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(keep)]
    # unreferenced vertices
    used = np.unique(f)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def normalize_mesh(vertices: np.ndarray) -> np.ndarray:
    """Bounding-box centre, unit sphere (:func:`normalize_bbox_unit_sphere`) of a cleaned mesh,
    after the exact :func:`size_factor` rescale, so that meshes below the ``1e-9`` scale floor of
    that function are normalised too; returns ``(V, 3)`` float64."""
    v = np.asarray(vertices, dtype=np.float64)
    scale = size_factor(bbox_extent(v))
    return normalize_bbox_unit_sphere(v if scale == 1.0 else v * scale)[0]


def clean_and_normalize(vertices: np.ndarray, faces: np.ndarray, mesh_cleanup: str = "clean"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Clean (per ``mesh_cleanup``) and normalise a loaded mesh (pure).

    ``clean``: :func:`clean_mesh` then :func:`normalize_mesh`. ``none``: only
    :func:`check_coordinates` (what is needed not to write garbage), then the original's
    normalisation (:func:`normalize_bbox_unit_sphere`).

    Returns:
        ``(vertices (V, 3) float64 inside the unit ball, faces (F, 3) int64)``.

    Raises:
        MeshError: with the reason in words (also for a zero total area).
    """
    if mesh_cleanup == "clean":
        v, f = clean_mesh(vertices, faces)
        v = normalize_mesh(v)
    elif mesh_cleanup == "none":
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        check_coordinates(v, f)
        v, _, _ = normalize_bbox_unit_sphere(v)
    else:
        raise ValueError(f"mesh_cleanup must be one of {MESH_CLEANUPS}, got {mesh_cleanup!r}")
    total = float(triangle_areas(v, f).sum())
    if not (np.isfinite(total) and total > 0.0):
        raise MeshError("zero total surface area after normalisation")
    return v, f


#: The loader of each ``mesh_cleanup`` value.
LOADERS = {"clean": load_mesh, "none": load_mesh_as_original}


def prepare_mesh(mesh_path: str | os.PathLike, mesh_cleanup: str = "clean"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Load (:data:`LOADERS`), clean and normalise a mesh file (:func:`clean_and_normalize`)."""
    return clean_and_normalize(*LOADERS[mesh_cleanup](mesh_path), mesh_cleanup)


def make_rng(seed: int | None) -> np.random.Generator:
    """Per-shape generator; ``None`` or a negative seed gives an unseeded generator."""
    if seed is None or int(seed) < 0:
        return np.random.default_rng()
    return np.random.default_rng(int(seed))


# ----------------------------------------------------------------------------------------
# the math (pure)


class _StageClock:
    """Accumulates seconds since the previous call into ``timings[name]`` (no-op if None)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[name] = self.timings.get(name, 0.0) + now - self.t
            self.t = now


def _f32(x: np.ndarray) -> np.ndarray:
    """Round to float32 and back: what is stored is what everything is derived from."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def compute_mesh_arrays(vertices: np.ndarray, faces: np.ndarray, cfg: MeshCacheConfig,
                        rng: np.random.Generator,
                        timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """All ``mesh``-kind cache arrays for a cleaned, normalised mesh (pure).

    Random draws, in order: pc samples; pool (uniform, base indices, jitter); kdtree
    reference samples (kdtree mode with ``pc_points < dist_ref_points``); ray ``(u, v)`` per
    view.

    Args:
        vertices: ``(V, 3)`` inside the unit ball; faces: ``(F, 3)``; cfg: profile;
        rng: generator; timings: optional dict that receives seconds per stage (benchmarks).

    Returns:
        dict of arrays keyed as in :mod:`nepa3d.data.cache` (N = pc_points, P = pt_pool,
        M = ray_pool, G = df_grid).
    """
    clock = _StageClock(timings)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    areas = triangle_areas(v, f)
    fn = face_normals(v, f)

    # 3. surface samples and their face normals
    pc, fidx = sample_surface(v, f, int(cfg.pc_points), rng, areas)
    pc = _f32(pc)
    pc_n = fn[fidx]
    clock("surface_samples")

    # 4. point-query pool
    pool = _f32(point_query_pool(pc, int(cfg.pt_pool), cfg.pt_surface_ratio,
                                 cfg.pt_surface_sigma, rng))
    clock("point_pool")

    # 5. mesh-derived distance
    if cfg.pt_dist_mode == "kdtree":
        if len(pc) >= int(cfg.dist_ref_points):
            ref = pc
        else:
            ref, _ = sample_surface(v, f, int(cfg.dist_ref_points), rng, areas)
        pt_dist = nearest_neighbors(pool, ref, chunk=cfg.pt_query_chunk)[0]
    else:
        pt_dist = TriangleDistanceIndex(v, f).query(pool)[0]
    pt_dist = sanitize_distances(pt_dist)
    clock(f"pt_dist_{cfg.pt_dist_mode}")

    # 6. observation-derived distance
    pt_dist_pc = sanitize_distances(nearest_neighbors(pool, pc, chunk=cfg.pt_query_chunk)[0])
    clock("pt_dist_pc")

    # 7. UDF grid
    occ = None
    if cfg.udf_enabled:
        occ = occupancy_from_points(pc, int(cfg.df_grid), int(cfg.df_dilate))
        udf = udf_from_occupancy(occ)
        pt_dist_udf = sanitize_distances(trilinear_sample(udf, pool))
        udf_grid = udf.astype(np.float16)
        occ_grid = occ.astype(np.uint8)
    else:
        pt_dist_udf = pt_dist.copy()
        udf_grid = np.zeros((1, 1, 1), dtype=np.float16)
        occ_grid = np.zeros((1, 1, 1), dtype=np.uint8)
    clock("udf")

    # 8. rays against the mesh
    o, d = pinhole_rays(int(cfg.n_views), int(cfg.rays_per_view), int(cfg.ray_pool), rng)
    o, d = _f32(o), _f32(d)
    hit, t, n = cast_rays_mesh(v, f, o, d, chunk=int(cfg.ray_query_chunk))
    clock("mesh_rays")

    # 9. rays against the point-cloud occupancy
    m = len(o)
    if cfg.compute_pc_rays:
        same = (occ is not None and int(cfg.pc_grid) == int(cfg.df_grid)
                and int(cfg.pc_dilate) == int(cfg.df_dilate))
        occ_pc = occ if same else occupancy_from_points(pc, int(cfg.pc_grid), int(cfg.pc_dilate))
        hit_pc, t_pc, n_pc = pointcloud_rays(occ_pc, pc, pc_n, o, d, int(cfg.pc_max_steps))
    else:
        hit_pc, t_pc, n_pc = (np.zeros(m, np.float32), np.zeros(m, np.float32),
                              np.zeros((m, 3), np.float32))
    clock("pc_rays")

    return {
        "pc_xyz": pc.astype(np.float32),
        "pc_n": pc_n.astype(np.float32),
        "pt_xyz_pool": pool.astype(np.float32),
        "pt_dist_pool": pt_dist,
        "pt_dist_pc_pool": pt_dist_pc,
        "pt_dist_udf_pool": pt_dist_udf,
        "udf_grid": udf_grid,
        "occ_grid": occ_grid,
        "df_grid": np.array([int(cfg.df_grid)], dtype=np.int32),
        "df_dilate": np.array([int(cfg.df_dilate)], dtype=np.int32),
        "ray_o_pool": o.astype(np.float32),
        "ray_d_pool": d.astype(np.float32),
        "ray_hit_pool": hit,
        "ray_t_pool": t,
        "ray_n_pool": n,
        "ray_hit_pc_pool": hit_pc,
        "ray_t_pc_pool": t_pc,
        "ray_n_pc_pool": n_pc,
    }


# ----------------------------------------------------------------------------------------
# worker entry point (side effects)


def build_mesh_cache(mesh_path: str | os.PathLike, cfg: MeshCacheConfig, seed: int | None,
                     timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Load, clean (``cfg.mesh_cleanup``), normalise (bbox centre, unit sphere) and compute;
    raises on failure.

    ``timings`` (optional) receives seconds per stage, as in :func:`compute_mesh_arrays`.
    """
    clock = _StageClock(timings)
    raw = LOADERS[cfg.mesh_cleanup](mesh_path)
    clock("load")
    v, f = clean_and_normalize(*raw, cfg.mesh_cleanup)
    clock("clean_normalize")
    return compute_mesh_arrays(v, f, cfg, make_rng(seed), timings)


def preprocess_mesh(mesh_path: str | os.PathLike, out_path: str | os.PathLike,
                    cfg: MeshCacheConfig, seed: int | None) -> tuple[str, str]:
    """Preprocess one mesh into ``out_path`` (atomic write through ``save_cache``).

    Args:
        mesh_path: input mesh file; out_path: output ``.npz``; cfg: profile;
        seed: per-shape seed (``None`` / negative: unseeded).

    Returns:
        ``('ok', '')`` or ``('fail', reason)``; never raises for a bad mesh or a failed step
        (only ``KeyboardInterrupt`` / ``SystemExit`` propagate).
    """
    try:
        cfg.validate()
        arrays = build_mesh_cache(mesh_path, cfg, seed)
        save_cache(out_path, arrays, kind="mesh")
    except Exception as e:
        return "fail", f"{type(e).__name__}: {e}"
    return "ok", ""


__all__ = [
    "LOADERS", "MESH_CLEANUPS", "MeshCacheConfig", "MeshError", "PT_DIST_MODES", "bbox_extent",
    "build_mesh_cache", "check_coordinates", "clean_and_normalize", "clean_mesh",
    "compute_mesh_arrays", "faceless_reason", "load_mesh", "load_mesh_as_original", "make_rng",
    "normalize_mesh", "prepare_mesh", "preprocess_mesh", "require_embree", "size_factor",
]
