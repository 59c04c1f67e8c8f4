"""The per-slide tile checkpoint of whole-slide inference (SQLite, one transaction per batch).

A stopped run keeps whole batches only; a rerun skips the tiles found there and refuses a
file made with another fingerprint (settings, weights, slide identity).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import sqlite3
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

#: Tile outcomes: stopped by the classifier gate, no PEPM point (empty initial mask),
#: decoded by SAM.
TILE_STATES = ('gated', 'empty_prompt', 'segmented')


@dataclass
class TileRecord:
    """One finished tile as checkpointed: its map-grid probability (None: all zero)."""

    index: int
    cls_score: float
    state: str
    probability: Optional[np.ndarray]


class TileStore:
    """Per-slide SQLite checkpoint of finished tiles (one transaction per batch).

    Args:
        path: the ``.sqlite`` file.
        fingerprint: JSON-able settings, weights and slide identity; a file made with
            another fingerprint is refused unless ``overwrite``.
        tile_map_size: side of a stored tile probability (map pixels).
        overwrite: start afresh, discarding earlier tiles.
    """

    def __init__(self, path: str, fingerprint: dict, tile_map_size: int,
                 overwrite: bool = False) -> None:
        self.path = path
        self.side = tile_map_size
        if overwrite and osp.exists(path):
            os.remove(path)
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        self.connection = sqlite3.connect(path)
        text = json.dumps(fingerprint, sort_keys=True, default=str)
        with self.connection:
            self.connection.execute(
                'CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)')
            self.connection.execute(
                'CREATE TABLE IF NOT EXISTS tiles (idx INTEGER PRIMARY KEY, cls_score REAL, '
                'state TEXT, probability BLOB)')
            row = self.connection.execute(
                "SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is None:
                self.connection.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (text,))
        if row is not None and row[0] != text:
            self.close()
            raise RuntimeError(
                f'{path}: these checkpointed tiles were made with other settings, weights or '
                f'another version of the slide ({_differences(json.loads(row[0]), fingerprint)}'
                '); use another --out folder or --overwrite')

    def done(self) -> set[int]:
        """Indices of the checkpointed tiles."""
        return {row[0] for row in self.connection.execute('SELECT idx FROM tiles')}

    def put(self, records: Sequence[TileRecord]) -> None:
        """Store a batch of tiles in one transaction (all or nothing)."""
        rows = [(r.index, float(r.cls_score), r.state,
                 None if r.probability is None else r.probability.astype(np.float16).tobytes())
                for r in records]
        with self.connection:
            self.connection.executemany('INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)', rows)

    def state_counts(self) -> dict[str, int]:
        """Number of stored tiles in each of :data:`TILE_STATES`."""
        counts = {state: 0 for state in TILE_STATES}
        counts.update(self.connection.execute(
            'SELECT state, COUNT(*) FROM tiles GROUP BY state').fetchall())
        return counts

    def records(self) -> Iterator[TileRecord]:
        """Every stored tile in index order (probabilities as float32)."""
        cursor = self.connection.execute(
            'SELECT idx, cls_score, state, probability FROM tiles ORDER BY idx')
        for index, score, state, blob in cursor:
            probability = None if blob is None else np.frombuffer(blob, np.float16).astype(
                np.float32).reshape(self.side, self.side)
            yield TileRecord(index, score, state, probability)

    def close(self) -> None:
        """Close the database."""
        self.connection.close()



def _differences(old: dict, new: dict) -> str:
    """Short text naming the top-level keys whose values differ."""
    new = json.loads(json.dumps(new, sort_keys=True, default=str))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return 'differs in ' + ', '.join(keys) if keys else 'same keys'


