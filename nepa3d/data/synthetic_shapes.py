"""Procedural part-based meshes for the synthetic ShapeNet-like corpus.

Each class builder takes a seeded ``numpy.random.Generator`` and returns a list of
``trimesh.Trimesh`` parts (boxes, cylinders, cones, tori, spheres...) in a y-up frame
(ShapeNet convention: +y up, the floor is y = min). :func:`build_mesh` concatenates the
parts, applies a small random rotation about y and normalises the result like
``model_normalized.obj`` (bounding-box centre at the origin, bounding-box diagonal 1).

Every random draw comes from the generator passed in; nothing touches global RNG state,
so the same generator state always yields the same mesh.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import trimesh
from trimesh import creation
from trimesh.transformations import rotation_matrix

Parts = list[trimesh.Trimesh]

# Rotation taking trimesh's +z primitive axis onto +y (the up axis).
_Z_TO_Y = rotation_matrix(-np.pi / 2.0, [1.0, 0.0, 0.0])

MIN_FACES = 1000  # meshes are subdivided until they have at least this many faces


# --------------------------------------------------------------------------- primitives


def box(extents: Sequence[float], center: Sequence[float]) -> trimesh.Trimesh:
    """Axis-aligned box with ``extents`` (3,) (x, y, z sizes) centred at ``center`` (3,)."""
    mesh = creation.box(extents=np.asarray(extents, dtype=float))
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def cylinder_y(radius: float, height: float, center: Sequence[float], sections: int = 32) -> trimesh.Trimesh:
    """Closed cylinder with its axis along y, centred at ``center`` (3,)."""
    mesh = creation.cylinder(radius=radius, height=height, sections=sections)
    mesh.apply_transform(_Z_TO_Y)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def frustum_y(
    r_bottom: float, r_top: float, height: float, center: Sequence[float], sections: int = 32
) -> trimesh.Trimesh:
    """Closed truncated cone along y (radius ``r_bottom`` at the low end), centred at ``center``."""
    mesh = creation.cylinder(radius=1.0, height=height, sections=sections)
    verts = mesh.vertices.copy()
    t = verts[:, 2] / height + 0.5  # 0 at the bottom cap, 1 at the top cap
    verts[:, :2] *= (r_bottom + (r_top - r_bottom) * t)[:, None]
    mesh = trimesh.Trimesh(verts, mesh.faces, process=False)
    mesh.apply_transform(_Z_TO_Y)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def shell_y(
    r_inner: float, r_outer: float, height: float, center: Sequence[float], sections: int = 48
) -> trimesh.Trimesh:
    """Open tube (annulus) along y: a hollow cup wall, centred at ``center``."""
    mesh = creation.annulus(r_min=r_inner, r_max=r_outer, height=height, sections=sections)
    mesh.apply_transform(_Z_TO_Y)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def rod(p0: Sequence[float], p1: Sequence[float], radius: float, sections: int = 16) -> trimesh.Trimesh:
    """Cylinder of ``radius`` from point ``p0`` (3,) to point ``p1`` (3,)."""
    segment = np.asarray([p0, p1], dtype=float)
    return creation.cylinder(radius=radius, segment=segment, sections=sections)


def ellipsoid(radii: Sequence[float], center: Sequence[float], subdivisions: int = 2) -> trimesh.Trimesh:
    """Ellipsoid with semi-axes ``radii`` (3,) centred at ``center`` (3,)."""
    mesh = creation.icosphere(subdivisions=subdivisions, radius=1.0)
    mesh.apply_scale(np.asarray(radii, dtype=float))
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def handle_torus(major: float, minor: float, center: Sequence[float]) -> trimesh.Trimesh:
    """Torus whose ring lies in the vertical x-y plane (a mug handle), centred at ``center``."""
    mesh = creation.torus(major_radius=major, minor_radius=minor, major_sections=24, minor_sections=12)
    mesh.apply_translation(np.asarray(center, dtype=float))
    return mesh


def transformed(parts: Parts, matrix: np.ndarray) -> Parts:
    """Apply a (4, 4) homogeneous ``matrix`` to every part (in place) and return them."""
    for part in parts:
        part.apply_transform(matrix)
    return parts


def tilt_x(parts: Parts, angle: float, pivot: Sequence[float]) -> Parts:
    """Rotate ``parts`` by ``angle`` radians about the x axis through ``pivot`` (3,)."""
    return transformed(parts, rotation_matrix(angle, [1.0, 0.0, 0.0], point=np.asarray(pivot, dtype=float)))


def _corners(half_x: float, half_z: float) -> list[tuple[float, float]]:
    """The four (x, z) corners of a centred rectangle."""
    return [(sx * half_x, sz * half_z) for sx in (-1.0, 1.0) for sz in (-1.0, 1.0)]


def _legs(rng: np.random.Generator, half_x: float, half_z: float, height: float, thick: float) -> Parts:
    """Four vertical legs from y=0 to ``height`` at the corners; square or round at random."""
    square = rng.random() < 0.5
    legs = []
    for x, z in _corners(half_x, half_z):
        if square:
            legs.append(box((thick, height, thick), (x, height / 2.0, z)))
        else:
            legs.append(cylinder_y(thick / 2.0, height, (x, height / 2.0, z), sections=16))
    return legs


# --------------------------------------------------------------------------- classes


def build_table(rng: np.random.Generator) -> Parts:
    """Table: a top on four legs (optional apron and lower shelf), or a round top on a pedestal."""
    u = rng.uniform
    height, top_t = u(0.6, 0.85), u(0.03, 0.07)
    top_y = height - top_t / 2.0
    if rng.random() < 0.3:
        radius = u(0.35, 0.7)
        parts = [cylinder_y(radius, top_t, (0, top_y, 0), sections=48)]
        parts.append(cylinder_y(u(0.04, 0.09), height - top_t, (0, (height - top_t) / 2.0, 0)))
        if rng.random() < 0.5:
            parts.append(cylinder_y(radius * u(0.4, 0.7), u(0.02, 0.05), (0, 0.02, 0), sections=48))
        else:
            n_feet, foot = int(rng.integers(3, 5)), radius * u(0.5, 0.8)
            for k in range(n_feet):
                a = 2.0 * np.pi * k / n_feet
                parts.append(rod((0, 0.03, 0), (foot * np.cos(a), 0.02, foot * np.sin(a)), u(0.015, 0.03)))
        return parts
    width = u(0.9, 2.0)
    depth = width * u(0.45, 0.9)
    thick, inset = u(0.03, 0.08), u(0.0, 0.1)
    hx, hz = width / 2.0 - thick / 2.0 - inset * width / 2.0, depth / 2.0 - thick / 2.0 - inset * depth / 2.0
    parts = [box((width, top_t, depth), (0, top_y, 0))]
    parts += _legs(rng, hx, hz, height - top_t, thick)
    if rng.random() < 0.5:  # apron under the top
        apron_h = u(0.05, 0.12)
        y = height - top_t - apron_h / 2.0
        parts += [box((2 * hx, apron_h, 0.02), (0, y, s * hz)) for s in (-1, 1)]
        parts += [box((0.02, apron_h, 2 * hz), (s * hx, y, 0)) for s in (-1, 1)]
    if rng.random() < 0.25:  # lower shelf
        parts.append(box((2 * hx, 0.025, 2 * hz), (0, u(0.1, 0.25), 0)))
    return parts


def build_chair(rng: np.random.Generator) -> Parts:
    """Chair: seat on four legs, a (tilted) solid or slatted back, optional armrests."""
    u = rng.uniform
    width, depth, seat_t, seat_h = u(0.4, 0.6), u(0.4, 0.58), u(0.04, 0.08), u(0.4, 0.5)
    leg = u(0.025, 0.05)
    parts = [box((width, seat_t, depth), (0, seat_h - seat_t / 2.0, 0))]
    parts += _legs(rng, width / 2.0 - leg / 2.0, depth / 2.0 - leg / 2.0, seat_h - seat_t, leg)
    back_h, back_t = u(0.35, 0.65), u(0.025, 0.06)
    back_z = -depth / 2.0 + back_t / 2.0
    if rng.random() < 0.55:
        back = [box((width, back_h, back_t), (0, seat_h + back_h / 2.0, back_z))]
    else:
        n_slats, rail = int(rng.integers(2, 6)), u(0.04, 0.1)
        back = [box((width, rail, back_t), (0, seat_h + back_h - rail / 2.0, back_z))]
        for x in np.linspace(-width / 2.0 + leg / 2.0, width / 2.0 - leg / 2.0, n_slats):
            back.append(box((leg, back_h - rail, back_t), (x, seat_h + (back_h - rail) / 2.0, back_z)))
    parts += tilt_x(back, -u(0.0, 0.25), (0, seat_h, back_z))
    if rng.random() < 0.4:
        arm_h = u(0.17, 0.26)
        for s in (-1, 1):
            x = s * (width / 2.0 - 0.02)
            parts.append(box((0.05, 0.03, depth * 0.9), (x, seat_h + arm_h, 0)))
            parts.append(box((0.03, arm_h, 0.03), (x, seat_h + arm_h / 2.0, depth * 0.35)))
    return parts


def build_bookshelf(rng: np.random.Generator) -> Parts:
    """Bookshelf: two side panels, top, bottom, optional back panel, 2-6 shelves, optional divider."""
    u = rng.uniform
    width, height, depth, t = u(0.6, 1.4), u(1.0, 2.0), u(0.25, 0.4), u(0.02, 0.045)
    parts = [box((t, height, depth), (s * (width - t) / 2.0, height / 2.0, 0)) for s in (-1, 1)]
    kick = u(0.0, 0.08)
    parts.append(box((width, t, depth), (0, height - t / 2.0, 0)))
    parts.append(box((width - 2 * t, t, depth), (0, kick + t / 2.0, 0)))
    if rng.random() < 0.7:
        parts.append(box((width, height, 0.01), (0, height / 2.0, -depth / 2.0 + 0.005)))
    n_shelves = int(rng.integers(2, 7))
    ys = np.linspace(kick + t, height - t, n_shelves + 2)[1:-1]
    ys = ys + rng.uniform(-0.25, 0.25, size=n_shelves) * (ys[1] - ys[0] if n_shelves > 1 else 0.2)
    parts += [box((width - 2 * t, t, depth * u(0.9, 1.0)), (0, y, 0)) for y in ys]
    if rng.random() < 0.3:
        parts.append(box((t, height - kick - 2 * t, depth), (u(-0.2, 0.2) * width, (height + kick) / 2.0, 0)))
    return parts


def build_lamp(rng: np.random.Generator) -> Parts:
    """Lamp: base + pole + shade (straight floor/desk lamp) or base + pole + arm + hanging cone."""
    u = rng.uniform
    base_r, base_t = u(0.1, 0.22), u(0.02, 0.05)
    if rng.random() < 0.7:
        parts = [cylinder_y(base_r, base_t, (0, base_t / 2.0, 0), sections=40)]
    else:
        parts = [box((2 * base_r, base_t, 2 * base_r), (0, base_t / 2.0, 0))]
    pole_h, pole_r = u(0.5, 1.4), u(0.01, 0.025)
    top = base_t + pole_h
    parts.append(cylinder_y(pole_r, pole_h, (0, base_t + pole_h / 2.0, 0), sections=16))
    if rng.random() < 0.6:
        shade_h = u(0.15, 0.35)
        r_bottom = u(0.12, 0.3)
        r_top = r_bottom * u(0.4, 0.85)
        parts.append(frustum_y(r_bottom, r_top, shade_h, (0, top - shade_h * u(0.2, 0.5), 0), sections=40))
    else:
        reach = u(0.2, 0.5)
        tip = (reach, top + u(0.0, 0.15), 0)
        parts.append(rod((0, top, 0), tip, pole_r))
        cone_h, cone_r = u(0.1, 0.2), u(0.07, 0.15)
        cone = creation.cone(radius=cone_r, height=cone_h, sections=40)
        cone.apply_transform(_Z_TO_Y)  # apex up, open-looking base down
        cone.apply_translation((tip[0], tip[1] - cone_h, 0))
        parts.append(cone)
        parts.append(ellipsoid((cone_r * 0.4,) * 3, (tip[0], tip[1] - cone_h, 0), subdivisions=2))
    return parts


def build_bottle(rng: np.random.Generator) -> Parts:
    """Bottle: (slightly tapered) body, shoulder, neck and cap of random radii and heights."""
    u = rng.uniform
    radius, body_h = u(0.08, 0.16), u(0.35, 0.65)
    neck_r = radius * u(0.22, 0.45)
    shoulder_h, neck_h, cap_h = u(0.05, 0.16), u(0.05, 0.15), u(0.02, 0.05)
    parts = [frustum_y(radius * u(0.85, 1.1), radius, body_h, (0, body_h / 2.0, 0), sections=48)]
    y = body_h
    parts.append(frustum_y(radius, neck_r, shoulder_h, (0, y + shoulder_h / 2.0, 0), sections=48))
    y += shoulder_h
    parts.append(cylinder_y(neck_r, neck_h, (0, y + neck_h / 2.0, 0), sections=24))
    y += neck_h
    parts.append(cylinder_y(neck_r * u(1.05, 1.3), cap_h, (0, y + cap_h / 2.0, 0), sections=24))
    return parts


def build_mug(rng: np.random.Generator) -> Parts:
    """Mug: hollow cylindrical body with a bottom and a torus handle on the +x side."""
    u = rng.uniform
    radius, height = u(0.3, 0.45), u(0.6, 1.0)
    wall = radius * u(0.05, 0.12)
    parts = [shell_y(radius - wall, radius, height, (0, height / 2.0, 0))]
    parts.append(cylinder_y(radius - wall, wall, (0, wall / 2.0, 0), sections=48))
    major, minor = height * u(0.18, 0.3), height * u(0.03, 0.055)
    parts.append(handle_torus(major, minor, (radius + major * u(0.3, 0.6), height * u(0.45, 0.58), 0)))
    return parts


def build_sofa(rng: np.random.Generator) -> Parts:
    """Sofa: base, back, two arms, 1-3 seat cushions, short legs, optional chaise."""
    u = rng.uniform
    width, depth, seat_h, leg_h = u(1.5, 2.4), u(0.75, 1.0), u(0.35, 0.45), u(0.03, 0.12)
    back_h, back_t, arm_w = u(0.35, 0.55), u(0.15, 0.25), u(0.1, 0.25)
    base_h = seat_h - leg_h
    parts = [box((width, base_h, depth), (0, leg_h + base_h / 2.0, 0))]
    parts.append(box((width, back_h, back_t), (0, seat_h + back_h / 2.0, -depth / 2.0 + back_t / 2.0)))
    arm_h = u(0.15, 0.3)
    parts += [box((arm_w, arm_h, depth), (s * (width - arm_w) / 2.0, seat_h + arm_h / 2.0, 0)) for s in (-1, 1)]
    n_cush, cush_t = int(rng.integers(1, 4)), u(0.06, 0.14)
    inner = width - 2 * arm_w
    for k in range(n_cush):
        cw = inner / n_cush
        x = -inner / 2.0 + cw * (k + 0.5)
        parts.append(box((cw * 0.96, cush_t, depth - back_t), (x, seat_h + cush_t / 2.0, back_t / 2.0)))
    parts += _legs(rng, width / 2.0 - 0.05, depth / 2.0 - 0.05, leg_h, 0.05)
    if rng.random() < 0.2:
        ext = u(0.4, 0.7)
        side = 1.0 if rng.random() < 0.5 else -1.0
        center = (side * inner / 4.0, leg_h + base_h / 2.0, depth / 2.0 + ext / 2.0)
        parts.append(box((inner / 2.0, base_h, ext), center))
    return parts


def build_bed(rng: np.random.Generator) -> Parts:
    """Bed: frame, mattress, headboard, optional footboard, 1-2 pillows, optional legs."""
    u = rng.uniform
    width, length = u(1.0, 2.0), u(1.9, 2.2)
    leg_h = u(0.05, 0.2) if rng.random() < 0.5 else 0.0
    frame_h, matt_h = u(0.15, 0.3), u(0.15, 0.3)
    parts = [box((width, frame_h, length), (0, leg_h + frame_h / 2.0, 0))]
    top = leg_h + frame_h
    parts.append(box((width * 0.97, matt_h, length * 0.97), (0, top + matt_h / 2.0, 0)))
    head_h, head_t = top + matt_h + u(0.3, 0.8), u(0.04, 0.1)
    parts.append(box((width, head_h, head_t), (0, head_h / 2.0, -length / 2.0 - head_t / 2.0)))
    if rng.random() < 0.5:
        foot_h = top + matt_h * u(0.3, 1.5)
        parts.append(box((width, foot_h, head_t), (0, foot_h / 2.0, length / 2.0 + head_t / 2.0)))
    n_pillows = 1 if width < 1.3 else int(rng.integers(1, 3))
    pw = width * 0.85 / n_pillows
    for k in range(n_pillows):
        x = -width * 0.425 + pw * (k + 0.5)
        radii = (pw * 0.45, u(0.05, 0.09), u(0.15, 0.22))
        parts.append(ellipsoid(radii, (x, top + matt_h + 0.05, -length / 2.0 + 0.3)))
    if leg_h > 0:
        parts += _legs(rng, width / 2.0 - 0.05, length / 2.0 - 0.05, leg_h, 0.07)
    return parts


def build_cabinet(rng: np.random.Generator) -> Parts:
    """Cabinet: box body on a plinth or legs, with door or drawer panels and handles on the front."""
    u = rng.uniform
    width, height, depth = u(0.5, 1.2), u(0.6, 1.6), u(0.35, 0.6)
    lift = u(0.05, 0.15)
    parts = [box((width, height - lift, depth), (0, lift + (height - lift) / 2.0, 0))]
    if rng.random() < 0.5:
        parts.append(box((width * 0.95, lift, depth * 0.9), (0, lift / 2.0, 0)))
    else:
        parts += _legs(rng, width / 2.0 - 0.04, depth / 2.0 - 0.04, lift, 0.04)
    front = depth / 2.0 + 0.01
    gap = 0.015
    if rng.random() < 0.5:  # doors side by side
        n = int(rng.integers(1, 4))
        dw = (width - gap * (n + 1)) / n
        dh = height - lift - 2 * gap
        for k in range(n):
            x = -width / 2.0 + gap + dw * (k + 0.5) + gap * k
            parts.append(box((dw, dh, 0.02), (x, lift + gap + dh / 2.0, front)))
            hx = x + (dw / 2.0 - 0.05) * (1 if k % 2 == 0 else -1)
            z = front + 0.01
            parts.append(rod((hx, lift + dh * 0.45, z), (hx, lift + dh * 0.6, z), 0.008, sections=8))
    else:  # stacked drawers
        n = int(rng.integers(2, 6))
        dh = (height - lift - gap * (n + 1)) / n
        for k in range(n):
            y = lift + gap + dh * (k + 0.5) + gap * k
            parts.append(box((width - 2 * gap, dh, 0.02), (0, y, front)))
            parts.append(rod((-0.08, y, front + 0.02), (0.08, y, front + 0.02), 0.008, sections=8))
    return parts


def build_display(rng: np.random.Generator) -> Parts:
    """Display: thin (tilted) screen, optional back housing, neck and base plate."""
    u = rng.uniform
    sw = u(0.5, 0.9)
    sh, st = sw * u(0.5, 0.75), u(0.015, 0.05)
    neck_h = u(0.08, 0.25)
    base_t = u(0.015, 0.03)
    cy = base_t + neck_h + sh / 2.0
    screen = [box((sw, sh, st), (0, cy, 0))]
    if rng.random() < 0.5:
        screen.append(box((sw * u(0.4, 0.8), sh * u(0.4, 0.8), u(0.03, 0.08)), (0, cy, -st / 2.0 - 0.02)))
    parts = tilt_x(screen, -u(0.0, 0.2), (0, cy, 0))
    parts.append(box((u(0.04, 0.1), neck_h + sh * 0.3, 0.03), (0, base_t + (neck_h + sh * 0.3) / 2.0, -st - 0.03)))
    if rng.random() < 0.5:
        parts.append(box((u(0.2, 0.35), base_t, u(0.15, 0.25)), (0, base_t / 2.0, -st - 0.03)))
    else:
        parts.append(cylinder_y(u(0.1, 0.16), base_t, (0, base_t / 2.0, -st - 0.03), sections=40))
    return parts


def build_bathtub(rng: np.random.Generator) -> Parts:
    """Bathtub: hollow box (bottom + four walls), optional rim, feet and faucet."""
    u = rng.uniform
    length, width, height, t = u(1.4, 1.8), u(0.65, 0.9), u(0.4, 0.6), u(0.04, 0.08)
    lift = u(0.06, 0.12) if rng.random() < 0.4 else 0.0
    parts = [box((length, t, width), (0, lift + t / 2.0, 0))]
    wall_y = lift + height / 2.0
    parts += [box((length, height, t), (0, wall_y, s * (width - t) / 2.0)) for s in (-1, 1)]
    parts += [box((t, height, width - 2 * t), (s * (length - t) / 2.0, wall_y, 0)) for s in (-1, 1)]
    if rng.random() < 0.5:  # rounded rim
        rim = u(0.02, 0.04)
        for s in (-1, 1):
            z = s * (width - t) / 2.0
            parts.append(rod((-length / 2.0, lift + height, z), (length / 2.0, lift + height, z), rim))
    if lift > 0:  # claw feet
        for x, z in _corners(length / 2.0, width / 2.0):
            parts.append(ellipsoid((0.05, lift / 2.0, 0.05), (x * 0.85, lift / 2.0, z * 0.8), subdivisions=1))
    if rng.random() < 0.5:  # faucet
        x = -length / 2.0 + t
        parts.append(rod((x, lift + height, 0), (x, lift + height + 0.15, 0), 0.02))
        parts.append(rod((x, lift + height + 0.15, 0), (x + 0.12, lift + height + 0.15, 0), 0.02))
    return parts


def build_bench(rng: np.random.Generator) -> Parts:
    """Bench: long solid or slatted seat, slab or four legs, optional backrest."""
    u = rng.uniform
    length, depth, seat_h, seat_t = u(1.0, 2.0), u(0.3, 0.5), u(0.4, 0.5), u(0.04, 0.08)
    y = seat_h - seat_t / 2.0
    if rng.random() < 0.5:
        parts = [box((length, seat_t, depth), (0, y, 0))]
    else:
        n = int(rng.integers(3, 6))
        sd = depth / n
        parts = [box((length, seat_t, sd * 0.85), (0, y, -depth / 2.0 + sd * (k + 0.5))) for k in range(n)]
    inset = u(0.05, 0.2) * length
    leg_h = seat_h - seat_t
    if rng.random() < 0.5:
        for s in (-1, 1):
            parts.append(box((u(0.04, 0.08), leg_h, depth * 0.9), (s * (length / 2.0 - inset), leg_h / 2.0, 0)))
    else:
        parts += _legs(rng, length / 2.0 - inset, depth / 2.0 - 0.04, leg_h, u(0.03, 0.06))
    if rng.random() < 0.4:
        back_h = u(0.25, 0.45)
        z = -depth / 2.0 + 0.02
        parts += [box((0.04, back_h, 0.04), (s * (length / 2.0 - inset), seat_h + back_h / 2.0, z)) for s in (-1, 1)]
        parts.append(box((length, back_h * u(0.3, 0.6), 0.03), (0, seat_h + back_h * 0.7, z)))
    return parts


BUILDERS: dict[str, Callable[[np.random.Generator], Parts]] = {
    "bathtub": build_bathtub,
    "bed": build_bed,
    "bench": build_bench,
    "bookshelf": build_bookshelf,
    "bottle": build_bottle,
    "cabinet": build_cabinet,
    "chair": build_chair,
    "display": build_display,
    "lamp": build_lamp,
    "mug": build_mug,
    "sofa": build_sofa,
    "table": build_table,
}


# --------------------------------------------------------------------------- assembly


def normalize_shapenet(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Centre the bounding box at the origin and scale its diagonal to 1 (in place)."""
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2.0)
    mesh.apply_scale(1.0 / float(np.linalg.norm(hi - lo)))
    return mesh


