"""One painted mask holding several people -> one mask per person: its 8-connected regions, left to right."""

from __future__ import annotations

import numpy as np

SPECK_SHARE = 0.02  # when splitting a mask, regions under this share of the largest one are ignored (stray paint)


def label_regions(mask: np.ndarray) -> list[np.ndarray]:
    """Split a boolean [H, W] mask into its 8-connected regions, ordered left to right by their left edge (ties:
    top first). Union-find over row runs, so large masks stay fast without scipy."""
    mask = np.asarray(mask, dtype=bool)
    height = mask.shape[0]
    padded = np.zeros((height, mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    runs: list[tuple[int, int, int]] = []  # (row, start, end exclusive)
    row_runs: list[list[int]] = []
    for r in range(height):
        starts, ends = np.flatnonzero(edges[r] == 1), np.flatnonzero(edges[r] == -1)
        row_runs.append(list(range(len(runs), len(runs) + len(starts))))
        runs.extend((r, int(s), int(e)) for s, e in zip(starts, ends))
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in range(1, height):
        above, here = row_runs[r - 1], row_runs[r]
        j = 0
        for i in here:
            _, s, e = runs[i]
            while j < len(above) and runs[above[j]][2] < s:  # ends before this run starts (8-connected)
                j += 1
            k = j
            while k < len(above) and runs[above[k]][1] <= e:  # starts at most one past this run's end
                a, b = find(i), find(above[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(find(i), []).append(i)
    regions = []
    for members in groups.values():
        region = np.zeros_like(mask)
        for i in members:
            r, s, e = runs[i]
            region[r, s:e] = True
        regions.append(region)
    return sorted(regions, key=lambda m: (np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0]))


def split_regions(binary: np.ndarray, what: str, warnings: list[str]) -> list[np.ndarray]:
    """A painted mask (boolean [H, W]) -> one mask per person, left to right; stray specks (under ``SPECK_SHARE`` of
    the largest region) are dropped with a warning added to ``warnings`` naming ``what``."""
    regions = label_regions(binary)
    if not regions:
        return []
    largest = max(int(r.sum()) for r in regions)
    kept = [r for r in regions if r.sum() >= SPECK_SHARE * largest]
    if len(kept) < len(regions):
        warnings.append(
            f"{what}: ignored {len(regions) - len(kept)} stray region(s) smaller than "
            f"{SPECK_SHARE:.0%} of the largest one"
        )
    return kept
