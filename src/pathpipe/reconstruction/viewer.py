"""A self-contained interactive 3D viewer of a block: one HTML page, no network needed.

plotly draws the registered points (coloured as in ``points.ply``) and the
surface mesh in one rotatable, zoomable scene; the page embeds plotly.js
(``include_plotlyjs=True``, about 4.6 MB) and the data, so it opens from a
file, from the Snakemake report or on a machine without internet. The callers
decimate the points and the mesh first (:func:`pathpipe.reconstruction.figures.sample_points`,
:func:`~pathpipe.reconstruction.figures.decimate_mesh`) so the page stays a few MB.
plotly is imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["viewer_figure", "viewer_html", "write_viewer"]


def viewer_figure(
    xyz: np.ndarray,
    rgb: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    block: str,
    z_factor: int = 1,
) -> Any:
    """The plotly figure: a ``Scatter3d`` of the points and a ``Mesh3d`` of the surface.

    Parameters
    ----------
    xyz : (N, 3) float ndarray
        Registered points, µm ``(x, y, z)``.
    rgb : (N, 3) uint8 ndarray
        Their colours.
    vertices : (V, 3) float ndarray
        Mesh vertices, µm.
    faces : (F, 3) int ndarray
        Mesh triangles (vertex indices).
    block : str
        Named in the title.
    z_factor : int
        Display stretch of z (the axes keep µm; the title states the factor).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    traces = []
    if len(vertices) and len(faces):
        traces.append(
            go.Mesh3d(
                x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2],
                i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
                color="#d62728", opacity=0.35, name="surface (mesh.ply)", showlegend=True,
                flatshading=False, hoverinfo="skip",
            )
        )  # fmt: skip
    if len(xyz):
        colours = [f"rgb({r},{g},{b})" for r, g, b in np.asarray(rgb, dtype=int)]
        traces.append(
            go.Scatter3d(
                x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers",
                marker={"size": 1.6, "color": colours}, name="registered points (points.ply)",
                hovertemplate="x %{x:.0f} µm<br>y %{y:.0f} µm<br>z %{z:.0f} µm<extra></extra>",
            )
        )  # fmt: skip
    fig = go.Figure(traces)
    both = np.concatenate(
        [a for a in (np.asarray(vertices), np.asarray(xyz)) if len(a)] or [np.zeros((1, 3))]
    )
    span = np.maximum(both.max(axis=0) - both.min(axis=0), 1e-6)
    ratio = span * np.array([1.0, 1.0, float(z_factor)]) / span[:2].max()
    stretch = "" if z_factor == 1 else f" (z stretched ×{z_factor} for display)"
    fig.update_layout(
        title=f"block {block}: registered sections in 3D{stretch}",
        scene={
            "xaxis_title": "x (µm)",
            "yaxis": {"title": "y (µm)", "autorange": "reversed"},
            "zaxis_title": "z (µm)",
            "aspectmode": "manual",
            "aspectratio": dict(zip("xyz", map(float, ratio), strict=True)),
        },
        legend={"itemsizing": "constant"},
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return fig


def viewer_html(
    xyz: np.ndarray,
    rgb: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    block: str,
    z_factor: int = 1,
) -> str:
    """The viewer page as one HTML string, plotly.js embedded (no ``<script src>``)."""
    fig = viewer_figure(xyz, rgb, vertices, faces, block=block, z_factor=z_factor)
    return fig.to_html(
        include_plotlyjs=True,
        full_html=True,
        config={"displaylogo": False, "responsive": True},
        default_height="90vh",
    )


def write_viewer(
    path: str | os.PathLike,
    xyz: np.ndarray,
    rgb: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    block: str,
    z_factor: int = 1,
) -> None:
    """Write :func:`viewer_html` to ``path`` atomically."""
    from pathpipe.io.storage import atomic_file

    html = viewer_html(xyz, rgb, vertices, faces, block=block, z_factor=z_factor)
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(html)
