"""Pure geometry for cache preprocessing (no file I/O, no global RNG).

Modules:

- :mod:`.normalize` -- unit-sphere normalisation (bbox centre for meshes, centroid for scans).
- :mod:`.pools`     -- area-weighted surface sampling, face normals, the point-query pool.
- :mod:`.distance`  -- nearest-neighbour distance, exact point-to-triangle distance, sanitising.
- :mod:`.udf`       -- occupancy grids, EDT unsigned distance field, trilinear sampling.
- :mod:`.rays`      -- spiral pinhole cameras, embree mesh casting, occupancy DDA.

Conventions: points are ``(K, 3)`` float arrays in the normalised frame; every grid covers the
cube ``[-1, 1]^3`` with side ``G`` voxels of size ``2 / G`` indexed ``[ix, iy, iz]`` and
voxel centre ``-1 + (i + 0.5) * 2 / G``. Random draws take an explicit generator (a
``np.random.Generator`` or a legacy ``np.random.RandomState``; both expose ``uniform``,
``normal`` and ``choice``).
"""