def assemble(parts: Parts, yaw: float = 0.0, min_faces: int = MIN_FACES) -> trimesh.Trimesh:
    """Concatenate ``parts``, rotate by ``yaw`` about y, drop degenerate faces, subdivide to ``min_faces``."""
    mesh = trimesh.util.concatenate(parts)
    mesh.apply_transform(rotation_matrix(yaw, [0.0, 1.0, 0.0]))
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    while len(mesh.faces) < min_faces:
        mesh = mesh.subdivide()
    return mesh


def build_mesh(class_name: str, rng: np.random.Generator, max_yaw: float = np.deg2rad(12.0)) -> trimesh.Trimesh:
    """A new random instance of ``class_name``: y-up, bbox-centred, bbox diagonal 1.

    The instance gets a small random rotation about the up axis (|yaw| <= ``max_yaw``).
    Returns a triangle mesh with V vertices (V, 3) and F >= ``MIN_FACES`` faces (F, 3).
    """
    if class_name not in BUILDERS:
        raise KeyError(f"unknown synthetic class '{class_name}'; known: {sorted(BUILDERS)}")
    parts = BUILDERS[class_name](rng)
    mesh = assemble(parts, yaw=float(rng.uniform(-max_yaw, max_yaw)))
    return normalize_shapenet(mesh)
